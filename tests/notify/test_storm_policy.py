"""The per-alert decision in process against the real Redis: counted per user and per minute
of the alert's own time, recorded once, so that a redelivery after a crash, even after the
user changed their limit, decides the same and folds nothing twice."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

import redis
import redis.asyncio as aredis

from notify.digest import Policy
from notify.policy import quiet_window, storm_window
from notify.settings import NotifySettings
from proto import keys, store
from proto.bus import aconnect
from proto.display import IST
from tests.notify.conftest import make_alert, minute_start_us


def run(redis_url: str, body: Callable[[aredis.Redis], Awaitable[None]]) -> None:
    async def main() -> None:
        ar = aconnect(redis_url)
        try:
            await body(ar)
        finally:
            await ar.aclose()

    asyncio.run(main())


def test_decisions_are_counted_per_user_and_minute_and_recorded_once(
        r: redis.Redis, redis_url: str) -> None:
    for name in ("ana", "ben"):
        store.add_user(r, name, "a long password")
    store.set_prefs(r, "ana", max_per_minute=2)
    minute = minute_start_us(3)
    ana = [make_alert("ana", at=minute + i) for i in range(4)]
    ana_next = make_alert("ana", at=minute + 60_000_000)
    ben = [make_alert("ben", at=minute + i) for i in range(4)]
    window = storm_window(ana[0]).id
    settings = NotifySettings(redis_url=redis_url, notify_max_per_minute=3)

    async def body(ar: aredis.Redis) -> None:
        policy = Policy(settings, ar)
        assert [(await policy.decide(a)).window for a in ana] == ["", "", window, window]
        assert (await policy.decide(ana_next)).window == ""  # the next minute starts at 0
        assert [(await policy.decide(a)).window for a in ben] == ["", "", "", window]
        # A redelivery after a restart (a new Policy, no cache) under a raised limit: the
        # recorded decisions stand, nothing is folded twice, nothing counted twice.
        store.set_prefs(r, "ana", max_per_minute=100)
        again = Policy(settings, ar)
        assert [(await again.decide(a)).window for a in reversed(ana)] == [
            window, window, "", ""]
        assert (await again.decide(make_alert("ana", at=minute + 9))).window == ""

    run(redis_url, body)
    assert r.llen(keys.user_digest_items("ana", window)) == 2
    assert r.llen(keys.user_digest_items("ben", window)) == 1
    assert r.hget(keys.user_rate("ana", minute // 60_000_000), "#n") == "5"
    assert 0 < r.ttl(keys.user_rate("ana", minute // 60_000_000)) <= keys.DELIVERY_TTL_S  # type: ignore[operator]
    due = dict(r.zrange(keys.DIGESTS_DUE, 0, -1, withscores=True))  # type: ignore[arg-type]
    assert set(due) == {f"digest:ana:{window}", f"digest:ben:{window}"}


def test_quiet_hours_come_before_the_count(r: redis.Redis, redis_url: str) -> None:
    store.add_user(r, "cat", "a long password")
    store.set_prefs(r, "cat", max_per_minute=1, quiet="22:00-08:00")
    night_us = int(datetime(2026, 11, 29, 23, 30, tzinfo=IST).timestamp() * 1_000_000)
    quiet = [make_alert("cat", at=night_us + i) for i in range(3)]
    morning = [make_alert("cat", at=night_us + 9 * 3_600_000_000 + i) for i in range(2)]
    held = quiet_window(quiet[0], store.get_prefs(r, "cat").quiet)
    assert held is not None
    settings = NotifySettings(redis_url=redis_url)

    async def body(ar: aredis.Redis) -> None:
        policy = Policy(settings, ar)
        assert [(await policy.decide(a)).window for a in quiet] == [held.id] * 3
        assert [(await policy.decide(a)).window for a in morning] == [
            "", storm_window(morning[0]).id]

    run(redis_url, body)
    assert r.hget(keys.user_rate("cat", quiet[0].at // 60_000_000), "#n") is None  # not counted
    assert r.llen(keys.user_digest_items("cat", held.id)) == 3
