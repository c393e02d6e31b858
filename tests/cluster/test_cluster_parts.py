"""The parts that behave differently on a Redis Cluster, each against the three-node cluster
of ``conftest.py``: the client ``proto.bus`` builds from a ``redis+cluster://`` URL, the tick
writer's MULTI per stream, the rule store's writes across slots, the once-only alert script
in a cluster pipeline, the checkpoint's WATCH/MULTI, the scan of every primary, and the backtest
worker's run of a job the web queued (its fenced writes to the job's hash, its claim renewed on
the jobs stream, another slot)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
import redis
import redis.asyncio as aredis

from engine.backtest import FINAL
from engine.checkpoint import EPOCH_FIELD, STATE_FIELD
from engine.checkpointer import Checkpointer, client_like
from ingest.writer import TickWriter
from proto import bus, keys, settings, store
from proto.backtest import MAX_QUEUED_S, PROGRESS_S, Job
from proto.events import Tick, decode_ticks, encode_tick_batch
from proto.rules import Rule
from proto.runtime import Stats
from tests.cluster.conftest import Cluster
from tests.helpers import spawn, stop, wait_for
from tests.ingest.writes import blocked_read_of_one_write, tick
from web import backtest as web_backtest
from web.views import User


def node_port(r: redis.Redis, key: str) -> int:
    return int(r.get_node_from_key(key).port)  # type: ignore[attr-defined]


def getkeys_calls(cluster: Cluster) -> int:
    stats = [cluster.node(p).info("commandstats") for p in cluster.ports]
    return sum(int(s.get("cmdstat_command|getkeys", {}).get("calls", 0)) for s in stats)


@pytest.mark.parametrize(("url", "plain"), [
    ("redis+cluster://10.0.0.5:7000", "redis://10.0.0.5:7000"),
    ("redis+cluster://:pw@node-0.redis:6379/0", "redis://:pw@node-0.redis:6379/0"),
    ("rediss+cluster://node-0:6380/?ssl_cert_reqs=none", "rediss://node-0:6380/?ssl_cert_reqs=none"),
    ("redis://127.0.0.1:6379/0", None),
    ("unix:///run/redis.sock", None),
])
def test_cluster_url(url: str, plain: str | None) -> None:
    assert bus.cluster_url(url) == plain


def test_a_cluster_has_only_database_0() -> None:
    with pytest.raises(ValueError, match=r"only database 0, not '2'") as info:
        bus.connect("redis+cluster://:secret@node-0:6379/2")
    assert "secret" not in str(info.value)


def test_a_cluster_url_naming_another_database_is_a_configuration_error(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORMALERT_REDIS_URL", "redis+cluster://:secret@node-0:6379/1")
    with pytest.raises(SystemExit) as exited:
        settings.load(settings.BaseSettings)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "only database 0, not '1'" in err and "secret" not in err


def test_an_unreachable_cluster_fails_at_check_not_at_connect() -> None:
    url = "redis+cluster://127.0.0.1:1/0"
    r = bus.connect(url)  # nothing sent yet
    assert isinstance(r, redis.Redis) and bus.is_cluster(r)  # what the processes are typed for
    assert isinstance(bus.aconnect(url), aredis.Redis)
    with pytest.raises(bus.RedisUnavailable, match=r"cannot reach Redis at redis\+cluster://"):
        bus.check(r, url)
    r.close()


def test_the_keys_spread_over_the_nodes(cluster: Cluster) -> None:
    """Otherwise every other test here would pass on one node and prove nothing."""
    r = bus.connect(cluster.url)
    assert bus.is_cluster(r)
    tick_nodes = {node_port(r, keys.ticks(i)) for i in range(2)}
    assert len(tick_nodes) == 2
    assert node_port(r, keys.engine_state(0)) == node_port(r, keys.ticks(0))
    assert node_port(r, keys.alert_seen("x")) == node_port(r, keys.ALERTS)
    assert len({node_port(r, k) for k in (keys.RULES, keys.user_rules("asha"),
                                          keys.RULE_CHANGES)}) >= 2


def test_stream_reads_route_without_asking_a_server(cluster: Cluster) -> None:
    """redis-py asks a node for XREAD/XREADGROUP's keys (COMMAND GETKEYS) before each read;
    ours find them in the command: no second round trip per read."""
    r = bus.connect(cluster.url, blocking=True)
    stream = keys.ticks(1)
    bus.ensure_group(r, stream, keys.ENGINE_GROUP)
    r.xadd(stream, {"n": "1"})
    before = getkeys_calls(cluster)
    assert len(bus.read_group(r, stream, keys.ENGINE_GROUP, "c", count=10, block_ms=50)) == 1
    assert r.xread({stream: "0"}, count=5)

    async def async_reads() -> int:
        ar = bus.aconnect(cluster.url)
        try:
            found = await bus.aread_group(ar, stream, keys.ENGINE_GROUP, "c", count=10,
                                          block_ms=50, start="0")
            await ar.xread({stream: "0"}, count=5)
            return len(found)
        finally:
            await ar.aclose()

    assert asyncio.run(async_reads()) == 1
    assert getkeys_calls(cluster) == before


def test_writer_writes_every_shard_stream_once(cluster: Cluster) -> None:
    """Shards on different nodes: one MULTI across them would be refused (CROSSSLOT)."""

    async def scenario() -> Stats:
        stats = Stats("t")
        client = bus.aconnect(cluster.url)
        writer = TickWriter(client, stats, shards=3, batch_max=7, flush_ms=1, queue_max_ticks=100)
        await writer.write([tick(f"NSE:S{n % 10}", n) for n in range(100)])
        await client.aclose()
        return stats

    stats = asyncio.run(scenario())
    r = bus.connect(cluster.url)
    seen = []
    for shard in range(3):
        for _id, fields in r.xrange(keys.ticks(shard)):
            batch = decode_ticks(fields)
            assert 1 <= len(batch) <= 7
            assert all(keys.shard_for(t.sym, 3) == shard for t in batch)
            seen += [int(t.tok) for t in batch]
    assert sorted(seen) == list(range(100))
    assert stats.counters["written"] == 100 and "write_errors" not in stats.counters


def test_a_blocked_reader_gets_every_entry_of_one_write_at_once(cluster: Cluster) -> None:
    """As on one server (tests/ingest): a write's entries for a stream come in one read."""
    stream = keys.ticks(0)
    r = bus.connect(cluster.url)
    r.xgroup_create(stream, keys.ENGINE_GROUP, id="$", mkstream=True)
    entries = blocked_read_of_one_write(cluster.url, cluster.node(node_port(r, stream)))
    assert [len(decode_ticks(f)) for _id, f in entries] == [10, 10, 10]


def test_a_failed_stream_is_counted_as_dropped_the_others_written(cluster: Cluster) -> None:
    r = bus.connect(cluster.url)
    r.set(keys.ticks(1), "not a stream")  # XADD on it fails: WRONGTYPE

    async def scenario() -> tuple[Stats, str]:
        stats = Stats("t")
        client = bus.aconnect(cluster.url)
        writer = TickWriter(client, stats, shards=2, batch_max=50, flush_ms=0,
                            queue_max_ticks=1000)
        ticks = [tick(f"NSE:S{n}", n) for n in range(40)]
        try:
            await writer.write(ticks)
        except redis.RedisError as exc:
            stats.inc("drops", exc.dropped)  # type: ignore[attr-defined]
            return stats, str(exc)
        finally:
            await client.aclose()
        return stats, ""

    stats, error = asyncio.run(scenario())
    on_1 = sum(keys.shard_for(f"NSE:S{n}", 2) == 1 for n in range(40))
    assert "WRONGTYPE" in error and 0 < on_1 < 40
    assert stats.counters["drops"] == on_1 and stats.counters["written"] == 40 - on_1
    assert sum(len(decode_ticks(f)) for _id, f in r.xrange(keys.ticks(0))) == 40 - on_1


def test_rules_are_stored_changed_and_removed_across_slots(cluster: Cluster) -> None:
    r = bus.connect(cluster.url)
    store.add_user(r, "asha", "a long password")
    r.hset(keys.INSTRUMENTS, "NSE:INFY", '{"tok": "408065"}')
    rule = store.add_rule(r, Rule.model_validate(
        {"user": "asha", "symbol": "NSE:INFY", "kind": "cross_above", "params": {"level": 1}}))
    assert [x.id for x in store.list_rules(r, "asha")] == [rule.id]
    store.set_rule_active(r, rule.id, False)
    assert store.get_rule(r, rule.id).active is False  # type: ignore[union-attr]
    store.remove_rule(r, rule.id)
    assert store.list_rules(r, "asha") == [] and not r.smembers(keys.user_rules("asha"))
    changes = [(f["op"], f["id"]) for _id, f in r.xrange(keys.RULE_CHANGES)]
    assert changes == [("put", rule.id), ("put", rule.id), ("rm", rule.id)]


def test_an_alert_is_appended_once_from_a_cluster_pipeline(cluster: Cluster) -> None:
    """The once-only script goes whole (EVAL) in a cluster pipeline: no node has to hold it,
    and a node whose script cache was emptied still runs it."""
    r = bus.connect(cluster.url)
    for port in cluster.ports:
        cluster.node(port).script_flush()
    for _ in range(2):
        pipe = r.pipeline(transaction=False)
        bus.publish_alerts_once(pipe, [("r1:1-0:0", {"id": "r1:1-0:0", "msg": "up"})])
        pipe.hset(keys.QUOTES, "NSE:INFY", "{}")  # another node, same round
        results = pipe.execute(raise_on_error=False)
        assert not any(isinstance(x, Exception) for x in results), results
    assert [f["id"] for _id, f in r.xrange(keys.ALERTS)] == ["r1:1-0:0"]


def test_checkpoint_commits_and_fences_in_the_streams_slot(cluster: Cluster) -> None:
    r = bus.connect(cluster.url)
    stream, state = keys.ticks(0), keys.engine_state(0)
    bus.ensure_group(r, stream, keys.ENGINE_GROUP)
    ids = [r.xadd(stream, {"n": str(n)}) for n in range(3)]
    bus.read_group(r, stream, keys.ENGINE_GROUP, "engine-0", count=10, block_ms=None)
    ckpt = Checkpointer(r, state, stream, keys.ENGINE_GROUP)
    ckpt.claim_epoch()
    ckpt.write(client_like(r, socket_timeout=5.0), b"\x00doc", ids)  # type: ignore[arg-type]
    binary = client_like(r, decode_responses=False)
    assert binary.hget(state, STATE_FIELD) == b"\x00doc"
    assert r.xpending(stream, keys.ENGINE_GROUP)["pending"] == 0
    r.hincrby(state, EPOCH_FIELD, 1)  # a newer incarnation took over
    with pytest.raises(Exception, match="belongs to epoch"):
        ckpt.write(r, b"old", [])
    binary.close()


def test_scan_sees_the_keys_of_every_primary(cluster: Cluster) -> None:
    r = bus.connect(cluster.url)
    names = [f"sa:hb:p{n}" for n in range(30)]
    for name in names:
        r.set(name, "{}")
    assert len({node_port(r, n) for n in names}) == 3
    assert sorted(r.scan_iter(match=keys.HEARTBEAT_PATTERN, count=5)) == sorted(names)


def test_many_concurrent_calls_wait_for_a_connection(cluster: Cluster) -> None:
    """redis-py's cluster raises MaxConnectionsError past a node's limit; ours wait."""

    async def scenario() -> int:
        ar = bus.aconnect(cluster.url, max_connections=4)
        try:
            async def one(n: int) -> bool:
                if n % 3 == 0:
                    async with ar.pipeline(transaction=False) as pipe:
                        pipe.set(f"k{n}", n)
                        pipe.get(f"k{n}")
                        return (await pipe.execute())[1] == str(n)
                await ar.set(f"k{n}", n)
                return await ar.get(f"k{n}") == str(n)

            started = time.monotonic()
            done = await asyncio.gather(*(one(n) for n in range(400)))
            assert time.monotonic() - started < 20
            return sum(done)
        finally:
            await ar.aclose()

    assert asyncio.run(scenario()) == 400


def commands_until(monitor: redis.client.Monitor, prefix: str) -> list[str]:
    """What a node ran since its MONITOR began, up to the first command starting with
    ``prefix`` (the node keeps the lines for the monitor until they are read)."""
    commands: list[str] = []
    while not commands or not commands[-1].startswith(prefix):
        commands.append(monitor.next_command()["command"])
    return commands


def test_backtest_worker_runs_a_job_the_web_queued(cluster: Cluster, tmp_path: Path) -> None:
    """The job's hash (the user's slot) and the jobs stream (its own) live on different nodes
    here: each fenced write (WATCH/MULTI on the hash) goes to the hash's node, the XCLAIM
    that renews the claim to the stream's. A job long enough for progress writes (one each
    0.5 s) runs to done with the right count, every write fenced, and its entry acked."""
    r = bus.connect(cluster.url)
    sym, shards, n = "NSE:INFY", 2, 500_000  # ~1.5 s of run: progress writes
    start_ms = int(time.time() * 1000) - n * 10 - 60_000
    stream = keys.ticks(keys.shard_for(sym, shards))
    pipe = r.pipeline(transaction=False)
    for at in range(0, n, 200):  # 1480..1519 and back down: one cross above 1500 each 40
        pipe.xadd(stream, encode_tick_batch([  # type: ignore[arg-type]
            Tick(sym=sym, tok="1", src="test", ltp=1480.0 + i % 40, vol=i, ts=start_ms + 10 * i,
                 rx=1) for i in range(at, at + 200)]))
    pipe.execute()
    job_prefix = keys.backtest("asha", "")
    hash_port, jobs_port = node_port(r, job_prefix), node_port(r, keys.BACKTEST_JOBS)
    assert hash_port != jobs_port  # else this would prove nothing about the slots
    proc = spawn(["engine.backtest", "--shards", str(shards), "--consumer", "bt-c"],
                 cluster.url, tmp_path / "bt-c.log", env={"STORMALERT_STATS_INTERVAL_S": "3600"})
    rule = Rule.model_validate({"user": "asha", "symbol": sym, "kind": "cross_above",
                                "params": {"level": 1500}})

    async def queue() -> str:
        ar = bus.aconnect(cluster.url)
        try:
            return await web_backtest.queue(ar, User("asha"), Job(rule=rule, source="days",
                                                                  days=1), None, draft=False)
        finally:
            await ar.aclose()

    def monitor(port: int) -> redis.client.Monitor:
        return redis.Redis(port=port, decode_responses=True, socket_timeout=10).monitor()

    try:
        wait_for(lambda: r.exists(keys.heartbeat("bt-c")), what="the worker's heartbeat")
        with monitor(hash_port) as on_hash, monitor(jobs_port) as on_jobs:
            key = keys.backtest("asha", asyncio.run(queue()))
            raw: Any = wait_for(lambda: (h := r.hgetall(key)) and h.get("status") in FINAL and h,
                           timeout_s=30, what="the job's outcome")
            assert raw["status"] == "done", raw
            wait_for(lambda: r.xpending(keys.BACKTEST_JOBS, keys.BACKTEST_GROUP)["pending"] == 0,
                     what="the job's entry acked")
            on_hash_ran = commands_until(on_hash, f"HDEL {key}")  # the outcome's write
            on_jobs_ran = commands_until(on_jobs, f"XACK {keys.BACKTEST_JOBS}")
    finally:
        assert stop(proc) == 0, (tmp_path / "bt-c.log").read_text()
    result = orjson.loads(raw["result"])
    assert result["prices"] == n and result["count"] == n // 40 and result["truncated"]
    assert raw["worker"] == "bt-c" and raw["attempts"] == "1" and "csv" not in raw
    assert 0 < r.ttl(key) <= keys.BACKTEST_TTL_S

    # The job's commands on its node (the test's own reads left out), each cut to its
    # first three words: the web's write, then every write of the worker in a MULTI made
    # after it watched the hash and read the fence.
    ran = [c for c in on_hash_ran if c in ("MULTI", "EXEC")
           or (c.split()[1:2] == [key] and not c.startswith("HGETALL"))]
    shape = [" ".join(c.split()[:3]) for c in ran]
    fence = [f"WATCH {key}", f"HMGET {key} status", "MULTI"]
    progress = [c.split()[2:] for c in ran if c.startswith(f"HSET {key} progress ")]
    # A run that lasted well past PROGRESS_S wrote progress (a much faster machine may
    # finish before the first one is due: then the shape below holds with none).
    if int(raw["done_ms"]) - int(raw["picked_ms"]) > 2_000 * PROGRESS_S:
        assert progress, shape
    assert shape == [
        f"HSET {key} requested_ms", f"EXPIRE {key} {int(MAX_QUEUED_S) + 300}",
        *fence, f"HINCRBY {key} attempts", f"HSET {key} picked_ms",
        f"EXPIRE {key} {keys.BACKTEST_TTL_S}", "EXEC",
        *[*fence, f"HSET {key} progress", "EXEC"] * len(progress),
        *fence, f"HSET {key} status", f"HDEL {key} csv"]
    for fields in progress:
        assert fields[0::2] == ["progress", "hb_ms"], fields
        assert 0 <= int(fields[1]) < 100
        assert int(raw["picked_ms"]) <= int(fields[3]) <= int(raw["done_ms"])
    entry_id = cast(list[bus.Entry], r.xrange(keys.BACKTEST_JOBS))[0][0]
    claims = [c for c in on_jobs_ran if c.startswith("XCLAIM")]
    assert claims == [f"XCLAIM {keys.BACKTEST_JOBS} {keys.BACKTEST_GROUP} bt-c 0 {entry_id} "
                      "JUSTID"] * (len(progress) + 1)  # each progress write, and the outcome
