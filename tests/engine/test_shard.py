"""An engine shard as a real subprocess against a real Redis."""

import time

import orjson
import pytest

from proto import keys, store
from proto.events import Tick, encode_tick_batch
from proto.rules import parse_rule
from tests.helpers import spawn, stop, wait_for

SYM = "NSE:INFY"


def tick(p: float, t: int, sym: str = SYM) -> Tick:
    return Tick(sym=sym, tok="408065", src="test", ltp=p, vol=1, ts=t,
                rx=time.time_ns() // 1000, pc=1490.0)


@pytest.fixture
def world(r):
    r.hset(keys.INSTRUMENTS, mapping={SYM: orjson.dumps({"tok": "408065", "src": "test"}),
                                      "NSE:TCS": orjson.dumps({"tok": "1", "src": "test"})})
    store.add_user(r, "alice", "correct horse")
    return r


@pytest.fixture
def shard(world, redis_url, tmp_path):
    shard_of = keys.shard_for(SYM, 2)
    proc = spawn(["engine", "--shard", str(shard_of), "--shards", "2"], redis_url,
                 tmp_path / "engine.log")
    wait_for(lambda: world.exists(keys.heartbeat(f"engine-{shard_of}")), what="engine heartbeat")
    yield proc, shard_of
    assert stop(proc) == 0, (tmp_path / "engine.log").read_text()


def alerts(r):
    return [f for _id, f in r.xrange(keys.ALERTS)]


def test_rule_added_live_fires_once_and_acks(world, shard):
    _proc, shard_of = shard
    rule = store.add_rule(world, parse_rule(
        {"id": "up", "symbol": SYM, "kind": "cross_above", "params": {"level": 1500},
         "frequency": "once", "channels": ["default", "phone"]}, user="alice"))
    time.sleep(0.6)  # hot reload is polled every 0.25 s
    stream = keys.ticks(shard_of)
    world.xadd(stream, encode_tick_batch([tick(1499, 1000), tick(1501, 2000)]))
    world.xadd(stream, encode_tick_batch([tick(1499, 3000), tick(1502, 4000)]))
    got = wait_for(lambda: alerts(world), what="an alert")
    time.sleep(0.5)
    got = alerts(world)
    assert len(got) == 1, got
    alert = got[0]
    assert alert["rule"] == rule.id and alert["user"] == "alice" and alert["sym"] == SYM
    assert float(alert["ltp"]) == 1501 and int(alert["ts"]) == 2000
    assert alert["channels"] == "default,phone"
    assert int(alert["at"]) >= int(alert["rx"])
    assert orjson.loads(alert["ref"]) == {"level": 1500.0, "prev": 1499.0}
    # acked, quote cached, once-rule disarmed in the store
    wait_for(lambda: world.xpending(stream, keys.ENGINE_GROUP)["pending"] == 0, what="acks")
    wait_for(lambda: orjson.loads(world.hget(keys.QUOTES, SYM) or "{}").get("ltp") == 1502,
             timeout_s=2, what="the quote cache, written at most every 0.25 s")
    wait_for(lambda: not store.get_rule(world, "up").active, what="once-rule disarmed")


def test_removed_rule_stops_and_malformed_entries_are_skipped(world, shard):
    proc, shard_of = shard
    stream = keys.ticks(shard_of)
    store.add_rule(world, parse_rule(
        {"id": "x", "symbol": SYM, "kind": "cross_below", "params": {"level": 1500}}, user="alice"))
    time.sleep(0.6)
    world.xadd(stream, {"ticks": "not json"})
    world.xadd(stream, encode_tick_batch([tick(1501, 1), tick(1499, 2)]))
    wait_for(lambda: len(alerts(world)) == 1, what="first alert")
    store.remove_rule(world, "x")
    time.sleep(0.6)
    world.xadd(stream, encode_tick_batch([tick(1501, 3), tick(1499, 4)]))
    wait_for(lambda: world.xpending(stream, keys.ENGINE_GROUP)["pending"] == 0, what="acks")
    time.sleep(0.3)
    assert len(alerts(world)) == 1
    assert proc.poll() is None


def test_pending_entries_of_a_crashed_shard_are_redone_with_the_same_alert_ids(
        world, redis_url, tmp_path):
    shard_of = keys.shard_for(SYM, 1)
    stream = keys.ticks(shard_of)
    store.add_rule(world, parse_rule(
        {"id": "c", "symbol": SYM, "kind": "cross_above", "params": {"level": 1500}}, user="alice"))
    world.xgroup_create(stream, keys.ENGINE_GROUP, id="0", mkstream=True)
    entry = world.xadd(stream, encode_tick_batch([tick(1499, 1), tick(1501, 2)]))
    # A previous incarnation read the entry and died before acking it.
    world.xreadgroup(keys.ENGINE_GROUP, f"engine-{shard_of}", {stream: ">"}, count=10)
    proc = spawn(["engine", "--shard", "0", "--shards", "1"], redis_url, tmp_path / "e.log")
    try:
        got = wait_for(lambda: alerts(world), what="alert from redone entry")
        assert got[0]["id"] == f"c:{entry}:1"
        wait_for(lambda: world.xpending(stream, keys.ENGINE_GROUP)["pending"] == 0, what="ack")
    finally:
        assert stop(proc) == 0


def test_unreachable_redis_is_a_one_line_error(tmp_path):
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "engine", "--shard", "0", "--shards", "1"],
                         env={"STORMALERT_REDIS_URL": "redis://127.0.0.1:1/0", "PATH": "/usr/bin"},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_reprocessed_tick_makes_no_second_alert(world, redis_url, tmp_path):
    """Entries processed again (after a crash before the ack, a claim, or a group reset)
    yield the same alert ids, and an id already written is not written again."""
    stream = keys.ticks(0)
    store.add_rule(world, parse_rule(
        {"id": "d", "symbol": SYM, "kind": "cross_above", "params": {"level": 1500}}, user="alice"))
    world.xgroup_create(stream, keys.ENGINE_GROUP, id="0", mkstream=True)
    entry = world.xadd(stream, encode_tick_batch([tick(1499, 1), tick(1501, 2)]))

    def run_until_acked():
        proc = spawn(["engine", "--shard", "0", "--shards", "1"], redis_url, tmp_path / "e.log")
        try:
            wait_for(lambda: world.xinfo_groups(stream)[0]["lag"] == 0
                     and world.xpending(stream, keys.ENGINE_GROUP)["pending"] == 0, what="acks")
        finally:
            assert stop(proc) == 0

    run_until_acked()
    world.xgroup_setid(stream, keys.ENGINE_GROUP, "0")  # every entry is delivered again
    run_until_acked()
    assert [a["id"] for a in alerts(world)] == [f"d:{entry}:1"]


def test_closed_minute_bars_are_written_once_and_the_open_bar_is_quoted(world, shard):
    _proc, shard_of = shard
    stream = keys.ticks(shard_of)
    m = 1_700_000_040_000  # a minute's start
    world.xadd(stream, encode_tick_batch([tick(100, m + 1_000), tick(105, m + 30_000),
                                          tick(99, m + 59_000)]))
    world.xadd(stream, encode_tick_batch([tick(101, m + 61_000)]))
    bars = wait_for(lambda: world.xrange(keys.bars(SYM)), what="a closed bar")
    assert bars == [(f"{m}-0", {"o": "100.0", "h": "105.0", "l": "99.0", "c": "99.0", "v": "0"})]
    wait_for(lambda: orjson.loads(world.hget(keys.QUOTES, SYM) or "{}").get("bar")
             == [m + 60_000, 101.0, 101.0, 101.0, 101.0, 0], what="the open bar in the quote")
    world.xgroup_setid(stream, keys.ENGINE_GROUP, "0")  # reprocess: the bar is not rewritten
    wait_for(lambda: world.xinfo_groups(stream)[0]["lag"] == 0, what="reprocessing")
    time.sleep(0.3)
    assert len(world.xrange(keys.bars(SYM))) == 1
    assert _proc.poll() is None
