"""End to end: alerts XADDed to sa:alerts, the notifier as a real subprocess, a real
webhook receiver on loopback (apprise json:// plugin)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

import orjson
import redis

from notify.render import render
from proto import keys
from tests.notify.conftest import (
    ROOT,
    NotifierProc,
    Webhook,
    dead_letters,
    free_port,
    make_alert,
    make_user,
    pending_count,
    publish,
    wait_until,
)

Start = Callable[..., NotifierProc]


def record(r: redis.Redis, alert_id: str, cid: str) -> dict:
    raw = r.hget(keys.delivery(alert_id), cid)
    return orjson.loads(raw) if raw else {}  # type: ignore[arg-type]


def check(redis_url: str) -> int:
    return subprocess.run([sys.executable, "-m", "notify", "--check"], cwd=ROOT,
                          env={**os.environ, "STORMALERT_REDIS_URL": redis_url},
                          capture_output=True, timeout=20).returncode


def test_delivered_once_with_rendered_content(r: redis.Redis, redis_url: str, webhook: Webhook,
                                              notifier: Start) -> None:
    url = webhook.url("/hook/asha")
    cids = make_user(r, "asha", {url: "default", webhook.url("/hook/other-tag"): "phone"})
    alert = make_alert("asha")
    publish(r, alert)
    proc = notifier()
    wait_until(lambda: webhook.at("/hook/asha"), what="the webhook POST")
    wait_until(lambda: pending_count(r) == 0, what="the ack")

    [hit] = webhook.hits  # the channel tagged "phone" is not among the alert's channels
    expected = render(alert, "http://dash.example")
    assert hit.body["title"] == expected.title
    assert hit.body["message"] == expected.body
    assert f"http://dash.example/alerts/{alert.id}" in hit.body["message"]

    rec = record(r, alert.id, cids[url])
    assert rec["status"] == "sent"
    assert rec["attempts"] == 1
    assert rec["error"] == ""
    assert 0 < rec["latency_ms"] < 10_000
    assert 0 < r.ttl(keys.delivery(alert.id)) <= keys.DELIVERY_TTL_S  # type: ignore[operator]

    beat = orjson.loads(wait_until(lambda: r.get(keys.heartbeat("notify")), what="heartbeat"))
    assert beat["process"] == "notify"
    assert check(redis_url) == 0
    assert proc.stop() == 0
    assert check(redis_url) == 1  # the heartbeat goes with the process
    stats = proc.final_stats()
    assert stats["alerts"] == 1
    assert stats["sent"] == 1
    assert stats["failed"] == stats["dead"] == stats["poison"] == 0
    assert r.xlen(keys.ALERTS_DEAD) == 0


def test_same_alert_id_twice_is_sent_once(r: redis.Redis, webhook: Webhook,
                                          notifier: Start) -> None:
    make_user(r, "ravi", {webhook.url("/hook/ravi"): "default"})
    alert = make_alert("ravi")
    proc = notifier()
    publish(r, alert)
    publish(r, alert)  # back to back: both entries are read in one batch
    wait_until(lambda: r.xlen(keys.ALERTS) == 2 and pending_count(r) == 0, what="both acked")
    publish(r, alert)  # and once more, later
    wait_until(lambda: pending_count(r) == 0 and r.xinfo_groups(keys.ALERTS)[0]["lag"] == 0,
               what="third acked")
    time.sleep(0.3)
    assert len(webhook.hits) == 1
    assert proc.stop() == 0
    stats = proc.final_stats()
    assert stats["alerts"] == 3
    assert stats["sent"] == 1
    assert stats["skipped_duplicate"] == 2


def test_crash_before_ack_does_not_resend_finished_channels(
        r: redis.Redis, webhook: Webhook, notifier: Start) -> None:
    fast, slow = webhook.url("/hook/fast"), webhook.url("/slow/hook")
    cids = make_user(r, "meera", {fast: "default", slow: "default"})
    alert = make_alert("meera")
    publish(r, alert)
    first = notifier()
    # The fast channel is sent and recorded; the slow one is still in flight, so the alert
    # is not acked yet when the notifier dies.
    wait_until(lambda: record(r, alert.id, cids[fast]).get("status") == "sent", what="fast")
    wait_until(lambda: webhook.at("/slow"), what="slow request")
    first.kill()
    assert pending_count(r) == 1

    second = notifier()  # same consumer name: re-reads its own pending entries first
    wait_until(lambda: pending_count(r) == 0, timeout_s=15, what="ack after restart")
    assert len(webhook.at("/hook/fast")) == 1
    assert record(r, alert.id, cids[slow])["status"] == "sent"
    assert second.stop() == 0
    assert second.final_stats()["skipped_duplicate"] == 1


def test_entries_of_a_dead_consumer_are_claimed(r: redis.Redis, webhook: Webhook,
                                                notifier: Start) -> None:
    fast, slow = webhook.url("/hook/fast"), webhook.url("/slow/hook")
    cids = make_user(r, "kiran", {fast: "default", slow: "default"})
    alert = make_alert("kiran")
    publish(r, alert)
    first = notifier("notify-a")
    wait_until(lambda: record(r, alert.id, cids[fast]).get("status") == "sent", what="fast")
    wait_until(lambda: webhook.at("/slow"), what="slow request")
    first.kill()

    other = notifier("notify-b")
    wait_until(lambda: pending_count(r) == 0, timeout_s=20, what="claimed and acked")
    assert len(webhook.at("/hook/fast")) == 1
    assert record(r, alert.id, cids[slow])["status"] == "sent"
    assert other.stop() == 0
    assert other.final_stats()["claimed"] == 1


def test_dead_channels_do_not_block_a_healthy_one(r: redis.Redis, webhook: Webhook,
                                                  notifier: Start) -> None:
    healthy = webhook.url("/hook/ok")
    refused = f"json://127.0.0.1:{free_port()}/hook?token=S3cr3tT0ken1"
    broken = f"json://alice:Pa55w0rdXyz@127.0.0.1:{webhook.port}/fail/K3yInPath9"
    cids = make_user(r, "anil", {healthy: "default", refused: "default", broken: "default"})
    alert = make_alert("anil")
    proc = notifier(STORMALERT_NOTIFY_BACKOFF_BASE_S="0.3", STORMALERT_NOTIFY_BACKOFF_CAP_S="1")
    publish(r, alert)
    wait_until(lambda: pending_count(r) == 0 and r.xlen(keys.ALERTS_DEAD) == 2,
               timeout_s=15, what="both dead channels given up, alert acked")
    [ok] = webhook.at("/hook/ok")
    fails = webhook.at("/fail")
    assert len(fails) == 3  # max_tries
    # The healthy channel was sent alongside the first try of the others, not after them.
    assert abs(ok.at - fails[0].at) < 0.3
    assert fails[-1].at - fails[0].at > 0.45  # two backoffs of at least 0.15 s and 0.3 s

    dead = {f["channel"]: f for f in dead_letters(r)}
    assert set(dead) == {cids[refused], cids[broken]}
    assert "500" in dead[cids[broken]]["reason"]
    assert "connect" in dead[cids[refused]]["reason"].lower()  # refused, cannot connect
    for fields in dead.values():
        assert fields["id"] == alert.id
        assert fields["user"] == "anil"
        assert fields["attempts"] == "3"
        assert "gave up after 3 tries" in fields["reason"]
    for cid in (cids[refused], cids[broken]):
        rec = record(r, alert.id, cid)
        assert (rec["status"], rec["attempts"]) == ("failed", 3)
    assert record(r, alert.id, cids[healthy])["status"] == "sent"

    assert proc.stop() == 0
    stats = proc.final_stats()
    assert (stats["sent"], stats["failed"], stats["dead"], stats["retries"]) == (1, 2, 2, 4)
    dead_text = str(r.xrange(keys.ALERTS_DEAD)) + str(r.hgetall(keys.delivery(alert.id)))
    for secret in ("S3cr3tT0ken1", "Pa55w0rdXyz", "K3yInPath9", "alice"):
        assert secret not in dead_text
        assert secret not in proc.log()


def test_poison_entry_is_dead_lettered_and_acked(r: redis.Redis, webhook: Webhook,
                                                 notifier: Start) -> None:
    make_user(r, "uma", {webhook.url("/hook/uma"): "default"})
    bad_id = r.xadd(keys.ALERTS, {"id": "x1", "user": "uma", "ltp": "not a number"})
    good = make_alert("uma")
    publish(r, good)
    proc = notifier()
    wait_until(lambda: pending_count(r) == 0 and webhook.hits, what="both handled")
    [dead] = dead_letters(r)
    assert dead["entry"] == bad_id
    assert dead["ltp"] == "not a number"
    assert "bad alert entry" in dead["reason"]
    assert proc.stop() == 0
    stats = proc.final_stats()
    assert (stats["poison"], stats["dead"], stats["sent"]) == (1, 1, 1)


def test_user_without_matching_channel_is_acked(r: redis.Redis, webhook: Webhook,
                                                notifier: Start) -> None:
    make_user(r, "neel", {webhook.url("/hook/neel"): "email-only"})
    publish(r, make_alert("neel"))
    publish(r, make_alert("nobody"))
    proc = notifier()
    wait_until(lambda: pending_count(r) == 0 and r.xinfo_groups(keys.ALERTS)[0]["lag"] == 0,
               what="acks")
    assert proc.stop() == 0
    assert proc.final_stats()["no_channel"] == 2
    assert webhook.hits == []


def test_sigterm_lets_in_flight_alerts_finish(r: redis.Redis, webhook: Webhook,
                                             notifier: Start) -> None:
    cids = make_user(r, "devi", {webhook.url("/slow/devi"): "default"})
    alert = make_alert("devi")
    proc = notifier()
    publish(r, alert)
    wait_until(lambda: webhook.hits, what="request in flight")
    assert proc.stop() == 0
    assert record(r, alert.id, next(iter(cids.values())))["status"] == "sent"
    assert pending_count(r) == 0
    assert len(webhook.hits) == 1


def test_drain_timeout_leaves_unfinished_alerts_pending(r: redis.Redis, webhook: Webhook,
                                                        notifier: Start) -> None:
    make_user(r, "jai", {webhook.url("/slow/jai"): "default"})
    proc = notifier(STORMALERT_NOTIFY_DRAIN_TIMEOUT_S="0.2")
    publish(r, make_alert("jai"))
    wait_until(lambda: webhook.hits, what="request in flight")
    assert proc.stop() == 0
    assert pending_count(r) == 1  # never acked unsent
    assert proc.final_stats()["sent"] == 0


def test_redis_down_is_waited_out(notifier: Start) -> None:
    proc = notifier(redis_url_=f"redis://127.0.0.1:{free_port()}/0")
    wait_until(lambda: proc.log().count("redis error") >= 2, what="retries logged")
    assert proc.proc.poll() is None
    assert proc.stop() == 0


def test_config_error_is_one_line_and_exit_2() -> None:
    done = subprocess.run([sys.executable, "-m", "notify"], cwd=ROOT, capture_output=True,
                          text=True, timeout=20,
                          env={**os.environ, "STORMALERT_NOTIFY_MAX_TRIES": "0"})
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "notify_max_tries" in done.stderr


def test_a_deleted_group_is_created_again(r: redis.Redis, webhook: Webhook,
                                          notifier: Start) -> None:
    make_user(r, "lata", {webhook.url("/hook/lata"): "default"})
    proc = notifier()
    publish(r, make_alert("lata"))
    wait_until(lambda: len(webhook.hits) == 1 and pending_count(r) == 0, what="first")
    r.delete(keys.ALERTS)
    publish(r, make_alert("lata"))
    wait_until(lambda: len(webhook.hits) == 2, what="delivery after the group came back")
    assert proc.stop() == 0
