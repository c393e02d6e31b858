"""The engine shard count, agreed through Redis: ingest routes a symbol to
``shard_for(sym, shards)`` and each engine shard arms the rules of its symbols, so every one
of them must use the same count. The first process to start records its count in
``keys.SHARDS``; a process configured with another count refuses to start (one clear line)
until the operator re-shards (``stormalert engine reshard --to M``, which moves the rule
state and then changes the recorded count)."""

from __future__ import annotations

import redis

from proto import keys


class ShardCountMismatch(RuntimeError):
    """This process's configured shard count is not the one recorded in Redis."""


def stored_shards(r: redis.Redis) -> int | None:
    raw = r.get(keys.SHARDS)
    return int(raw) if raw else None  # type: ignore[arg-type]


def agree(r: redis.Redis, shards: int) -> None:
    """Record ``shards`` when no count is recorded yet, else check it is the recorded one."""
    if shards < 1:
        raise ShardCountMismatch(f"the shard count must be at least 1, not {shards}")
    stored = stored_shards(r)
    if stored is None:
        # Only then a write: a process restarting while Redis refuses writes (maxmemory)
        # can still check the recorded count.
        r.set(keys.SHARDS, shards, nx=True)
        stored = stored_shards(r)
    if stored is not None and stored != shards:
        raise ShardCountMismatch(
            f"configured for {shards} engine shards but Redis records {stored} ({keys.SHARDS}):"
            f" set STORMALERT_SHARDS={stored} (and --shards {stored}), or change the count "
            f"with `stormalert engine reshard --to {shards}` while ingest and the engine "
            "are stopped")
