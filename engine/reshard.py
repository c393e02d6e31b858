"""``stormalert engine reshard --to M``: change the number of engine shards from N to M
without losing rule state or alerts.

A rule lives on the shard of its symbol (``shard_for(symbol, shards)``), and its state (a
trailing peak, a window, a cooldown, a once-rule's done flag) is in that shard's checkpoint
``sa:state:{i}``. With ingest and every shard stopped and every tick stream drained (each
entry evaluated, its alerts written, and acked by a checkpoint), the checkpoints hold the
whole state as of the last tick: this command splits it by the new shard of each symbol and
writes one checkpoint per new shard, so each new shard restores exactly the rules it arms.

The steps, each safe to run again after a crash:

1. refuse while an ingest or engine heartbeat is fresh, or while a tick stream of the old
   shards has entries its group has not evaluated or acked (it names the shard to drain);
2. merge every old shard's checkpoint into ``keys.RESHARD`` (skipped when a previous,
   interrupted run left it there: it is the complete copy, and the old checkpoints may
   already be half rewritten);
3. write the new shards' checkpoints, each under a new fencing epoch (a checkpoint writer
   left over from an old incarnation can no longer write);
4. delete the checkpoints and the (drained) tick streams of shards M..N-1, and create the
   consumer group of each new shard's stream, so ticks ingest writes before that shard's
   first start are still evaluated;
5. record M in ``keys.SHARDS`` (ingest and engine refuse any other count from then on), and
   delete ``keys.RESHARD``.
"""

from __future__ import annotations

import argparse
import sys
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from engine import checkpoint
from engine.checkpointer import client_like
from engine.shard import EngineSettings
from proto import bus, health, keys, store, topology
from proto.settings import load


class ReshardError(RuntimeError):
    """Why the shards cannot be changed now; nothing was written."""


@dataclass
class State:
    """Every shard's checkpoint merged: rule id -> state, open bars, previous closes."""

    rules: dict[str, Any] = field(default_factory=dict)
    bars_open: dict[str, Any] = field(default_factory=dict)
    bars_vol: dict[str, int] = field(default_factory=dict)
    prev_close: dict[str, float] = field(default_factory=dict)

    def to_bytes(self, old: int, new: int) -> bytes:
        return zlib.compress(orjson.dumps({
            "from": old, "to": new, "rules": self.rules, "pc": self.prev_close,
            "bars": {"open": self.bars_open, "vol": self.bars_vol}}), 1)

    @classmethod
    def from_bytes(cls, raw: bytes) -> tuple[State, int]:
        doc = orjson.loads(zlib.decompress(raw))
        return cls(doc["rules"], doc["bars"]["open"], doc["bars"]["vol"], doc["pc"]), doc["from"]

    def add_checkpoint(self, saved: dict[str, bytes]) -> None:
        """One shard's state hash (format 2, or format 1's field per rule)."""
        raw = saved.get(checkpoint.STATE_FIELD)
        if raw is not None:
            doc = checkpoint.decode(raw)
            self.rules.update(doc["rules"])
            bars, pc = doc["bars"], doc["pc"]
        else:
            meta = {checkpoint.EPOCH_FIELD, checkpoint.BARS_FIELD, checkpoint.PREV_CLOSE_FIELD}
            self.rules.update({rule_id: orjson.loads(value) for rule_id, value in saved.items()
                               if rule_id not in meta})
            bars = orjson.loads(saved.get(checkpoint.BARS_FIELD, b'{"open":{},"vol":{}}'))
            pc = orjson.loads(saved.get(checkpoint.PREV_CLOSE_FIELD, b"{}"))
        self.bars_open.update(bars["open"])
        self.bars_vol.update(bars["vol"])
        self.prev_close.update(pc)

    def split(self, symbols: dict[str, str], shards: int) -> list[bytes]:
        """One checkpoint document per new shard; states of deleted rules are left out."""
        docs: list[dict[str, Any]] = [
            {"v": checkpoint.FORMAT, "rules": {}, "bars": {"open": {}, "vol": {}}, "pc": {}}
            for _ in range(shards)]
        for rule_id, state in self.rules.items():
            if rule_id in symbols:
                docs[keys.shard_for(symbols[rule_id], shards)]["rules"][rule_id] = state
        for sym, bar in self.bars_open.items():
            docs[keys.shard_for(sym, shards)]["bars"]["open"][sym] = bar
        for sym, vol in self.bars_vol.items():
            docs[keys.shard_for(sym, shards)]["bars"]["vol"][sym] = vol
        for sym, pc in self.prev_close.items():
            docs[keys.shard_for(sym, shards)]["pc"][sym] = pc
        return [zlib.compress(checkpoint.dumps(doc), 1) for doc in docs]


def running(r: redis.Redis, redis_url: str) -> list[str]:
    """Ingest and engine processes whose heartbeat is fresh."""
    names = [key.removeprefix("sa:hb:") for key in r.scan_iter(match=keys.HEARTBEAT_PATTERN)]
    wanted = [n for n in names if n.startswith(("ingest-", "engine-"))]
    return sorted(n for n in wanted if health.check(redis_url, n).alive)


def undrained(r: redis.Redis, shards: int) -> list[str]:
    """Tick streams whose group ``engine`` has entries not yet evaluated and acked."""
    problems = []
    for i in range(shards):
        stream = keys.ticks(i)
        if not r.exists(stream):
            continue
        groups = {g["name"]: g for g in r.xinfo_groups(stream)}  # type: ignore[union-attr]
        group = groups.get(keys.ENGINE_GROUP)
        if group is None:
            continue  # no shard ever read it: a first start begins at its end anyway
        last: str = r.xinfo_stream(stream)["last-generated-id"]  # type: ignore[index]
        unread = _id(last) > _id(group["last-delivered-id"])
        if group["pending"] or unread:
            problems.append(f"{stream}: {group['pending']} entries read but not acked"
                            + (", and entries not read yet" if unread else "")
                            + f": run engine shard {i} (of {shards}) until they are acked")
    return problems


def _id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def rule_symbols(r: redis.Redis) -> dict[str, str]:
    """Rule id -> symbol of every stored rule (read as stored, not validated)."""
    out: dict[str, str] = {}
    stored: dict[str, str] = r.hgetall(keys.RULES)  # type: ignore[assignment]
    for rule_id, body in stored.items():
        if symbol := store.stored_symbol(body):
            out[rule_id] = symbol
    return out


def collect(binary: redis.Redis, old: int) -> State:
    state = State()
    for i in range(old):
        saved: Any = binary.hgetall(keys.engine_state(i))
        state.add_checkpoint({k.decode(): v for k, v in saved.items()})
    return state


def reshard(r: redis.Redis, redis_url: str, new: int, configured: int) -> str:
    """Move the rule state from the recorded shard count (else ``configured``) to ``new``;
    returns the summary line."""
    if new < 1:
        raise ReshardError(f"--to must be at least 1, not {new}")
    with client_like(r, decode_responses=False) as binary:
        staged: Any = binary.get(keys.RESHARD)
        if staged is not None:
            state, old = State.from_bytes(staged)
        else:
            old = topology.stored_shards(r) or configured
            if old == new:
                raise ReshardError(f"the engine already has {new} shards ({keys.SHARDS})")
        alive = running(r, redis_url)
        if alive:
            raise ReshardError(f"still running: {', '.join(alive)}: stop ingest, let the "
                               "shards drain their streams, stop them, then reshard")
        if staged is None:
            problems = undrained(r, old)
            if problems:
                raise ReshardError("; ".join(problems))
            state = collect(binary, old)
            binary.set(keys.RESHARD, state.to_bytes(old, new))
        symbols = rule_symbols(r)
        for j, doc in enumerate(state.split(symbols, new)):
            pipe = binary.pipeline(transaction=True)  # one key: one slot in a cluster too
            pipe.hincrby(keys.engine_state(j), checkpoint.EPOCH_FIELD, 1)
            pipe.hset(keys.engine_state(j), checkpoint.STATE_FIELD, doc)
            pipe.execute()
    for i in range(new, old):
        r.delete(keys.engine_state(i), keys.ticks(i))
    for j in range(new):
        bus.ensure_group(r, keys.ticks(j), keys.ENGINE_GROUP, start="$")
    r.set(keys.SHARDS, new)
    r.delete(keys.RESHARD)
    carried = sum(1 for rule_id in state.rules if rule_id in symbols)
    moved = sum(1 for rule_id in state.rules if rule_id in symbols and
                keys.shard_for(symbols[rule_id], old) != keys.shard_for(symbols[rule_id], new))
    return (f"resharded {old} -> {new}: state of {carried} rules carried over ({moved} moved "
            f"to another shard, {len(state.rules) - carried} of deleted rules dropped); start "
            f"engine shards 0..{new - 1} with STORMALERT_SHARDS={new}, then ingest")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stormalert engine reshard", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--to", type=int, required=True, metavar="M", help="new shard count")
    args = parser.parse_args(argv)
    s = load(EngineSettings)
    r = bus.connect(s.redis_url)
    try:
        bus.check(r, s.redis_url)
        print(reshard(r, s.redis_url, args.to, s.shards))
    except (bus.RedisUnavailable, ReshardError) as exc:
        print(f"stormalert engine reshard: {exc}", file=sys.stderr)
        return 1
    except redis.RedisError as exc:
        print(f"stormalert engine reshard: Redis error (run it again to finish): {exc}",
              file=sys.stderr)
        return 1
    return 0
