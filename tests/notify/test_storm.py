"""Storm control end to end: the notifier as a subprocess, a real webhook receiver, the
decisions read back from Redis. Alerts are stamped in past minutes, so their windows are
closed and digests go out after the grace period instead of a minute later."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import redis

from notify.policy import digest_text
from proto import keys, store
from proto.delivery import FOLDED_FIELD, digest_id
from proto.events import Alert
from tests.notify.conftest import (
    NotifierProc,
    Webhook,
    answered,
    kill_at_the_gate,
    make_alert,
    make_user,
    minute_start_us,
    publish,
    settled,
    wait_until,
)

Start = Callable[..., NotifierProc]
GRACE = {"STORMALERT_NOTIFY_DIGEST_GRACE_S": "1", "STORMALERT_NOTIFY_DIGEST_SCAN_S": "0.1"}


def decision(r: redis.Redis, alert: Alert) -> str:
    minute = alert.at // 60_000_000
    return str(r.hget(keys.user_rate(alert.user, minute), f"id:{alert.id}"))


def items(r: redis.Redis, user: str, window: str) -> list[str]:
    import orjson

    raw = r.lrange(keys.user_digest_items(user, window), 0, -1)
    return [orjson.loads(x)["id"] for x in raw]  # type: ignore[union-attr]


def test_alerts_over_the_limit_are_folded_into_one_digest_per_channel(
        r: redis.Redis, webhook: Webhook, notifier: Start) -> None:
    cids = make_user(r, "sita", {webhook.url("/hook/a"): "default",
                                 webhook.url("/hook/b"): "default"})
    store.set_prefs(r, "sita", max_per_minute=3)
    base = minute_start_us(3)
    storm = [make_alert("sita", at=base + i * 1_000_000, sym=("NSE:INFY", "NSE:TCS")[i % 2])
             for i in range(10)]
    later = make_alert("sita", at=minute_start_us(2))  # a new minute counts from zero
    for alert in [*storm, later]:
        publish(r, alert)
    proc = notifier(**GRACE)
    window = f"m{base // 60_000_000}"
    digest = digest_id("sita", window)
    wait_until(lambda: settled(r) and len(webhook.hits) == 10, timeout_s=20,
               what="3 + 1 alerts and one digest on each of two channels")

    folded = items(r, "sita", window)
    sent_alone = [a.id for a in storm if a.id not in folded]
    assert len(folded) == 7 and len(sent_alone) == 3
    assert sorted(folded + sent_alone) == sorted(a.id for a in storm)
    for prefix in ("/hook/a", "/hook/b"):
        assert answered(webhook, prefix) == Counter([*sent_alone, later.id, digest])
    for alert in storm:
        expected = window if alert.id in folded else "send"
        assert decision(r, alert) == expected
        assert r.hget(keys.delivery(alert.id), FOLDED_FIELD) == (
            digest if alert.id in folded else None)
    assert decision(r, later) == "send"
    for cid in cids.values():
        assert r.hget(keys.delivery(digest), cid) is not None

    [body] = {h.body["message"] for h in webhook.at("/hook/a") if h.alert_id() == digest}
    assert body.count("\n") > 9  # the header and one line per folded alert
    assert "7 alerts beyond your limit per minute." in body
    assert "NSE:INFY" in body and "NSE:TCS" in body

    # The same entries once more (an engine redelivery): decided as before, nothing sent.
    for alert in storm:
        publish(r, alert)
    wait_until(lambda: settled(r), what="redelivered entries acked")
    time.sleep(0.5)
    assert len(webhook.hits) == 10
    assert len(items(r, "sita", window)) == 7
    assert proc.stop() == 0
    stats = proc.final_stats()
    assert (stats["folded"], stats["digests"]) == (14, 2)  # the second flush sent nothing
    assert stats["sent"] == 10


def test_storm_control_off_and_default_limit(r: redis.Redis, webhook: Webhook,
                                             notifier: Start) -> None:
    make_user(r, "off", {webhook.url("/hook/off"): "default"})
    make_user(r, "dflt", {webhook.url("/hook/dflt"): "default"})
    store.set_prefs(r, "off", max_per_minute=0)
    at = minute_start_us(2)
    for i in range(6):
        publish(r, make_alert("off", at=at + i))
        publish(r, make_alert("dflt", at=at + i))
    proc = notifier(STORMALERT_NOTIFY_MAX_PER_MINUTE="4", **GRACE)
    wait_until(lambda: settled(r) and len(webhook.hits) == 11, timeout_s=20,
               what="6 alone for 'off'; 4 alone and one digest for 'dflt'")
    assert len(webhook.at("/hook/off")) == 6
    assert sum(h.alert_id().startswith("digest:") for h in webhook.at("/hook/dflt")) == 1
    assert proc.stop() == 0


def test_kill_during_a_storm_loses_nothing_and_sends_nothing_twice(
        r: redis.Redis, webhook: Webhook, notifier: Start) -> None:
    urls = {path: webhook.url(path) for path in ("/gate/a", "/gate/b")}
    made = make_user(r, "gita", {url: "default" for url in urls.values()})
    cids = {path: made[url] for path, url in urls.items()}
    store.set_prefs(r, "gita", max_per_minute=5)
    storm = [make_alert("gita", at=minute_start_us(m) + i * 10_000)
             for m in (5, 4, 3, 2) for i in range(100)]
    for alert in storm:
        publish(r, alert)
    env = {**GRACE, "STORMALERT_NOTIFY_SEND_TIMEOUT_S": "12"}  # see test_burst
    first = notifier(**env)
    kill_at_the_gate(webhook, first, r, cids, after_hits=8)  # alerts sent alone in flight
    second = notifier(**env)
    kill_at_the_gate(webhook, second, r, cids,
                     held=lambda hit: hit.alert_id().startswith("digest:"))
    assert r.zcard(keys.DIGESTS_DUE) > 0
    third = notifier(**env)
    wait_until(lambda: settled(r), timeout_s=60, what="everything delivered after restarts")
    time.sleep(0.5)

    decided = {alert.id: decision(r, alert) for alert in storm}
    alone = [alert_id for alert_id, d in decided.items() if d == "send"]
    windows = sorted({d for d in decided.values() if d != "send"})
    assert len(windows) == 4
    folded = {w: items(r, "gita", w) for w in windows}
    # Every alert is either sent alone or in exactly one digest, as its decision says.
    assert sorted(alone + [i for ids in folded.values() for i in ids]) == sorted(decided)
    for w, ids in folded.items():
        assert all(decided[i] == w for i in ids)
    assert len(alone) >= 20  # at least the limit of each minute (more only if a window
    # closed before a late alert of it was read, which then goes alone)
    expected = Counter([*alone, *(digest_id("gita", w) for w in windows)])
    for prefix in ("/gate/a", "/gate/b"):
        assert answered(webhook, prefix) == expected
    held = [h.alert_id() for h in webhook.hits if h.held]
    assert any(h.startswith("digest:") for h in held)
    assert held and set(held) <= set(expected)  # what the dead sender never heard of
    assert third.stop() == 0
    assert r.xlen(keys.ALERTS_DEAD) == 0


def test_digest_text_fits_and_counts_what_it_cannot_list() -> None:
    from notify.policy import Item

    many = [Item(f"a{i}", f"NSE:SYM{i % 7}", "cross_above", 100.0 + i, 1_764_480_000_000 + i,
                 ("default",)) for i in range(200)]
    text = digest_text(many, "m1", 700)
    assert len(text) <= 700
    assert text.startswith("200 alerts beyond your limit per minute.")
    listed = text.count("cross_above")
    assert 5 < listed < 200
    assert text.endswith(f"… and {200 - listed} more")
    few = digest_text(many[:3], "q1", 700)
    assert few.startswith("3 alerts held during your quiet hours.")
    assert few.count("cross_above") == 3 and "more" not in few


def test_unreadable_stored_prefs_fall_back_to_the_defaults() -> None:
    prefs, problems = store.decode_prefs({"max_per_minute": "lots", "quiet": "7pm-9pm"})
    assert prefs == store.NotifyPrefs()
    assert len(problems) == 2 and "bad max per minute 'lots'" in problems[0]
    prefs, problems = store.decode_prefs({"max_per_minute": "0", "quiet": "23:30-00:15"})
    assert prefs == store.NotifyPrefs(0, (23 * 60 + 30, 15)) and problems == []
    assert prefs.quiet_text() == "23:30-00:15"


def test_two_notifiers_share_a_storm_and_send_its_digest_once(
        r: redis.Redis, webhook: Webhook, notifier: Start) -> None:
    make_user(r, "uma", {webhook.url("/hook/a"): "default", webhook.url("/hook/b"): "default"})
    store.set_prefs(r, "uma", max_per_minute=5)
    at = minute_start_us(2)
    storm = [make_alert("uma", at=at + i) for i in range(60)]
    one, two = notifier("notify-a", **GRACE), notifier("notify-b", **GRACE)
    for alert in storm:
        publish(r, alert)
    wait_until(lambda: settled(r) and len(webhook.hits) == 12, timeout_s=30,
               what="5 alone and one digest on each channel")
    time.sleep(1.5)  # a second scan by either notifier finds nothing more to send
    digest = digest_id("uma", f"m{at // 60_000_000}")
    alone = [a.id for a in storm if decision(r, a) == "send"]
    for prefix in ("/hook/a", "/hook/b"):
        assert answered(webhook, prefix) == Counter([*alone, digest])
    assert one.stop() == 0 and two.stop() == 0
    stats = [one.final_stats(), two.final_stats()]
    assert sum(s["alerts"] for s in stats) == 60
    assert sum(s["folded"] for s in stats) == 55
    assert sum(s["digests"] for s in stats) == 1
