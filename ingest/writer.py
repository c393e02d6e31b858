"""Between the feed sockets and Redis: a bounded queue that drops and counts under overload,
and a writer that groups ticks by shard and XADDs batched entries through one pipeline."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

import redis
import redis.asyncio as aredis

from proto import keys
from proto.events import Tick, encode_ticks_json
from proto.runtime import Stats

log = logging.getLogger("stormalert.ingest")


WRITE_RETRY_S = 0.5


class TickWriter:
    def __init__(self, r: aredis.Redis, stats: Stats, *, shards: int, batch_max: int,
                 flush_ms: float, queue_max: int) -> None:
        self._r = r
        self._stats = stats
        self._shards = shards
        self._batch_max = batch_max
        self._flush_s = flush_ms / 1000
        self._queue: asyncio.Queue[list[Tick]] = asyncio.Queue(queue_max)
        self._collect_max = batch_max * shards * 4
        self._shard_of: dict[str, int] = {}

    def offer(self, ticks: list[Tick]) -> None:
        """Hand over one frame's ticks without ever waiting; drop and count when full."""
        try:
            self._queue.put_nowait(ticks)
        except asyncio.QueueFull:
            self._stats.inc("drops", len(ticks))

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

    async def _collect(self) -> list[Tick]:
        ticks = list(await self._queue.get())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._flush_s
        while len(ticks) < self._collect_max:
            try:
                ticks += self._queue.get_nowait()
                continue
            except asyncio.QueueEmpty:
                pass
            if len(ticks) >= self._batch_max:
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    ticks += await self._queue.get()
            except TimeoutError:
                break
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
        async with self._r.pipeline(transaction=False) as pipe:
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

    async def drain(self) -> int:
        """Write whatever is still queued (on shutdown); the number of ticks written."""
        pending: list[Tick] = []
        while not self._queue.empty():
            pending += self._queue.get_nowait()
        if pending:
            await self.write(pending)
        return len(pending)
