"""Helpers for tests of ingest's tick writer, on one Redis server or a cluster."""

from __future__ import annotations

import asyncio

import redis

from ingest.writer import TickWriter
from proto import bus, keys
from proto.events import Tick
from proto.runtime import Stats


def tick(sym: str, n: int) -> Tick:
    return Tick(sym, str(n), "kite", 100.0 + n, n, 1_700_000_000_000, 1_700_000_000_000_000)


def blocked_read_of_one_write(url: str, stream_node: redis.Redis) -> list[bus.Entry]:
    """A reader blocks on shard 0's stream (group ``engine``, which must exist); one write of
    30 ticks in entries of 10 follows: the entries the blocked read returned.
    ``stream_node``: a client of the server holding the stream, to see the reader blocked."""

    async def scenario() -> list[bus.Entry]:
        reader, writer_client = bus.aconnect(url), bus.aconnect(url)
        writer = TickWriter(writer_client, Stats("t"), shards=1, batch_max=10, flush_ms=0,
                            queue_max_ticks=1000)
        read = asyncio.create_task(bus.aread_group(
            reader, keys.ticks(0), keys.ENGINE_GROUP, "engine-0", count=100, block_ms=5000))
        while not any(c.get("cmd") == "xreadgroup" for c in stream_node.client_list()):
            await asyncio.sleep(0.01)  # the reader is blocked now
        await writer.write([tick(f"NSE:S{n}", n) for n in range(30)])
        entries = await read
        await reader.aclose()
        await writer_client.aclose()
        return entries

    return asyncio.run(scenario())
