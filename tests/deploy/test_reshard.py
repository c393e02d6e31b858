"""Re-sharding the engine (``stormalert engine reshard --to M``) with real engine processes:
rules with state on 2 shards, reshard to 3, ticks continue, every rule's state carried over
(a trailing peak, the previous price of a cross), no alert lost or duplicated."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest
import redis

from deploy.embedded_redis import free_port
from engine import checkpoint
from engine.checkpointer import client_like
from engine.reshard import ReshardError, State, reshard
from proto import keys, store
from proto.events import Tick, encode_tick_batch
from proto.rules import parse_rule
from tests.helpers import ROOT, spawn, stop, wait_for

# Under 2 shards -> 3: MARUTI 0 -> 0, TCS 1 -> 1, INFY 0 -> 1, RELIANCE 1 -> 2, HDFCBANK 0 -> 2.
SYMBOLS = ["NSE:MARUTI", "NSE:TCS", "NSE:INFY", "NSE:RELIANCE", "NSE:HDFCBANK"]
# Prices before and after the reshard. trailing_pct down 5 %: peak 120, fires at 113 (<= 114),
# peak 113 then 130; after: 124 > 123.5, fires at 123.4. cross_below 125: fires at 124 (the
# previous price, 130, came from the old shard). A shard that lost the state would take 124
# as its first tick: no cross, and a peak of 124 that 123.4 does not fall 5 % below.
BEFORE = [100.0, 120.0, 113.0, 130.0]
AFTER = [124.0, 123.4]
EXPECTED = sorted([("trail", 113.0), ("cross", 124.0), ("trail", 123.4)] * len(SYMBOLS))


def tick(sym: str, ltp: float, ts: int) -> Tick:
    return Tick(sym=sym, tok="1", src="test", ltp=ltp, vol=1, ts=ts,
                rx=time.time_ns() // 1000, pc=110.0)


def publish(r: redis.Redis, prices: list[float], shards: int, t0: int) -> None:
    """What ingest does: each symbol's ticks to its shard's stream."""
    for n, ltp in enumerate(prices):
        for sym in SYMBOLS:
            r.xadd(keys.ticks(keys.shard_for(sym, shards)),
                   encode_tick_batch([tick(sym, ltp, t0 + n * 1000)]))  # type: ignore[arg-type]


def seed(r: redis.Redis) -> None:
    r.hset(keys.INSTRUMENTS, mapping={s: orjson.dumps({"tok": "1", "src": "test"})
                                      for s in SYMBOLS})
    store.add_user(r, "asha", "correct horse")
    for sym in SYMBOLS:
        name = sym.split(":")[1].lower()
        store.add_rule(r, parse_rule({"id": f"trail-{name}", "symbol": sym,
                                      "kind": "trailing_pct",
                                      "params": {"pct": 5, "direction": "down"}}, user="asha"))
        store.add_rule(r, parse_rule({"id": f"cross-{name}", "symbol": sym,
                                      "kind": "cross_below", "params": {"level": 125}},
                                     user="asha"))


def alerts(r: redis.Redis) -> list[dict[str, str]]:
    return [fields for _id, fields in r.xrange(keys.ALERTS)]  # type: ignore[union-attr]


def start_shards(n: int, redis_url: str, tmp_path: Path) -> list[subprocess.Popen[bytes]]:
    return [spawn(["engine", "--shard", str(i), "--shards", str(n)], redis_url,
                  tmp_path / f"engine-{i}-of-{n}.log", {"STORMALERT_ENGINE_CHECKPOINT_S": "0.5"})
            for i in range(n)]


def stormalert(redis_url: str, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STORMALERT_")}
    return subprocess.run([sys.executable, "-m", "deploy", *argv], cwd=ROOT,
                          env={**clean, "STORMALERT_REDIS_URL": redis_url,
                               "STORMALERT_SHARDS": "2", **env},  # the old count, as configured
                          capture_output=True, text=True, timeout=60)


def test_reshard_two_to_three_carries_the_state_and_loses_no_alert(
        r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    seed(r)
    procs = start_shards(2, redis_url, tmp_path)
    try:
        wait_for(lambda: all(r.exists(keys.heartbeat(f"engine-{i}")) for i in range(2)), 30,
                 "both shards")
        publish(r, BEFORE, 2, 1_000)
        wait_for(lambda: len(alerts(r)) == len(SYMBOLS), 20, "the first trailing alerts")
        refused = stormalert(redis_url, "engine", "reshard", "--to", "3")
        assert refused.returncode == 1
        assert "still running: engine-0, engine-1" in refused.stderr, refused.stderr
    finally:
        codes = [stop(p, timeout_s=30) for p in procs]  # SIGTERM: a last checkpoint and acks
    assert codes == [0, 0]

    done = stormalert(redis_url, "engine", "reshard", "--to", "3")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("resharded 2 -> 3: state of 10 rules carried over (6 moved"), \
        done.stdout
    assert r.get(keys.SHARDS) == "3" and not r.exists(keys.RESHARD)
    # Processes still configured for the old count refuse to start, saying why.
    with ThreadPoolExecutor(3) as pool:
        runs = [pool.submit(stormalert, redis_url, "engine", "--shard", "0", "--shards", "2"),
                pool.submit(stormalert, redis_url, "ingest", "--feed", "sim"),
                pool.submit(stormalert, redis_url, "up", "--port", str(free_port()),
                            STORMALERT_DATA_DIR=str(tmp_path / "up"))]
        engine, ingest, up = (run.result() for run in runs)
    for done, code in ((engine, 2), (ingest, 2), (up, 1)):
        assert done.returncode == code, done
        assert "configured for 2 engine shards but Redis records 3" in done.stderr, done.stderr

    # Ingest may start before the new shards: its ticks wait in the groups reshard created.
    publish(r, AFTER, 3, 10_000)
    procs = start_shards(3, redis_url, tmp_path)
    try:
        wait_for(lambda: len(alerts(r)) >= len(EXPECTED), 30, "the alerts after the reshard")
        time.sleep(1.0)  # anything extra (a duplicate) would show by now
        got = alerts(r)
        for i in range(3):
            wait_for(lambda i=i: r.xpending(keys.ticks(i), keys.ENGINE_GROUP)["pending"] == 0,
                     10, f"shard {i}'s acks")
    finally:
        codes = [stop(p, timeout_s=30) for p in procs]
    assert codes == [0, 0, 0]
    assert len({a["id"] for a in got}) == len(got), "duplicate alert ids"
    assert sorted((a["rule"].split("-")[0], float(a["ltp"])) for a in got) == EXPECTED
    per_rule = Counter(a["rule"] for a in got)
    assert all(per_rule[f"trail-{s.split(':')[1].lower()}"] == 2 for s in SYMBOLS), per_rule


# The refusals and the restart of an interrupted run, in-process ------------------------

def test_an_undrained_stream_is_refused_and_names_the_shard(r: redis.Redis,
                                                            redis_url: str) -> None:
    r.set(keys.SHARDS, 2)
    stream = keys.ticks(1)
    r.xgroup_create(stream, keys.ENGINE_GROUP, id="$", mkstream=True)
    r.xadd(stream, encode_tick_batch([tick("NSE:TCS", 100.0, 1)]))  # type: ignore[arg-type]
    with pytest.raises(ReshardError, match=r"sa:ticks:\{1\}: 0 entries read but not acked, "
                                           r"and entries not read yet: run engine shard 1"):
        reshard(r, redis_url, 3, 2)
    r.xreadgroup(keys.ENGINE_GROUP, "engine-1", {stream: ">"})
    with pytest.raises(ReshardError, match=r"1 entries read but not acked: run engine shard 1"):
        reshard(r, redis_url, 3, 2)
    with pytest.raises(ReshardError, match="already has 2 shards"):
        reshard(r, redis_url, 2, 2)
    assert r.get(keys.SHARDS) == "2" and not r.exists(keys.RESHARD)  # nothing written


def test_an_interrupted_reshard_finishes_from_its_staged_copy(r: redis.Redis,
                                                              redis_url: str) -> None:
    seed(r)
    staged = State(rules={f"trail-{s.split(':')[1].lower()}": {"fp": "x", "n": i}
                          for i, s in enumerate(SYMBOLS)},
                   bars_open={}, bars_vol={"NSE:INFY": 7}, prev_close={"NSE:HDFCBANK": 99.5})
    staged.rules["gone"] = {"fp": "y"}  # a rule deleted since: its state is dropped
    r.set(keys.SHARDS, 2)
    with client_like(r, decode_responses=False) as binary:
        binary.set(keys.RESHARD, staged.to_bytes(2, 3))
        # The run died after rewriting shard 0's checkpoint: it no longer holds old state.
        binary.hset(keys.engine_state(0), checkpoint.STATE_FIELD, b"half-written")
        summary = reshard(r, redis_url, 3, 2)
        docs = [checkpoint.decode(binary.hget(keys.engine_state(j), checkpoint.STATE_FIELD))
                for j in range(3)]
    assert summary.startswith("resharded 2 -> 3: state of 5 rules carried over (3 moved to "
                              "another shard, 1 of deleted rules dropped)")
    for sym in SYMBOLS:
        rule_id = f"trail-{sym.split(':')[1].lower()}"
        owner = keys.shard_for(sym, 3)
        assert [rule_id in doc["rules"] for doc in docs] == [j == owner for j in range(3)]
    assert docs[keys.shard_for("NSE:INFY", 3)]["bars"]["vol"] == {"NSE:INFY": 7}
    assert docs[keys.shard_for("NSE:HDFCBANK", 3)]["pc"] == {"NSE:HDFCBANK": 99.5}
    assert r.get(keys.SHARDS) == "3" and not r.exists(keys.RESHARD)
    assert all(r.xinfo_groups(keys.ticks(j)) for j in range(3))
