"""Between the feed sockets and Redis: a bounded queue that drops and counts under overload,
and a writer that groups ticks by shard and XADDs batched entries through one pipeline
(on a Redis Cluster, one per shard stream, all at once)."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque

import redis
import redis.asyncio as aredis
from redis.exceptions import RedisClusterException

from proto import bus, keys
from proto.events import Tick, encode_ticks_json
from proto.runtime import Stats

log = logging.getLogger("stormalert.ingest")


WRITE_RETRY_S = 0.5
# Ticks per pipeline at most: about 0.1 s of a 200k ticks/s feed, ~400 entries of 50.
WRITE_MAX_TICKS = 20_000


class PartialWrite(redis.RedisError):
    """Some shard streams of a write failed (a cluster writes them separately); ``dropped``
    ticks were not written."""

    def __init__(self, dropped: int, cause: BaseException) -> None:
        super().__init__(f"{cause} ({dropped} ticks of the write not written)")
        self.dropped = dropped


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
        self._clustered = bus.is_cluster(r)

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
                self._stats.inc("drops", getattr(exc, "dropped", len(ticks)))
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
        # One MULTI: a reader blocked on a shard's stream is answered once, with every entry
        # of the write. Without it Redis answers after the first XADD, and the engine
        # evaluated the first 50 ticks and wrote their alerts (a round trip) before it read
        # the rest of the same frame: 3-5 ms more for them, much of the tick→alert p99.
        # A cluster runs a MULTI within one slot only: there each stream (its own hash tag,
        # so its own slot) gets its own MULTI, all sent at once; a reader still gets its
        # stream's entries in one read.
        if self._clustered:
            entries = await self._write_each(by_shard)
        else:
            async with self._r.pipeline(transaction=True) as pipe:
                entries = sum(self._queue(pipe, shard, shard_ticks)
                              for shard, shard_ticks in by_shard.items())
                await pipe.execute()
        self._stats.inc("entries", entries)
        self._stats.inc("written", len(ticks))
        self._stats.gauges["queued"] = self._queued  # a growing backlog shows in status

    def _queue(self, pipe: aredis.client.Pipeline, shard: int, ticks: list[Tick]) -> int:
        """XADDs of one shard's ticks in entries of ``batch_max``; how many entries."""
        stream = keys.ticks(shard)
        entries = 0
        for start in range(0, len(ticks), self._batch_max):
            batch = ticks[start:start + self._batch_max]
            # proto's batch entry, its bytes sent as they are (no str round trip)
            pipe.xadd(stream, {"n": len(batch), "ticks": encode_ticks_json(batch)},
                      maxlen=keys.TICKS_MAXLEN, approximate=True)
            entries += 1
        return entries

    async def _write_each(self, by_shard: dict[int, list[Tick]]) -> int:
        """One MULTI per shard stream, concurrently; entries written. Raises PartialWrite
        (after counting what was written) when any stream failed."""

        async def one(shard: int, shard_ticks: list[Tick]) -> int:
            async with self._r.pipeline(transaction=True) as pipe:
                entries = self._queue(pipe, shard, shard_ticks)
                await pipe.execute()
            return entries

        shards = list(by_shard.items())
        results = await asyncio.gather(*(one(shard, t) for shard, t in shards),
                                       return_exceptions=True)
        failed = [(len(t), r) for (_shard, t), r in zip(shards, results, strict=True)
                  if isinstance(r, BaseException)]
        written = sum(r for r in results if isinstance(r, int))
        if failed:
            for _n, exc in failed:
                if not isinstance(exc, redis.RedisError | RedisClusterException):
                    raise exc  # a bug, or cancellation: not a failed write
            dropped = sum(n for n, _exc in failed)
            self._stats.inc("entries", written)
            self._stats.inc("written", sum(len(t) for t in by_shard.values()) - dropped)
            raise PartialWrite(dropped, failed[0][1])
        return written

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
