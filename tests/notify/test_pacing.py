"""Pacing: the pure token bucket from a table, then the Pacer on a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from notify.pacing import SWEEP_AT, Bucket, Limit, Pacer, is_full, pause, refill, reserve

CHAT = Limit("chat", 1.0)  # 1/s, one at a time
BOT = Limit("bot", 30.0, 30.0, held_by_429=False)  # 30/s, a second's worth at once


@pytest.mark.parametrize(("bucket", "now_s", "limit", "tokens", "wait_s"), [
    (None, 100.0, CHAT, 0.0, 0.0),  # a new key sends at once
    (Bucket(0.0, 100.0), 100.0, CHAT, -1.0, 1.0),  # the second send waits a second
    (Bucket(-1.0, 100.0), 100.0, CHAT, -2.0, 2.0),  # the third queues behind it
    (Bucket(-1.0, 100.0), 100.5, CHAT, -1.5, 1.5),  # half a second later: refilled half
    (Bucket(0.0, 100.0), 105.0, CHAT, 0.0, 0.0),  # refill stops at the burst size
    (None, 0.0, BOT, 29.0, 0.0),
    (Bucket(0.0, 10.0), 10.0, BOT, -1.0, 1 / 30),
    (Bucket(0.0, 10.0), 9.0, CHAT, -1.0, 1.0),  # a clock going back refills nothing
])
def test_reserve(bucket: Bucket | None, now_s: float, limit: Limit, tokens: float,
                 wait_s: float) -> None:
    booked, wait = reserve(bucket, now_s, limit)
    assert booked == Bucket(pytest.approx(tokens), now_s)  # type: ignore[arg-type]
    assert wait == pytest.approx(wait_s)


@pytest.mark.parametrize(("bucket", "until_s", "limit", "next_wait_s"), [
    (None, 110.0, CHAT, 10.0),  # a 429 with retry_after 10 on a quiet chat
    (Bucket(-20.0, 100.0), 110.0, CHAT, 21.0),  # a longer queue is not shortened
    (None, 101.0, BOT, 1.0),  # a held bot would hold its whole burst
    (None, 100.0, CHAT, 0.0),  # retry_after 0
])
def test_pause_makes_the_next_booking_wait(bucket: Bucket | None, until_s: float,
                                           limit: Limit, next_wait_s: float) -> None:
    paused = pause(bucket, 100.0, until_s, limit)
    _booked, wait = reserve(paused, 100.0, limit)
    assert wait == pytest.approx(next_wait_s)


def test_refill_and_full() -> None:
    assert refill(None, 5.0, BOT) == 30.0
    assert refill(Bucket(-3.0, 0.0), 2.0, CHAT) == pytest.approx(-1.0)
    assert not is_full(Bucket(0.5, 0.0), 0.4, CHAT)
    assert is_full(Bucket(0.5, 0.0), 0.5, CHAT)


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now_s

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def test_a_burst_for_one_chat_spreads_out_and_other_chats_go_at_once() -> None:
    clock = FakeClock()
    pacer = Pacer(clock, clock.sleep)

    async def main() -> list[float]:
        waits = [await pacer.wait([CHAT, BOT]) for _ in range(5)]
        waits.append(await pacer.wait([Limit("other chat", 1.0), BOT]))
        return waits

    assert asyncio.run(main()) == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0, 0.0])


def test_the_bot_limit_holds_across_chats() -> None:
    clock = FakeClock()
    pacer = Pacer(clock, clock.sleep)

    async def main() -> list[float]:
        return [await pacer.wait([Limit(f"chat {i}", 1.0), BOT]) for i in range(32)]

    waits = asyncio.run(main())
    assert waits[:30] == [0.0] * 30
    assert waits[30:] == pytest.approx([1 / 30, 2 / 30])


def test_pause_holds_later_sends_on_the_key() -> None:
    clock = FakeClock()
    pacer = Pacer(clock, clock.sleep)

    async def main() -> list[float]:
        pacer.pause([CHAT, BOT], 7.0)
        return [await pacer.wait([CHAT]), await pacer.wait([Limit("x", 1.0), BOT])]

    assert asyncio.run(main()) == pytest.approx([7.0, 0.0])  # the bot itself is not held


def test_full_buckets_are_forgotten() -> None:
    clock = FakeClock()
    pacer = Pacer(clock, clock.sleep)

    async def main() -> None:
        for i in range(SWEEP_AT - 1):
            await pacer.wait([Limit(f"k{i}", 1.0)])
        clock.now_s += 2.0
        await pacer.wait([Limit("last", 1.0)])

    asyncio.run(main())
    assert len(pacer) == 1
