"""Between the feed sockets and Redis: a bounded queue that drops and counts under overload,
and a writer that groups ticks by shard and XADDs batched entries through one pipeline."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque

import redis
import redis.asyncio as aredis

from proto import keys
from proto.events import Tick, encode_ticks_json
from proto.runtime import Stats

log = logging.getLogger("stormalert.ingest")


WRITE_RETRY_S = 0.5
# Ticks per pipeline at most: about 0.1 s of a 200k ticks/s feed, ~400 entries of 50.
WRITE_MAX_TICKS = 20_000


class TickWriter:
    """``offer`` never waits: frames queue up to ``queue_max_ticks`` ticks (bounded in ticks,
    not frames, so the bound means the same memory and lag whatever the frame size) and
    beyond that are dropped and counted. The writer takes everything queued, up to
    ``write_max_ticks``, into one pipeline: when Redis answers late or ingest is short of
    CPU, the next write is bigger instead of the queue growing by a frame per round trip."""

    def __init__(self, r: aredis.Redis, stats: Stats, *, shards: int, batch_max: int,
                 flush_ms: float, queue_max_ticks: int,
                 write_max_ticks: int = WRITE_MAX_TICKS) -> None:
        self._r = r
        self._stats = stats
        self._shards = shards
        self._batch_max = batch_max
        self._flush_s = flush_ms / 1000
        self._frames: deque[list[Tick]] = deque()
        self._queued = 0  # ticks in _frames
        self._queue_max = queue_max_ticks
        self._write_max = max(write_max_ticks, batch_max)
        self._arrived = asyncio.Event()
        self._shard_of: dict[str, int] = {}

    @property
    def queued(self) -> int:
        """Ticks waiting for the writer."""
        return self._queued

    def offer(self, ticks: list[Tick]) -> None:
        """Hand over one frame's ticks without ever waiting; drop and count when full."""
        if self._queued + len(ticks) > self._queue_max:
            self._stats.inc("drops", len(ticks))
            return
        self._frames.append(ticks)
        self._queued += len(ticks)
        self._arrived.set()

    async def run(self) -> None:
        """Write until cancelled."""
        while True:
            ticks = await self._collect()
            try:
                await self.write(ticks)
            except redis.RedisError as exc:
                self._stats.inc("write_errors")
                self._stats.inc("drops", len(ticks))
                log.warning("writing %d ticks failed, dropped: %s", len(ticks), exc)
                await asyncio.sleep(WRITE_RETRY_S)

    def _take(self, ticks: list[Tick]) -> None:
        """Move whole frames from the queue into ``ticks`` up to the write budget (at least
        one frame, so a frame bigger than the budget still goes)."""
        frames = self._frames
        while frames and (not ticks or len(ticks) + len(frames[0]) <= self._write_max):
            frame = frames.popleft()
            self._queued -= len(frame)
            ticks += frame
        if not frames:
            self._arrived.clear()

    async def _collect(self) -> list[Tick]:
        ticks: list[Tick] = []
        while not ticks:
            await self._arrived.wait()
            self._take(ticks)
        if len(ticks) >= self._batch_max or self._flush_s <= 0:
            return ticks
        # A partial batch may wait up to flush_ms for more ticks.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._flush_s
        while len(ticks) < self._batch_max and (remaining := deadline - loop.time()) > 0:
            try:
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
            except TimeoutError:
                break
            self._take(ticks)
        return ticks

    async def write(self, ticks: list[Tick]) -> None:
        by_shard: dict[int, list[Tick]] = defaultdict(list)
        shard_of = self._shard_of
        for tick in ticks:
            shard = shard_of.get(tick.sym)
            if shard is None:
                shard = shard_of[tick.sym] = keys.shard_for(tick.sym, self._shards)
            by_shard[shard].append(tick)
        entries = 0
        # One MULTI: a reader blocked on a shard's stream is answered once, with every entry
        # of the write. Without it Redis answers after the first XADD, and the engine
        # evaluated the first 50 ticks and wrote their alerts (a round trip) before it read
        # the rest of the same frame: 3-5 ms more for them, much of the tick→alert p99.
        async with self._r.pipeline(transaction=True) as pipe:
            for shard, shard_ticks in by_shard.items():
                stream = keys.ticks(shard)
                for start in range(0, len(shard_ticks), self._batch_max):
                    batch = shard_ticks[start:start + self._batch_max]
                    # proto's batch entry, its bytes sent as they are (no str round trip)
                    pipe.xadd(stream, {"n": len(batch), "ticks": encode_ticks_json(batch)},
                              maxlen=keys.TICKS_MAXLEN, approximate=True)
                    entries += 1
            await pipe.execute()
        self._stats.inc("entries", entries)
        self._stats.inc("written", len(ticks))
        self._stats.gauges["queued"] = self._queued  # a growing backlog shows in status

    async def drain(self) -> int:
        """Write whatever is still queued (on shutdown); the number of ticks written."""
        pending: list[Tick] = []
        while self._frames:
            pending += self._frames.popleft()
        self._queued = 0
        self._arrived.clear()
        if pending:
            await self.write(pending)
        return len(pending)
