"""``python -m ingest --feed upstox`` against the simulator, writing into a real Redis: ticks
in the right shards, instruments and market status stored, and the needs_login path (a
refused token stops the feed until a new token appears in Redis, then it resumes)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import orjson
import pytest
import redis

from ingest.upstox_feed import plan_connections, subscribe_messages
from proto import keys
from proto.events import decode_ticks
from tests.ingest.procs import ROOT, heartbeat, running_sim, stop, wait_for

NAMED = {"NSE:INFY": "NSE_EQ|INE009A01021", "NSE:RELIANCE": "NSE_EQ|INE002A01018",
         "NSE:TCS": "NSE_EQ|INE467B01029", "NSE:NIFTY 50": "NSE_INDEX|Nifty 50"}
SHARDS = 3
GOOD = "good-upstox-token"


@pytest.fixture(scope="module")
def sim() -> Iterator[str]:
    with running_sim("--symbols", "200", "--rate", "300", "--seed", "11",
                     "--upstox-token", GOOD) as url:
        yield url


def start_upstox_ingest(redis_url: str, sim_url: str, token: str,
                        **env: str) -> subprocess.Popen[str]:
    environment = {**os.environ, "STORMALERT_REDIS_URL": redis_url,
                   "STORMALERT_STATS_INTERVAL_S": "2", "UPSTOX_ACCESS_TOKEN": token,
                   "STORMALERT_UPSTOX_API_URL": sim_url,
                   "STORMALERT_UPSTOX_INSTRUMENTS_URL":
                       sim_url + "/upstox/instruments/complete.json.gz", **env}
    return subprocess.Popen(
        [sys.executable, "-m", "ingest", "--feed", "upstox", "--shards", str(SHARDS)],
        cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def all_ticks(r: redis.Redis) -> dict[int, list]:
    return {i: [t for _id, f in r.xrange(keys.ticks(i)) for t in decode_ticks(f)]
            for i in range(SHARDS)}


def finish(proc: subprocess.Popen[str]) -> None:
    code = stop(proc)
    assert code == 0, proc.stderr.read()[-3000:] if proc.stderr else ""


def test_ingest_writes_named_symbols_to_their_shards(sim: str, r: redis.Redis,
                                                    redis_url: str) -> None:
    ingest = start_upstox_ingest(redis_url, sim, GOOD)
    try:
        def all_named() -> dict[int, list] | None:
            streams = all_ticks(r)
            seen = {t.sym for ticks in streams.values() for t in ticks}
            return streams if set(NAMED) <= seen else None

        streams = wait_for(all_named, 20, "ticks of the four named symbols")
        for shard, ticks in streams.items():
            for tick in ticks:
                assert keys.shard_for(tick.sym, SHARDS) == shard
                assert tick.src == "upstox" and tick.ltp > 0 and tick.ts > 1e12
        by_sym = {t.sym: t for ticks in streams.values() for t in ticks}
        for sym, key in NAMED.items():
            assert by_sym[sym].tok == key
        assert by_sym["NSE:INFY"].bid is not None and by_sym["NSE:INFY"].vol > 0
        assert by_sym["NSE:NIFTY 50"].vol == 0 and by_sym["NSE:NIFTY 50"].h is not None
        record = orjson.loads(r.hget(keys.INSTRUMENTS, "NSE:INFY"))
        assert record == {"tok": "NSE_EQ|INE009A01021", "src": "upstox", "name": "INFOSYS"}
        assert r.hget(keys.MARKET_STATUS, "NSE_EQ") == "NORMAL_OPEN"
        hb = wait_for(lambda: (h := heartbeat(r, "ingest-upstox")) and h["connected"] == 1
                      and h, 10, "heartbeat of a connected worker")
        assert hb["subscribed"] == 200
        assert {"frames", "ticks", "decode_errors", "drops", "reconnects"} <= set(hb["counters"])
        assert r.hget(keys.feed_state("upstox"), "state") == "connected"
    finally:
        finish(ingest)


def test_refused_token_waits_for_a_new_one_in_redis(sim: str, r: redis.Redis,
                                                   redis_url: str) -> None:
    r.hset(keys.INSTRUMENTS, "NSE:SOMETHING", '{"tok":"1","src":"kite","name":"x"}')
    ingest = start_upstox_ingest(redis_url, sim, "stale-token",
                                 STORMALERT_UPSTOX_TOKEN_POLL_S="0.2",
                                 STORMALERT_UPSTOX_INSTRUMENT_KEYS=orjson.dumps(
                                     list(NAMED.values())).decode())
    try:
        state = wait_for(lambda: (s := r.hgetall(keys.feed_state("upstox")))
                         and s.get("state") == "needs_login" and s, 15, "needs_login")
        assert "401" in state["reason"] and "stale-token" not in state["reason"]
        assert r.xlen(keys.ticks(0)) + r.xlen(keys.ticks(1)) + r.xlen(keys.ticks(2)) == 0
        assert ingest.poll() is None
        r.set(keys.feed_token("upstox"), GOOD)
        wait_for(lambda: r.hget(keys.feed_state("upstox"), "state") == "connected", 15,
                 "the feed to resume with the new token")
        wait_for(lambda: {t.sym for ts in all_ticks(r).values() for t in ts} >= set(NAMED),
                 15, "ticks after the login")
        assert r.hget(keys.INSTRUMENTS, "NSE:SOMETHING") is not None  # Kite's entry stays
    finally:
        finish(ingest)
    assert r.hget(keys.feed_state("upstox"), "state") == "stopped"


def test_too_many_keys_for_the_mode_is_a_clear_exit(sim: str, redis_url: str) -> None:
    ingest = start_upstox_ingest(redis_url, sim, GOOD, STORMALERT_UPSTOX_MODE="full_d30")
    _out, err = ingest.communicate(timeout=30)
    assert ingest.returncode == 1
    lines = err.strip().splitlines()
    assert "exceed the Upstox limit for mode 'full_d30'" in lines[-1]


def test_plan_and_subscribe_messages() -> None:
    keys_ = [f"NSE_EQ|K{n}" for n in range(2500)]
    groups = plan_connections(keys_, "full", 2)
    assert [len(g) for g in groups] == [1250, 1250]
    assert sorted(k for g in groups for k in g) == sorted(keys_)
    assert [len(g) for g in plan_connections(keys_[:10], "full", 2)] == [10]
    with pytest.raises(ValueError, match="2000 per connection x 1"):
        plan_connections(keys_, "full", 1)
    messages = [orjson.loads(m) for m in subscribe_messages(keys_, "ltpc")]
    assert [len(m["data"]["instrumentKeys"]) for m in messages] == [1000, 1000, 500]
    assert all(m["method"] == "sub" and m["data"]["mode"] == "ltpc" for m in messages)
