"""Quiet hours: the IST period arithmetic from a table, the hold-and-release cycle in process
with an injected clock (real Redis, real webhook), and the wiring in the notifier process."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime

import pytest
import redis
import redis.asyncio as aredis

from notify.deliver import Deliverer
from notify.digest import DigestFlusher, Policy
from notify.policy import IST_OFFSET_MS, quiet_period, quiet_window
from notify.settings import NotifySettings
from proto import keys, store
from proto.bus import aconnect
from proto.delivery import digest_id
from proto.display import IST
from proto.runtime import Stats
from tests.notify.conftest import (
    NotifierProc,
    Webhook,
    answered,
    make_alert,
    make_user,
    publish,
    settled,
    wait_until,
)


def ist_ms(text: str) -> int:
    """Epoch ms of an IST wall-clock time, e.g. '2026-11-29 23:30'."""
    return int(datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=IST).timestamp() * 1000)


NIGHT = store.parse_quiet("22:00-08:00")
LUNCH = store.parse_quiet("13:00-14:30")


@pytest.mark.parametrize(("at", "quiet", "period"), [
    ("2026-11-29 23:30", NIGHT, ("2026-11-29 22:00", "2026-11-30 08:00")),
    ("2026-11-30 00:00", NIGHT, ("2026-11-29 22:00", "2026-11-30 08:00")),
    ("2026-11-30 07:59", NIGHT, ("2026-11-29 22:00", "2026-11-30 08:00")),
    ("2026-11-30 22:00", NIGHT, ("2026-11-30 22:00", "2026-12-01 08:00")),
    ("2026-11-30 08:00", NIGHT, None),  # the end is not quiet any more
    ("2026-11-30 21:59", NIGHT, None),
    ("2026-11-30 13:00", LUNCH, ("2026-11-30 13:00", "2026-11-30 14:30")),
    ("2026-11-30 14:29", LUNCH, ("2026-11-30 13:00", "2026-11-30 14:30")),
    ("2026-11-30 14:30", LUNCH, None),
    ("2026-11-30 02:00", LUNCH, None),
])
def test_quiet_period_in_ist(at: str, quiet: tuple[int, int],
                             period: tuple[str, str] | None) -> None:
    expected = None if period is None else (ist_ms(period[0]), ist_ms(period[1]))
    assert quiet_period(ist_ms(at), quiet) == expected
    assert IST_OFFSET_MS == 19_800_000


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def at_us(text: str) -> int:
    return ist_ms(text) * 1000


def test_alerts_in_quiet_hours_are_held_until_they_end(r: redis.Redis, redis_url: str,
                                                       webhook: Webhook) -> None:
    make_user(r, "hema", {webhook.url("/hook/a"): "default", webhook.url("/hook/b"): "sms"})
    store.set_prefs(r, "hema", quiet="22:00-08:00")
    night = [make_alert("hema", at=at_us("2026-11-29 23:30")),
             make_alert("hema", at=at_us("2026-11-30 01:00"), channels=["sms"]),
             make_alert("hema", at=at_us("2026-11-30 07:59"), sym="NSE:TCS")]
    before = make_alert("hema", at=at_us("2026-11-29 21:59"))
    after = make_alert("hema", at=at_us("2026-11-30 08:00"))
    late = make_alert("hema", at=at_us("2026-11-30 02:00"))
    window = quiet_window(night[0], NIGHT)
    assert window is not None
    member = digest_id("hema", window.id)
    settings = NotifySettings(redis_url=redis_url, notify_digest_grace_s=0,
                              dashboard_url="http://dash.example")
    clock = Clock(ist_ms("2026-11-29 23:31"))

    async def body(ar: aredis.Redis) -> None:
        stats = Stats("t")
        deliverer = Deliverer(settings, ar, stats)
        policy = Policy(settings, ar, clock)
        flusher = DigestFlusher(settings, ar, stats, deliverer, clock)
        try:
            assert [(await policy.decide(a)).window for a in night] == [window.id] * 3
            assert [(await policy.decide(a)).window for a in (before, after)] == ["", ""]
            clock.ms = ist_ms("2026-11-30 07:59")
            assert await flusher.due() == []  # still quiet: nothing goes out
            clock.ms = ist_ms("2026-11-30 08:00")
            assert await flusher.due() == [member]
            assert await flusher.due() == []  # claimed: a second scan does not take it
            assert await flusher.flush(member)
            # Closed: an alert of the period read only now goes alone; a redelivered one
            # keeps its decision and is not folded twice.
            assert (await policy.decide(late)).window == ""
            assert (await policy.decide(night[0])).window == window.id
            assert await flusher.due() == [member]
            assert await flusher.flush(member)
        finally:
            await deliverer.aclose()
        assert stats.counters["sent"] == 2  # the digest, once on each tag's channel

    asyncio.run(run(redis_url, body))
    assert answered(webhook, "/hook/") == Counter({member: 2})
    [digest] = webhook.at("/hook/a")
    assert digest.body["message"].count("held during your quiet hours") == 1
    assert "3 alerts held during your quiet hours." in digest.body["message"]
    assert r.llen(keys.user_digest_items("hema", window.id)) == 3
    assert r.zcard(keys.DIGESTS_DUE) == 0


async def run(redis_url: str, body: Callable[[aredis.Redis], Awaitable[None]]) -> None:
    ar = aconnect(redis_url)
    try:
        await body(ar)
    finally:
        await ar.aclose()


def test_quiet_hours_in_the_notifier_process(r: redis.Redis, webhook: Webhook,
                                             notifier: Callable[..., NotifierProc]) -> None:
    make_user(r, "ira", {webhook.url("/hook/ira"): "default"})
    now_ms = time.time_ns() // 1_000_000
    of_day_min = (now_ms + IST_OFFSET_MS) // 60_000 % 1440
    start, end = (of_day_min - 30) % 1440, (of_day_min - 10) % 1440
    store.set_prefs(r, "ira", quiet=f"{start // 60:02d}:{start % 60:02d}-"
                                     f"{end // 60:02d}:{end % 60:02d}")
    held = [make_alert("ira", at=(now_ms - 20 * 60_000 + i) * 1000) for i in range(3)]
    now = make_alert("ira")
    for alert in [*held, now]:
        publish(r, alert)
    proc = notifier(STORMALERT_NOTIFY_DIGEST_GRACE_S="0.2", STORMALERT_NOTIFY_DIGEST_SCAN_S="0.1")
    wait_until(lambda: settled(r) and len(webhook.hits) == 2, timeout_s=20,
               what="the alert outside quiet hours and the digest of the ones inside")
    [digest] = [h.alert_id() for h in webhook.hits if h.alert_id() != now.id]
    assert digest.startswith("digest:ira:q")
    assert proc.stop() == 0
    assert proc.final_stats()["folded"] == 3
