"""The backtest worker as a real subprocess against a real Redis: over the ticks of a stream a
backtest makes exactly the firings the live shard and ``stormalert replay`` make over the
same ticks; a worker killed with SIGKILL mid-job leaves a job that a restarted or another
worker finishes, or reports failed, never one that waits forever; Redis refusing writes
(maxmemory) leaves a job pending, not failed, until its outcome can be stored."""

from __future__ import annotations

import io
import random
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from engine.replay import replay
from proto import keys, recorded, store
from proto.backtest import Job
from proto.events import Tick, encode_tick_batch
from proto.rules import parse_rule
from tests.helpers import spawn, stop, wait_for

SYM = "NSE:INFY"
SHARDS = 2
SHARD = keys.shard_for(SYM, SHARDS)
# Another symbol in the same tick stream, and one in the other: the worker must skip both.
NEIGHBOUR = next(f"NSE:N{i}" for i in range(100) if keys.shard_for(f"NSE:N{i}", SHARDS) == SHARD)
RULES = [
    {"id": "cross", "symbol": SYM, "kind": "cross_above", "params": {"level": 1500}},
    {"id": "trail", "symbol": SYM, "kind": "trailing_pct", "cooldown_s": 5,
     "params": {"pct": 0.3, "direction": "down"}},
    {"id": "win", "symbol": SYM, "kind": "window_pct",
     "params": {"pct": 0.2, "window_s": 30, "direction": "either"}},
    {"id": "vol", "symbol": SYM, "kind": "volume_spike",
     "params": {"window_s": 5, "factor": 3, "baseline_windows": 5}},
]


def walk(n: int, start_ms: int, seed: int = 7) -> list[Tick]:
    """A random walk of SYM around 1500 interleaved with its neighbour's ticks."""
    rnd = random.Random(seed)
    p, vol, ticks = 1500.0, 1000, []
    for i in range(n):
        p = round(p * (1 + rnd.gauss(0, 0.0015)), 2)
        vol += 2000 if 0 < i % 300 < 10 else rnd.randint(5, 15)  # a burst every minute
        t = start_ms + i * 200
        ticks.append(Tick(sym=SYM, tok="408065", src="test", ltp=p, vol=vol, ts=t, rx=t * 1000,
                          pc=1495.0))
        ticks.append(Tick(sym=NEIGHBOUR, tok="1", src="test", ltp=p / 3, vol=vol, ts=t,
                          rx=t * 1000))
    return ticks


def write_ticks(r: redis.Redis, ticks: list[Tick], stream: str, per_entry: int = 50) -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(0, len(ticks), per_entry):
        pipe.xadd(stream, encode_tick_batch(ticks[i:i + per_entry]))  # type: ignore[arg-type]
    pipe.execute()


def queue_job(r: redis.Redis, user: str, job: Job, job_id: str, csv_text: str = "") -> str:
    """What the web does: the job's hash, then the stream entry."""
    key = keys.backtest(user, job_id)
    mapping: dict[Any, Any] = {"requested_ms": int(time.time() * 1000), "status": "queued",
                               "job": job.model_dump_json(), "draft": 0}
    if csv_text:
        mapping["csv"] = csv_text
    r.hset(key, mapping=mapping)
    r.xadd(keys.BACKTEST_JOBS, {"id": job_id, "user": user, "at_ms": mapping["requested_ms"]})
    return key


def result_of(r: redis.Redis, key: str, timeout_s: float = 30.0) -> dict[str, Any]:
    raw = wait_for(lambda: (h := r.hgetall(key)) and h.get("status") in ("done", "failed") and h,
                   timeout_s=timeout_s, what=f"{key} done")
    assert raw["status"] == "done", raw
    return orjson.loads(raw["result"])


def replayed(rule: dict[str, Any], ticks: list[Tick]) -> list[tuple[int, float, dict]]:
    """``stormalert replay``'s firings (its own function) over the same ticks."""
    out = io.BytesIO()
    rows = (recorded.Row(t.ts, t.sym, t.ltp, t.vol, t.pc) for t in ticks)
    replay([parse_rule(rule, user="alice")], rows, out)
    return [(f["ts"], f["ltp"], f["ref"]) for f in map(orjson.loads, out.getvalue().splitlines())]


def firings(result: dict[str, Any]) -> list[tuple[int, float, dict]]:
    return [(f["ts"], f["ltp"], f["ref"]) for f in result["firings"]]


@pytest.fixture
def world(r: redis.Redis) -> redis.Redis:
    r.hset(keys.INSTRUMENTS, mapping={s: orjson.dumps({"tok": "1", "src": "test"})
                                      for s in (SYM, NEIGHBOUR)})
    store.add_user(r, "alice", "correct horse")
    return r


@pytest.fixture
def worker(world: redis.Redis, redis_url: str, tmp_path: Path) -> Iterator[Any]:
    procs = []

    def start(consumer: str = "bt-a", **env: str) -> Any:
        log = tmp_path / f"{consumer}-{len(procs)}.log"
        proc = spawn(["engine.backtest", "--shards", str(SHARDS), "--consumer", consumer],
                     redis_url, log, env={"STORMALERT_STATS_INTERVAL_S": "3600", **env})
        procs.append((proc, log))
        wait_for(lambda: world.exists(keys.heartbeat(consumer)), what="worker heartbeat")
        return proc

    yield start
    for proc, log in procs:
        if proc.poll() is None:
            assert stop(proc) == 0, log.read_text()


def test_backtest_matches_the_live_shard_and_replay(world, worker, redis_url, tmp_path):
    for rule in RULES:
        store.add_rule(world, parse_rule(rule, user="alice"))
    shard = spawn(["engine", "--shard", str(SHARD), "--shards", str(SHARDS)], redis_url,
                  tmp_path / "engine.log", env={"STORMALERT_ENGINE_CHECKPOINT_S": "0.5"})
    try:
        wait_for(lambda: world.exists(keys.heartbeat(f"engine-{SHARD}")), what="engine")
        ticks = walk(1500, int(time.time() * 1000) - 3_600_000)
        stream = keys.ticks(SHARD)
        write_ticks(world, ticks, stream)
        # A tick of another shard's stream: never read by this backtest.
        world.xadd(keys.ticks(1 - SHARD), encode_tick_batch([Tick(
            sym=SYM, tok="1", src="test", ltp=99999.0, vol=1, ts=ticks[-1].ts, rx=1)]))
        last = world.xrevrange(stream, count=1)[0][0]
        wait_for(lambda: world.xinfo_groups(stream)[0]["last-delivered-id"] == last
                 and world.xpending(stream, keys.ENGINE_GROUP)["pending"] == 0,
                 timeout_s=30, what="the shard to evaluate and ack every tick")
    finally:
        assert stop(shard) == 0, (tmp_path / "engine.log").read_text()
    live: dict[str, list] = {rule["id"]: [] for rule in RULES}
    for _id, alert in world.xrange(keys.ALERTS):
        live[alert["rule"]].append((int(alert["ts"]), float(alert["ltp"]),
                                    orjson.loads(alert["ref"])))

    worker()
    jobs = {rule["id"]: queue_job(world, "alice", Job(rule=parse_rule(rule, user="alice"),
                                                      source="days", days=1),
                                  f"job-{rule['id']:<12}".replace(" ", "_"))
            for rule in RULES}
    mine = [t for t in ticks if t.sym == SYM]
    for rule in RULES:
        result = result_of(world, jobs[rule["id"]])
        got = firings(result)
        assert got, f"{rule['id']} never fired: the test shows nothing"
        assert got == live[rule["id"]] == replayed(rule, mine), rule["id"]
        assert result["count"] == len(got) and not result["truncated"]
        assert result["sources"]["ticks"] == {"n": len(mine), "from_ms": mine[0].ts,
                                              "to_ms": mine[-1].ts}
        assert result["sources"]["bars"]["n"] == 0  # bars of the tick period are not used
        assert all(f["src"] == "tick" for f in result["firings"])
    raw = world.hgetall(jobs["cross"])
    assert "csv" not in raw and 0 < world.ttl(jobs["cross"]) <= keys.BACKTEST_TTL_S
    assert world.xpending(keys.BACKTEST_JOBS, keys.BACKTEST_GROUP)["pending"] == 0


def test_bars_before_the_first_tick_then_ticks(world):
    """In process: the history reader uses the bars older than the stream's first tick."""
    from engine.backtest_run import run_job

    now = int(time.time() * 1000)
    first_tick = now - 600_000
    bar_start = (first_tick - 3 * 60_000) // 60_000 * 60_000
    # Three closed bars: the second spikes up through 1510, the first and third do not.
    for i, (o, h, low, c) in enumerate([(1500, 1502, 1499, 1501), (1501, 1512, 1500, 1511),
                                        (1511, 1511, 1495, 1496)]):
        world.xadd(keys.bars(SYM), {"o": o, "h": h, "l": low, "c": c, "v": 10},
                   id=f"{bar_start + i * 60_000}-0")
    # A bar within the tick period (the shard writes those too): not used.
    world.xadd(keys.bars(SYM), {"o": 1, "h": 2000, "l": 1, "c": 1, "v": 1},
               id=f"{first_tick // 60_000 * 60_000}-0")
    write_ticks(world, [Tick(sym=SYM, tok="1", src="t", ltp=p, vol=1, ts=first_tick + i, rx=1)
                        for i, p in enumerate([1505.0, 1509.0, 1510.5])], keys.ticks(SHARD))
    rule = parse_rule({"id": "x", "symbol": SYM, "kind": "cross_above",
                       "params": {"level": 1510}}, user="alice")
    seen: list[float] = []
    result = run_job(world, Job(rule=rule, source="days", days=1), None, shards=SHARDS,
                     holidays=frozenset(), max_shown=10, progress=seen.append)
    assert [(f["src"], f["ltp"]) for f in result["firings"]] == [("bar", 1512.0),
                                                                  ("tick", 1510.5)]
    assert result["firings"][0]["ts"] == bar_start + 60_000 + 40_000  # open, low, high, close
    assert result["sources"]["bars"] == {"n": 3, "from_ms": bar_start,
                                         "to_ms": bar_start + 2 * 60_000 + 59_999}
    assert result["sources"]["ticks"]["n"] == 3
    assert result["period"] == {"from_ms": bar_start, "to_ms": first_tick + 2}


def test_no_history_is_a_result_not_an_error(world):
    from engine.backtest_run import run_job

    rule = parse_rule(RULES[0], user="alice")
    result = run_job(world, Job(rule=rule, source="days", days=3), None, shards=SHARDS,
                     holidays=frozenset(), max_shown=10, progress=lambda _f: None)
    assert result["count"] == 0 and result["prices"] == 0
    assert result["period"] == {"from_ms": None, "to_ms": None}
    assert result["requested"]["to_ms"] - result["requested"]["from_ms"] == 3 * 86_400_000


def big_job(world: redis.Redis, n: int) -> tuple[dict[str, Any], list[Tick]]:
    ticks = walk(n, int(time.time() * 1000) - 6 * 3_600_000, seed=3)
    write_ticks(world, ticks, keys.ticks(SHARD), per_entry=100)
    return RULES[1], [t for t in ticks if t.sym == SYM]


def on_running(world: redis.Redis, queue: Any, act: Callable[[], object]) -> str:
    """Queue a job and ``act()`` the moment the worker marks it running (a keyspace
    notification: the job itself takes a few hundred ms); returns the job's key."""
    db = world.connection_pool.connection_kwargs.get("db", 0)
    world.config_set("notify-keyspace-events", "Kh")
    pubsub = world.pubsub()
    try:
        key = queue(None)  # the key, before anything is written to it
        pubsub.subscribe(f"__keyspace@{db}__:{key}")
        queue(key)
        events: list[str] = []
        deadline = time.monotonic() + 30
        while "hincrby" not in events or events[-1] != "hset":  # picked, then marked running
            assert time.monotonic() < deadline, events
            message = pubsub.get_message(timeout=1.0)
            if message and message["type"] == "message":
                events.append(message["data"])
        act()
    finally:
        pubsub.close()
        world.config_set("notify-keyspace-events", "")
    return key


def kill_mid_job(world: redis.Redis, proc: Any, queue: Any,
                 sig: int = signal.SIGKILL) -> str:
    """Queue a job and SIGKILL the worker the moment it marks the job running; returns the
    job's key."""
    def kill() -> None:
        proc.send_signal(sig)
        assert proc.wait(10) == (-signal.SIGKILL if sig == signal.SIGKILL else 0)

    key = on_running(world, queue, kill)
    raw = world.hgetall(key)
    assert raw["status"] == ("running" if sig == signal.SIGKILL else "queued"), raw
    assert "result" not in raw
    return key


def queuer(world: redis.Redis, rule: dict[str, Any], job_id: str) -> Any:
    """``queue(None)`` names the job's key; ``queue(key)`` queues the job."""
    job = Job(rule=parse_rule(rule, user="alice"), source="days", days=1)

    def queue(key: str | None) -> str:
        return keys.backtest("alice", job_id) if key is None else \
            queue_job(world, "alice", job, job_id)

    return queue


def test_kill_9_mid_job_a_restarted_worker_finishes_it(world, worker):
    rule, mine = big_job(world, 120_000)
    key = kill_mid_job(world, worker("bt-a"), queuer(world, rule, "crash-restart-01"))
    worker("bt-a")  # same consumer: redoes its own pending job first
    result = result_of(world, key, timeout_s=60)
    expected = replayed(rule, mine)
    assert len(expected) > 1000  # more than the worker lists: the count is still exact
    assert firings(result) == expected[:1000] and result["count"] == len(expected)
    assert result["truncated"] and world.hget(key, "attempts") == "2"


def test_kill_9_another_worker_takes_over_or_it_is_reported_failed(world, worker):
    rule, _mine = big_job(world, 120_000)
    key = kill_mid_job(world, worker("bt-a"), queuer(world, rule, "crash-takeover-1"))
    time.sleep(1.1)  # the entry is idle for longer than bt-b's claim time when it starts
    # Another consumer takes the job over once its entry is idle: here with one attempt
    # allowed, so it says the job failed instead of running it a second time.
    worker("bt-b", STORMALERT_BACKTEST_CLAIM_IDLE_MS="1000", STORMALERT_BACKTEST_MAX_ATTEMPTS="1")
    raw = wait_for(lambda: (h := world.hgetall(key)) and h.get("status") == "failed" and h,
                   timeout_s=30, what="the job reported failed")
    assert "stopped 1 time while running" in raw["error"]
    assert world.xpending(keys.BACKTEST_JOBS, keys.BACKTEST_GROUP)["pending"] == 0


def test_sigterm_mid_job_leaves_it_queued_for_the_next_start(world, worker):
    rule, mine = big_job(world, 120_000)
    key = kill_mid_job(world, worker("bt-a"), queuer(world, rule, "stop-restart-001"),
                       signal.SIGTERM)
    assert world.hget(key, "attempts") == "0"  # a clean stop is not held against the job
    worker("bt-a")
    assert result_of(world, key, timeout_s=60)["count"] == len(replayed(rule, mine))
    assert world.hget(key, "attempts") == "1"


def test_redis_refusing_the_outcome_leaves_the_job_pending_until_it_is_stored(world, worker,
                                                                              tmp_path):
    """Redis near its maxmemory (noeviction) takes the job's small writes but refuses its
    ~3 MB result (a command's own size counts against the limit), where it would take a
    small "failed" note. The job stays pending, the worker keeps the outcome and retries,
    and once Redis takes writes again the job ends done: computed once, one attempt."""
    ticks = walk(120_000, int(time.time() * 1000) - 6 * 3_600_000, seed=3)
    write_ticks(world, ticks, keys.ticks(SHARD), per_entry=100)
    rule = RULES[2]  # window_pct: ~38k firings, all listed
    expected = replayed(rule, [t for t in ticks if t.sym == SYM])
    worker("bt-a", STORMALERT_BACKTEST_MAX_SHOWN="100000")
    log = tmp_path / "bt-a-0.log"
    world.config_set("maxmemory-policy", "noeviction")
    world.config_set("maxmemory", int(world.info("memory")["used_memory"]) + 1024 * 1024)
    try:
        key = queue_job(world, "alice", Job(rule=parse_rule(rule, user="alice"), source="days",
                                            days=1), "oom-outcome-0001")
        wait_for(lambda: log.read_text().count("retrying in 1 s") >= 3
                 or world.hget(key, "status") == "failed", timeout_s=60,
                 what="the worker to retry the refused outcome")
        raw = world.hgetall(key)
        assert raw["status"] == "running" and "result" not in raw, raw
        assert world.xpending(keys.BACKTEST_JOBS, keys.BACKTEST_GROUP)["pending"] == 1
        assert "maxmemory" in log.read_text()
    finally:
        world.config_set("maxmemory", 0)
    result = result_of(world, key, timeout_s=30)
    assert firings(result) == expected and len(expected) > 30_000
    assert world.hget(key, "attempts") == "1"
    assert log.read_text().count(f"backtest of rule {rule['id']} over") == 1
    wait_for(lambda: world.xpending(keys.BACKTEST_JOBS, keys.BACKTEST_GROUP)["pending"] == 0,
             what="the job acked")


def test_redis_refusing_writes_mid_job_is_waited_out_not_counted_as_an_attempt(world, worker,
                                                                              tmp_path):
    """Redis starts refusing every write (maxmemory below its use) while a job runs: the job
    stays pending through the worker's retries and, once Redis takes writes again, ends
    done; the run cut short is not held against it (one attempt allowed here)."""
    rule, mine = big_job(world, 120_000)
    worker("bt-a", STORMALERT_BACKTEST_MAX_ATTEMPTS="1")
    log = tmp_path / "bt-a-0.log"
    world.config_set("maxmemory-policy", "noeviction")
    try:
        key = on_running(world, queuer(world, rule, "oom-mid-job-0001"), lambda: world.config_set(
            "maxmemory", int(world.info("memory")["used_memory"]) // 2))
        wait_for(lambda: log.read_text().count("retrying in 1 s") >= 3
                 or world.hget(key, "status") == "failed", timeout_s=60,
                 what="the worker to retry the refused writes")
        assert world.hget(key, "status") == "running"
        assert world.xpending(keys.BACKTEST_JOBS, keys.BACKTEST_GROUP)["pending"] == 1
    finally:
        world.config_set("maxmemory", 0)
    assert result_of(world, key, timeout_s=60)["count"] == len(replayed(rule, mine))
    assert world.hget(key, "attempts") == "1"


def beat(world: redis.Redis, consumer: str) -> dict[str, Any]:
    """The worker's heartbeat (its counters and gauges), once it has published one."""
    return orjson.loads(wait_for(lambda: world.get(keys.heartbeat(consumer)),
                                 what=f"{consumer}'s heartbeat"))


def long_job(world: redis.Redis) -> tuple[dict[str, Any], list[Tick]]:
    """A job that runs for more than a second (several progress writes, one every 0.5 s)."""
    return big_job(world, 400_000)


def test_redis_refusing_progress_writes_the_run_goes_on_and_keeps_its_claim(world, worker,
                                                                           tmp_path):
    """Redis refuses every small write (maxmemory below its use) from the moment a long job
    runs: its progress writes are refused, yet the run goes on to its end (computed once, the
    refusal logged once) and its outcome is kept and retried. The other worker, with a 2 s
    claim time, never takes the job over: the runner's claim is renewed all along (XCLAIM is
    taken at maxmemory). Once Redis takes writes again the job ends done, one attempt."""
    rule, mine = long_job(world)
    for name in ("bt-a", "bt-b"):
        worker(name, STORMALERT_BACKTEST_CLAIM_IDLE_MS="2000")
    world.config_set("maxmemory-policy", "noeviction")
    try:
        key = on_running(world, queuer(world, rule, "oom-progress-001"), lambda: world.config_set(
            "maxmemory", int(world.info("memory")["used_memory"]) // 2))
        runner, other = ("bt-a", "bt-b") if world.hget(key, "worker") == "bt-a" \
            else ("bt-b", "bt-a")
        log, other_log = (tmp_path / f"{runner}-{runner == 'bt-b':d}.log",
                          tmp_path / f"{other}-{other == 'bt-b':d}.log")
        wait_for(lambda: "backtest of rule" in log.read_text(), timeout_s=60,
                 what="the run to end while Redis refuses its progress writes")
        retries = log.read_text().count("retrying in 1 s")
        wait_for(lambda: log.read_text().count("retrying in 1 s") >= retries + 7, timeout_s=30,
                 what="7 more retries of the refused outcome (the other worker claims each 5 s)")
        raw = world.hgetall(key)
        assert raw["status"] == "running" and "result" not in raw, raw
        assert raw["worker"] == runner and raw["attempts"] == "1", raw
        pending = world.xpending_range(keys.BACKTEST_JOBS, keys.BACKTEST_GROUP, "-", "+", 10)
        assert [p["consumer"] for p in pending] == [runner]
    finally:
        world.config_set("maxmemory", 0)
    assert result_of(world, key, timeout_s=30)["count"] == len(replayed(rule, mine))
    assert world.hget(key, "worker") == runner and world.hget(key, "attempts") == "1"
    text = log.read_text()
    assert text.count("backtest of rule") == 1 and "backtest of rule" not in other_log.read_text()
    assert text.count("redis refused a progress write") == 1 and "maxmemory" in text
    assert "took over" not in other_log.read_text()
    assert wait_for(lambda: beat(world, runner)["counters"].get("progress_write_errors", 0) >= 2,
                    what="the refused progress writes counted")
    wait_for(lambda: world.xpending(keys.BACKTEST_JOBS, keys.BACKTEST_GROUP)["pending"] == 0,
             what="the job acked")


def takeover_while_frozen(world: redis.Redis, worker: Any, key: str,
                          frozen: Any) -> dict[str, str]:
    """``frozen`` (SIGSTOPped, as cut off from Redis) holds a job; another worker with a 1 s
    claim time takes it over and finishes it. Returns the job's hash as that worker left it."""
    time.sleep(1.1)  # the entry is idle for longer than bt-b's claim time when it starts
    worker("bt-b", STORMALERT_BACKTEST_CLAIM_IDLE_MS="1000")
    raw = wait_for(lambda: (h := world.hgetall(key)) and h.get("status") == "done" and h,
                   timeout_s=60, what="bt-b to finish the job")
    assert raw["worker"] == "bt-b" and raw["attempts"] == "2", raw
    wait_for(lambda: world.xpending(keys.BACKTEST_JOBS, keys.BACKTEST_GROUP)["pending"] == 0,
             what="bt-b to ack the job")
    frozen.send_signal(signal.SIGCONT)
    return raw


def test_a_worker_frozen_mid_run_past_its_claim_never_overwrites_the_takeover(world, worker,
                                                                             tmp_path):
    """A worker that stalls mid-run (SIGSTOP: to Redis, as if cut off) longer than the claim
    time: another worker takes the job over and finishes it. When the first one comes back,
    its next progress write finds the job's hash fenced by the other run: it drops its run and
    writes nothing, so the job has one outcome, the other worker's."""
    rule, mine = long_job(world)
    proc = worker("bt-a")
    key = on_running(world, queuer(world, rule, "frozen-mid-run01"),
                     lambda: proc.send_signal(signal.SIGSTOP))
    done = takeover_while_frozen(world, worker, key, proc)
    assert orjson.loads(done["result"])["count"] == len(replayed(rule, mine))
    log = tmp_path / "bt-a-0.log"
    wait_for(lambda: "this worker's run of it is dropped" in (text := log.read_text())
             or "backtest of rule" in text, timeout_s=30, what="bt-a to drop or end its run")
    time.sleep(1.0)
    assert world.hgetall(key) == done  # one outcome: bt-b's
    assert "backtest of rule" not in log.read_text()
    assert beat(world, "bt-a")["counters"]["jobs_superseded"] == 1


def test_a_worker_cut_off_with_a_kept_outcome_drops_it_once_another_took_over(world, worker,
                                                                              tmp_path):
    """A worker holds an outcome Redis refused (maxmemory), then is cut off (SIGSTOP) longer
    than the claim time; meanwhile Redis takes writes again and another worker takes the job
    over and finishes it. Back, the first worker finds the entry no longer pending with it:
    it drops the kept outcome (none left in memory) and writes nothing over the newer one."""
    rule, mine = long_job(world)
    proc = worker("bt-a")
    log = tmp_path / "bt-a-0.log"
    world.config_set("maxmemory-policy", "noeviction")
    try:
        on_running(world, queuer(world, rule, "cut-off-kept-01"), lambda: world.config_set(
            "maxmemory", int(world.info("memory")["used_memory"]) // 2))
        key = keys.backtest("alice", "cut-off-kept-01")
        wait_for(lambda: "backtest of rule" in log.read_text()
                 and log.read_text().count("retrying in 1 s") >= 2, timeout_s=60,
                 what="bt-a to keep its refused outcome and retry it")
        proc.send_signal(signal.SIGSTOP)
    finally:
        world.config_set("maxmemory", 0)
    done = takeover_while_frozen(world, worker, key, proc)
    assert orjson.loads(done["result"])["count"] == len(replayed(rule, mine))
    wait_for(lambda: "no longer with this worker: dropped" in log.read_text(), timeout_s=30,
             what="bt-a to drop what it kept for the job")
    wait_for(lambda: beat(world, "bt-a").get("kept_outcomes") == 0, timeout_s=10,
             what="bt-a to keep no outcome")
    assert world.hgetall(key) == done
    assert log.read_text().count("backtest of rule") == 1


def test_the_jobs_group_lost_mid_run_still_ends_the_job_done(world, worker, tmp_path):
    """The jobs stream's group destroyed while a long job runs (on a cluster the stream and
    the job's hash sit on different nodes, and one can be flushed alone): the claim renewal
    meets NOGROUP, yet the run's outcome is written, not a failure, and the worker goes on."""
    rule, mine = long_job(world)
    worker("bt-a")
    key = on_running(world, queuer(world, rule, "nogroup-001"), lambda: world.xgroup_destroy(
        keys.BACKTEST_JOBS, keys.BACKTEST_GROUP))
    assert result_of(world, key, timeout_s=60)["count"] == len(replayed(rule, mine))
    assert world.hget(key, "attempts") == "1"
    assert "internal error" not in (tmp_path / "bt-a-0.log").read_text()
