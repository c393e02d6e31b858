"""The delivery core in-process against the real Redis: backoff, secret scrubbing, the
delivery-record lease that keeps two notifiers from sending one alert twice."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import redis

from notify.deliver import Deliverer, KeyedLock, backoff_s
from notify.records import Records
from notify.render import Message
from notify.send import Channel, SendOutcome, scrub
from notify.settings import NotifySettings
from proto import keys
from proto.bus import aconnect
from proto.delivery import Record
from proto.runtime import Stats
from tests.notify.conftest import dead_letters, make_alert, make_user

T = TypeVar("T")


def run(redis_url: str, body: Callable[..., Awaitable[T]]) -> T:
    async def main() -> T:
        r = aconnect(redis_url)
        try:
            return await body(r)
        finally:
            await r.aclose()

    return asyncio.run(main())


@pytest.mark.parametrize(("failures", "low", "high"), [
    (1, 0.5, 1.0), (2, 1.0, 2.0), (3, 2.0, 4.0), (6, 16.0, 32.0), (7, 30.0, 60.0),
    (50, 30.0, 60.0),
])
def test_backoff_doubles_up_to_the_cap_with_jitter(failures: int, low: float,
                                                   high: float) -> None:
    assert backoff_s(failures, 1.0, 60.0, 0.0) == low
    assert backoff_s(failures, 1.0, 60.0, 1.0) == high


@pytest.mark.parametrize("url", [
    "tgram://123456789:AAHabcdefghijklmnopqrstuvwxyz012345/-100200300",
    "json://bob:hunter2hunter@hooks.example.com/v1/K3yInPath9?token=S3cr3tT0ken1",
    "mailto://alerts:Sm7pPassw0rd@smtp.example.com?to=priya@example.com",
    "whatsapp://EAAGtoken987654321@1234567890/+919876543210",
])
def test_scrub_hides_every_secret_part_of_a_url(url: str) -> None:
    rest = url.partition("://")[2]
    leaky = f"error talking to {url} ({rest}) as /bot{rest.split('/')[0]}/sendMessage"
    clean = scrub(leaky, url)
    for secret in ("AAHabcdefghijklmnopqrstuvwxyz012345", "123456789", "hunter2hunter",
                   "K3yInPath9", "S3cr3tT0ken1", "Sm7pPassw0rd", "EAAGtoken987654321",
                   "919876543210", "100200300"):
        assert secret not in clean
    assert clean.startswith("error talking to ***")


def test_scrub_cuts_long_reasons() -> None:
    assert len(scrub("x" * 5000, "json://h/p")) == 300


def test_keyed_lock_serialises_one_key_only() -> None:
    async def main() -> list[str]:
        locks, order = KeyedLock(), []

        async def job(key: str, name: str, hold_s: float) -> None:
            async with locks.hold(key):
                order.append(f"{name}+")
                await asyncio.sleep(hold_s)
                order.append(f"{name}-")

        await asyncio.gather(job("a", "a1", 0.05), job("a", "a2", 0.0), job("b", "b1", 0.01))
        assert locks._locks == {}
        return order

    order = asyncio.run(main())
    assert order.index("a1-") < order.index("a2+")
    assert order.index("b1+") < order.index("a1-")


def test_record_lease_and_sent_is_final(r: redis.Redis, redis_url: str) -> None:
    async def body(ar: object) -> None:
        a, b = Records(ar, "notify-a"), Records(ar, "notify-b")  # type: ignore[arg-type]
        now_ms = time.time_ns() // 1_000_000
        lease = Record("pending", 1, lease_until_ms=now_ms + 60_000)
        assert await a.write("al1", "c1", lease) is None
        refused = await b.write("al1", "c1", lease)
        assert refused is not None and refused.owner == "notify-a"
        # The owner itself may renew; an expired lease may be taken by anyone.
        assert await a.write("al1", "c1", Record("pending", 2, lease_until_ms=now_ms - 1)) is None
        assert await b.write("al1", "c1", Record("sent", 2, latency_ms=1.5)) is None
        final = await a.write("al1", "c1", Record("failed", 3, "late"))
        assert final is not None and final.status == "sent"
        assert (await a.read("al1"))["c1"].status == "sent"

    run(redis_url, body)
    assert 0 < r.ttl(keys.delivery("al1")) <= keys.DELIVERY_TTL_S  # type: ignore[operator]


def settings(redis_url: str, consumer: str, **over: object) -> NotifySettings:
    return NotifySettings(redis_url=redis_url, notify_consumer=consumer,
                          notify_backoff_base_s=0.01, notify_backoff_cap_s=0.02,
                          notify_max_tries=3, notify_send_timeout_s=1.0, **over)  # type: ignore[arg-type]


def test_two_notifiers_with_one_alert_send_it_once(r: redis.Redis, redis_url: str) -> None:
    make_user(r, "asha", {"json://127.0.0.1:9/never-called": "default"})
    calls: list[str] = []
    lock = threading.Lock()

    def slow_send(channel: Channel, _message: Message, _timeout_s: float) -> SendOutcome:
        with lock:
            calls.append(channel.id)
        time.sleep(0.3)
        return SendOutcome(True)

    alert = make_alert("asha")

    async def body(ar: object) -> list[bool]:
        one = Deliverer(settings(redis_url, "notify-a"), ar, Stats("t"), send=slow_send)  # type: ignore[arg-type]
        two = Deliverer(settings(redis_url, "notify-b"), ar, Stats("t"), send=slow_send)  # type: ignore[arg-type]
        try:
            return list(await asyncio.gather(one.deliver(alert), two.deliver(alert)))
        finally:
            one.close()
            two.close()

    assert run(redis_url, body) == [True, True]
    assert len(calls) == 1


def test_a_plugin_that_raises_is_a_failed_try(r: redis.Redis, redis_url: str) -> None:
    make_user(r, "ravi", {"json://127.0.0.1:9/boom": "default"})
    tries: list[float] = []

    def broken(_channel: Channel, _message: Message, _timeout_s: float) -> SendOutcome:
        tries.append(time.monotonic())
        raise RuntimeError("plugin bug near json://127.0.0.1:9/boom")

    alert = make_alert("ravi")
    stats = Stats("t")

    async def body(ar: object) -> bool:
        deliverer = Deliverer(settings(redis_url, "notify-a"), ar, stats, send=broken)  # type: ignore[arg-type]
        try:
            return await deliverer.deliver(alert)
        finally:
            deliverer.close()

    assert run(redis_url, body) is True
    assert len(tries) == 3
    [dead] = dead_letters(r)
    assert dead["reason"].startswith("json channel gave up after 3 tries: RuntimeError: plugin bug")
    assert "/boom" not in dead["reason"]
    assert (stats.counters["retries"], stats.counters["failed"]) == (2, 1)


class FlakyRecords(Records):
    """Real records in the real Redis, except that the first ``sent`` write fails the way a
    dropped Redis connection does."""

    failed = 0

    async def write(self, alert_id: str, cid: str, record: Record) -> Record | None:
        if record.status == "sent" and not FlakyRecords.failed:
            FlakyRecords.failed += 1
            raise redis.ConnectionError("Connection reset by peer")
        return await super().write(alert_id, cid, record)


def test_a_redis_error_after_the_send_does_not_send_again(r: redis.Redis,
                                                          redis_url: str) -> None:
    [cid] = make_user(r, "ravi", {"json://127.0.0.1:9/once": "default"}).values()
    calls: list[str] = []

    def send(channel: Channel, _message: Message, _timeout_s: float) -> SendOutcome:
        calls.append(channel.id)
        return SendOutcome(True)

    alert = make_alert("ravi")
    stats = Stats("t")

    async def body(ar: object) -> bool:
        deliverer = Deliverer(settings(redis_url, "notify-a"), ar, stats, send=send)  # type: ignore[arg-type]
        deliverer.records = FlakyRecords(ar, "notify-a")  # type: ignore[arg-type]
        try:
            return await deliverer.deliver(alert)
        finally:
            deliverer.close()

    assert run(redis_url, body) is True
    assert FlakyRecords.failed == 1
    assert calls == [cid]
    assert '"status":"sent"' in str(r.hget(keys.delivery(alert.id), cid))
    assert stats.counters["sent"] == 1
