"""The runtime skeleton every process shares: logging, signal handling, a heartbeat key with
a TTL carrying the process's figures, and a periodic one-line stats log.

Sync loops (engine) poll ``Runtime.stopping``; asyncio processes use ``run_async`` which
cancels the main coroutine on SIGTERM/SIGINT so it drains inside its TaskGroup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis
import redis.asyncio as aredis

from proto import keys

log = logging.getLogger("stormalert")

BEAT_INTERVAL_S = 2.0


def setup_logging(process: str, level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(), stream=sys.stderr,
        format=f"%(asctime)s {process} %(levelname)s %(name)s: %(message)s",
    )


class Stats:
    """Counters and gauges of one process, published in its heartbeat and logged."""

    def __init__(self, process: str) -> None:
        self.process = process
        self.counters: dict[str, int] = {}
        self.gauges: dict[str, Any] = {}
        self.started = time.time()
        self._last_counts: dict[str, int] = {}
        self._last_at = time.monotonic()

    def inc(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def rates(self) -> dict[str, float]:
        """Per-second rates of every counter since the last call."""
        now = time.monotonic()
        dt = max(now - self._last_at, 1e-6)
        rates = {
            k: round((v - self._last_counts.get(k, 0)) / dt, 1) for k, v in self.counters.items()
        }
        self._last_counts = dict(self.counters)
        self._last_at = now
        return rates

    def snapshot(self, rates: dict[str, float]) -> dict[str, Any]:
        return {
            "process": self.process, "pid": os.getpid(), "host": socket.gethostname(),
            "at": time.time(), "up_s": round(time.time() - self.started, 1),
            "counters": self.counters, "rates": rates, **self.gauges,
        }


class Runtime:
    """Signals, heartbeat and stats for a sync loop; call ``tick()`` every iteration."""

    def __init__(self, process: str, r: redis.Redis, stats_interval_s: float = 10.0) -> None:
        self.process = process
        self.stats = Stats(process)
        self.stopping = False
        self._r = r
        self._stats_interval_s = stats_interval_s
        self._next_beat = 0.0
        self._next_log = time.monotonic() + stats_interval_s
        self._rates: dict[str, float] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        log.info("%s: signal %s, draining", self.process, signal.Signals(signum).name)
        self.stopping = True

    def tick(self) -> None:
        now = time.monotonic()
        if now < self._next_beat:
            return
        self._next_beat = now + BEAT_INTERVAL_S
        self._rates = self.stats.rates()
        try:
            self._r.set(keys.heartbeat(self.process),
                        orjson.dumps(self.stats.snapshot(self._rates)), ex=keys.HEARTBEAT_TTL_S)
        except redis.RedisError as exc:
            log.warning("heartbeat failed: %s", exc)
        if now >= self._next_log:
            self._next_log = now + self._stats_interval_s
            log.info("stats %s", format_stats(self.stats.counters, self._rates))

    def stop_beat(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self._r.delete(keys.heartbeat(self.process))


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Until ``event`` is set (True) or ``timeout_s`` passed (False).

    Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that arrives just as
    what it waits for completes (CPython gh-86296, fixed in 3.12), so a task stopped at that
    moment runs on; ``asyncio.timeout`` keeps the cancellation. Nor redis-py's own socket
    timeouts, which use it (``bus.aconnect`` sets none)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
    return event.is_set()


def format_stats(counters: dict[str, int], rates: dict[str, float]) -> str:
    return " ".join(f"{k}={v}({rates.get(k, 0)}/s)" for k, v in sorted(counters.items()))


async def heartbeat_loop(process: str, r: aredis.Redis, stats: Stats,
                         stats_interval_s: float) -> None:
    """Publish the heartbeat every couple of seconds and log stats; runs until cancelled."""
    next_log = time.monotonic() + stats_interval_s
    try:
        while True:
            rates = stats.rates()
            try:
                await r.set(keys.heartbeat(process), orjson.dumps(stats.snapshot(rates)),
                            ex=keys.HEARTBEAT_TTL_S)
            except redis.RedisError as exc:
                log.warning("heartbeat failed: %s", exc)
            if time.monotonic() >= next_log:
                next_log = time.monotonic() + stats_interval_s
                log.info("stats %s", format_stats(stats.counters, rates))
            await asyncio.sleep(BEAT_INTERVAL_S)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(r.delete(keys.heartbeat(process)))


def run_async(main: Callable[[], Awaitable[None]]) -> int:
    """Run ``main`` until it returns or SIGTERM/SIGINT cancels it; returns an exit code."""

    async def runner() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        await main()

    try:
        asyncio.run(runner())
    except asyncio.CancelledError:
        log.info("stopped by signal")
    return 0
