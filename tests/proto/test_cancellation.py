"""A stopped task stops: waiting with a timeout must not lose a cancellation.

On Python 3.11 ``asyncio.wait_for`` swallows a cancellation that arrives as what it waits for
completes (CPython gh-86296), and redis-py sends through it when a client has a socket
timeout. A CI run caught it: a feed's tick writer, cancelled just as a write went out, ran on
and its test's feed never stopped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest

from proto import bus
from proto.runtime import wait_event

Wait = Callable[[asyncio.Event, float], Awaitable[bool]]


async def wait_for_event(event: asyncio.Event, timeout_s: float) -> bool:
    """The way this was written before (the trap)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout_s)
    return event.is_set()


async def stops(wait: Wait, yields: int) -> bool:
    """Whether a loop waiting on an event stops when cancelled ``yields`` loop turns after
    the event was set (the cancellation then meets the wait's completion)."""
    event = asyncio.Event()

    async def loop() -> None:
        while True:
            await wait(event, 10.0)
            event.clear()

    task = asyncio.create_task(loop())
    for _ in range(3):
        await asyncio.sleep(0)  # the loop is waiting
    event.set()
    for _ in range(yields):
        await asyncio.sleep(0)
    task.cancel()
    try:
        async with asyncio.timeout(0.2):
            await task
    except asyncio.CancelledError:
        return True
    except TimeoutError:
        task.cancel()  # it ran on: the cancellation was lost
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return False


def test_wait_event_keeps_every_cancellation() -> None:
    async def main() -> list[bool]:
        return [await stops(wait_event, n) for n in range(8)]

    assert asyncio.run(main()) == [True] * 8


def test_the_trap_is_real_here() -> None:
    """The reference: on this Python, ``wait_for`` does lose some (if a newer Python fixed
    it, this test says so and can go)."""
    async def main() -> list[bool]:
        return [await stops(wait_for_event, n) for n in range(8)]

    if not (lost := [n for n, ok in enumerate(asyncio.run(main())) if not ok]):
        pytest.skip("asyncio.wait_for keeps cancellations on this Python")
    assert lost


def test_asyncio_clients_have_no_socket_timeout() -> None:
    """redis-py 8 gives a client a 5 s socket timeout by default, and with one it sends
    through ``asyncio.wait_for``; ``bus.aconnect`` keeps it off (no server needed)."""
    async def main() -> float | None:
        r = bus.aconnect("redis://127.0.0.1:6379/0")
        try:
            return r.connection_pool.make_connection().socket_timeout  # type: ignore[no-any-return]
        finally:
            await r.aclose()

    assert asyncio.run(main()) is None
