"""End-to-end pipeline benchmark: simulator → ingest → 2 engine shards → sa:alerts.

Figures: sustained ticks/s through the engines at the simulator's top rate, the engines'
own capacity draining pre-filled streams from a cold start, and p50/p99 tick→alert latency
(ingest receive → alert written) at 10k ticks/s with the checkpoint figures of that phase
(fork pause, child write time, Redis commands over 2 ms). Reference in the same run:
redis-benchmark's pipelined XADD rate on the same Redis server.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import redis

from deploy.embedded_redis import EmbeddedRedis, free_port
from proto import keys, store
from proto.events import Tick, encode_tick_batch
from proto.rules import parse_rule
from tests.bench.common import machine, percentile, redis_benchmark_xadd

ROOT = Path(__file__).resolve().parents[2]


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def beat(r: redis.Redis, process: str) -> dict:
    raw = r.get(keys.heartbeat(process))
    return orjson.loads(raw) if raw else {}


def engine_ticks(r: redis.Redis, shards: int) -> tuple[int, float]:
    """Ticks evaluated so far by all shards, and the mean time of those heartbeats."""
    beats = [beat(r, f"engine-{i}") for i in range(shards)]
    total = sum(b.get("counters", {}).get("ticks", 0) for b in beats)
    return total, sum(b.get("at", 0.0) for b in beats) / shards


def seed_rules(r: redis.Redis, count: int, symbols: list[str]) -> None:
    """Rules of the three stateful kinds spread over the symbols; thresholds a random walk
    crosses now and then, so alerts flow without flooding."""
    if not store.get_user(r, "bench"):
        store.add_user(r, "bench", "bench password")
    bodies = [
        {"kind": "window_pct", "cooldown_s": 10, "params": {"pct": 0.5, "window_s": 60}},
        {"kind": "trailing_pct", "cooldown_s": 10, "params": {"pct": 0.5}},
        {"kind": "change_pct", "params": {"pct": 50}},
    ]
    pipe = r.pipeline(transaction=False)
    for i in range(count):
        rule = parse_rule({"id": f"b{i}", "symbol": symbols[i % len(symbols)],
                           **bodies[i % len(bodies)]}, user="bench")
        pipe.hset(keys.RULES, rule.id, rule.to_json())
        pipe.sadd(keys.user_rules("bench"), rule.id)
    pipe.execute()


class Pipeline:
    def __init__(self, workdir: Path, url: str, shards: int) -> None:
        self.workdir, self.url, self.shards = workdir, url, shards
        self.env = {**os.environ, "STORMALERT_REDIS_URL": url, "PYTHONUNBUFFERED": "1",
                    "STORMALERT_STATS_INTERVAL_S": "3600"}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.sim_port = free_port()

    def start_sim(self, rate: float, symbols: int) -> None:
        self.procs["sim"] = spawn(["ingest.sim", "--port", str(self.sim_port), "--rate", str(rate),
                                   "--symbols", str(symbols), "--seed", "7"], self.env,
                                  self.workdir / "sim.log")
        time.sleep(1.0)

    def start_engines(self) -> None:
        for i in range(self.shards):
            self.procs[f"engine-{i}"] = spawn(
                ["engine", "--shard", str(i), "--shards", str(self.shards)], self.env,
                self.workdir / f"engine-{i}.log")

    def start_ingest(self) -> None:
        feed_env = {**self.env, "STORMALERT_SIM_URL": f"http://127.0.0.1:{self.sim_port}"}
        self.procs["ingest"] = spawn(["ingest", "--feed", "sim", "--shards", str(self.shards)],
                                     feed_env, self.workdir / "ingest.log")

    def restart_sim(self, rate: float, symbols: int) -> None:
        self.stop("sim")
        self.start_sim(rate, symbols)

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def measure_rate(r: redis.Redis, shards: int, seconds: float,
                 procs: dict[str, subprocess.Popen[bytes]]) -> tuple[float, str]:
    """Ticks/s evaluated by all shards over ``seconds``, from their heartbeat counters, and
    each process's CPU time per evaluated tick meanwhile (where a tick's CPU goes)."""
    time.sleep(4.0)  # warm up, and let heartbeats (every 2 s) move
    n0, t0 = engine_ticks(r, shards)
    cpu0 = {name: cpu_seconds(p.pid) for name, p in procs.items()}
    time.sleep(seconds)
    n1, t1 = engine_ticks(r, shards)
    cpu1 = {name: cpu_seconds(p.pid) for name, p in procs.items()}
    ticks = max(n1 - n0, 1)
    used = {name: (cpu1[name] - cpu0[name]) / ticks * 1e6 for name in procs}
    split = " ".join(f"{name}={us:.2f}" for name, us in used.items())
    return (n1 - n0) / max(t1 - t0, 1e-6), f"{sum(used.values()):.2f} µs ({split})"


def ingest_counters(r: redis.Redis) -> tuple[int, int, float]:
    """Ingest's ticks received and ticks dropped so far, and its beat's time."""
    b = beat(r, "ingest-sim")
    c = b.get("counters", {})
    return c.get("ticks", 0), c.get("drops", 0), b.get("at", 0.0)


def backlog(r: redis.Redis, shards: int) -> int:
    """Tick entries written but not yet read by the engines, from the streams' exact counters
    (``entries-added`` and the group's ``entries-read``; they hold even when MAXLEN trims)."""
    waiting = 0
    for i in range(shards):
        added = r.xinfo_stream(keys.ticks(i))["entries-added"]
        read = next((g["entries-read"] for g in r.xinfo_groups(keys.ticks(i))
                     if g["name"] == keys.ENGINE_GROUP), 0)
        waiting += added - (read or 0)
    return waiting


def probe(r: redis.Redis, pipe: Pipeline, redis_proc: subprocess.Popen[bytes], shards: int,
          rate: float, symbols: int, seconds: float) -> tuple[bool, str]:
    """Run the simulator at ``rate`` and tell whether the pipeline sustains it: the feed's
    ticks all arrive (ingest receives at least 95% of the rate asked: a simulator short of
    CPU sends fewer), none is dropped, and the engines keep up: their backlog grows by less
    than a second's worth of ticks over the probe."""
    # A fresh simulator and ingest (a restarted simulator alone meets ingest's growing
    # reconnect backoff), once the engines drained what an earlier probe left.
    pipe.stop("ingest")
    pipe.stop("sim")
    wait_drained(r, shards, 300)
    pipe.start_sim(rate, symbols)
    pipe.start_ingest()
    pid, deadline = pipe.procs["ingest"].pid, time.monotonic() + 60
    while beat(r, "ingest-sim").get("pid") != pid and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(4.0)  # connected, subscribed, queues settled
    procs = {**pipe.procs, "redis": redis_proc}
    got0, drops0, at0 = ingest_counters(r)
    n0, t0 = engine_ticks(r, shards)
    cpu0 = sum(cpu_seconds(p.pid) for p in procs.values())
    waiting0 = backlog(r, shards)
    time.sleep(seconds)
    grew = (backlog(r, shards) - waiting0) * BATCH_TICKS
    got1, drops1, at1 = ingest_counters(r)
    n1, t1 = engine_ticks(r, shards)
    cpu = (sum(cpu_seconds(p.pid) for p in procs.values()) - cpu0) / max(n1 - n0, 1) * 1e6
    span = max(at1 - at0, 1e-6)
    received, dropped = (got1 - got0) / span, drops1 - drops0
    evaluated = (n1 - n0) / max(t1 - t0, 1e-6)
    ok = received >= 0.95 * rate and dropped == 0 and grew < rate
    return ok, (f"{rate / 1000:,.0f}k: received {received:,.0f}/s, dropped {dropped:,}, "
                f"evaluated {evaluated:,.0f}/s, backlog {grew:+,} ticks, "
                f"CPU {cpu:.1f} µs a tick (all processes) "
                f"{'ok' if ok else 'not sustained'}")


def find_sustained(r: redis.Redis, pipe: Pipeline, redis_proc: subprocess.Popen[bytes],
                   shards: int, top: float, symbols: int, seconds: float,
                   probes: int) -> tuple[float, list[str]]:
    """The highest simulator rate (bisection between 0 and ``top``, ``probes`` runs) the
    pipeline sustains, and what each probe saw."""
    low, high, seen = 0.0, top, []
    for _ in range(probes):
        rate = round((low + high) / 2, -3) if low else round(high / 2, -3)
        ok, line = probe(r, pipe, redis_proc, shards, rate, symbols, seconds)
        seen.append(line)
        low, high = (rate, high) if ok else (low, rate)
    return low, seen


def engine_capacity(r: redis.Redis, shards: int, total: int, batch: int = 50) -> float:
    """Fill the tick streams while no engine reads, then time the shards draining them."""
    pipe = r.pipeline(transaction=False)
    now_ms = int(time.time() * 1000)
    symbols = sorted(r.hkeys(keys.INSTRUMENTS))
    by_shard: dict[int, list[Tick]] = {i: [] for i in range(shards)}
    rnd = random.Random(3)
    price = dict.fromkeys(symbols, 1000.0)
    for n in range(total):  # a random walk, so rules fire about as often as on a market
        sym = symbols[n % len(symbols)]
        price[sym] = round(price[sym] * (1 + rnd.gauss(0, 0.0008)), 2)
        by_shard[keys.shard_for(sym, shards)].append(Tick(
            sym=sym, tok="1", src="bench", ltp=price[sym], vol=n, ts=now_ms + n,
            rx=now_ms * 1000))
    for shard, ticks in by_shard.items():
        for i in range(0, len(ticks), batch):
            pipe.xadd(keys.ticks(shard), encode_tick_batch(ticks[i:i + batch]))
        pipe.execute()
    return total


def drained(r: redis.Redis, shards: int) -> bool:
    """Every entry delivered to the engines and acked. Not by the group's ``lag``: Redis
    cannot tell it (None) once MAXLEN has trimmed the stream."""
    for i in range(shards):
        last = r.xinfo_stream(keys.ticks(i))["last-generated-id"]
        for group in r.xinfo_groups(keys.ticks(i)):
            if group["name"] == keys.ENGINE_GROUP and (
                    group["last-delivered-id"] != last or group["pending"]):
                return False
    return True


def wait_drained(r: redis.Redis, shards: int, timeout_s: float) -> float:
    started = time.monotonic()
    while not drained(r, shards):
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"the engines did not drain their streams in {timeout_s:.0f} s")
        time.sleep(0.05)
    return time.monotonic() - started


def wait_ready(r: redis.Redis, procs: dict[str, subprocess.Popen[bytes]], shards: int,
               timeout_s: float = 180.0) -> None:
    """Until each engine process has beaten once (it has loaded its rules by then)."""
    deadline = time.monotonic() + timeout_s
    for i in range(shards):
        pid = procs[f"engine-{i}"].pid
        while beat(r, f"engine-{i}").get("pid") != pid:
            if time.monotonic() > deadline:
                raise RuntimeError(f"engine-{i} did not start in {timeout_s:.0f} s")
            time.sleep(0.1)


def checkpoint_figures(r: redis.Redis, shards: int) -> str:
    """What the checkpoints cost, from the engines' heartbeats."""
    out = []
    for i in range(shards):
        b = beat(r, f"engine-{i}")
        c = b.get("counters", {})
        out.append(f"engine-{i}: {c.get('checkpoints', 0)} written, "
                   f"{c.get('checkpoint_failures', 0)} failed, fork pause "
                   f"max {b.get('checkpoint_fork_max_ms', '-')} ms "
                   f"last {b.get('checkpoint_fork_ms', '-')} ms "
                   f"(CPU {b.get('checkpoint_fork_cpu_ms', '-')} ms), child "
                   f"{b.get('checkpoint_ms', '-')} ms (CPU {b.get('checkpoint_cpu_ms', '-')} ms), "
                   f"peak rss {b.get('rss_mb', '-')} MB")
    return "; ".join(out)


def slow_commands(r: redis.Redis, since_us: int) -> str:
    """Redis commands that ran over the slowlog threshold since ``since_us``, by name."""
    slow = [e for e in r.slowlog_get(128) if e["start_time"] * 1_000_000 >= since_us]
    if not slow:
        return "none"
    by_name: dict[str, list[float]] = {}
    for entry in slow:
        command = entry["command"]  # bytes when an argument is binary (the engines' state)
        name = (command.decode("latin-1") if isinstance(command, bytes) else command).split()[0]
        by_name.setdefault(name, []).append(entry["duration"] / 1000)
    return ", ".join(f"{name} {len(ms)}x max {max(ms):.1f} ms"
                     for name, ms in sorted(by_name.items(), key=lambda kv: -max(kv[1])))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def runqueue_seconds(pid: int) -> float:
    """Time the process's main thread spent runnable but waiting for a CPU (schedstat)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


def cpu_share(procs: dict[str, subprocess.Popen[bytes]], seconds: float) -> str:
    """What share of one core each process used while the caller slept ``seconds``, and
    (after the slash) what share of the time it waited for a core: on a shared machine
    that wait is latency no code of ours causes."""
    before = {name: (cpu_seconds(p.pid), runqueue_seconds(p.pid)) for name, p in procs.items()}
    time.sleep(seconds)
    return " ".join(f"{name}={(cpu_seconds(p.pid) - before[name][0]) / seconds:.2f}"
                    f"/{(runqueue_seconds(p.pid) - before[name][1]) / seconds:.2f}"
                    for name, p in procs.items())


BATCH_TICKS = 50  # ticks in a stream entry (ingest's STORMALERT_BATCH_MAX); backlog is in entries
ALERTS_PAGE = 500  # entries a read of sa:alerts takes; one read of all blocked Redis 20-100 ms


def read_alerts(r: redis.Redis, start_ms: int, end_ms: int) -> list[tuple[str, dict[str, str]]]:
    """The alerts written from ``start_ms`` to ``end_ms``, read in pages so the benchmark's
    own read does not stall the pipeline it measures (nor show as a slow Redis command)."""
    entries: list[tuple[str, dict[str, str]]] = []
    low = f"{start_ms}-0"
    while True:
        page = r.xrange(keys.ALERTS, min=low, max=f"{end_ms}-{2**64 - 1}", count=ALERTS_PAGE)
        entries += page
        if len(page) < ALERTS_PAGE:
            return entries
        low = f"({page[-1][0]}"


def measure_latency(r: redis.Redis, shards: int, seconds: float,
                    procs: dict[str, subprocess.Popen[bytes]]) -> tuple[list[float], float, str]:
    time.sleep(3.0)
    start_ms = int(time.time() * 1000)
    n0, t0 = engine_ticks(r, shards)
    cpu = cpu_share(procs, seconds)
    n1, t1 = engine_ticks(r, shards)
    entries = read_alerts(r, start_ms, int(time.time() * 1000))
    lat = [(int(f["at"]) - int(f["rx"])) / 1000 for _id, f in entries]
    # The alert id holds the tick's stream entry id, whose time is when Redis took the tick:
    # it splits the latency into ingest (receive → XADD) and engine (XADD → alert).
    split = [(int(f["id"].split(":")[1].split("-")[0]) - int(f["rx"]) / 1000) for _id, f in entries]
    cpu += (f"\n  ingest share (receive → tick in Redis): p50={percentile(split, 0.5):.2f} ms "
            f"p99={percentile(split, 0.99):.2f} ms (entry ids have ms resolution)") if split else ""
    return lat, (n1 - n0) / max(t1 - t0, 1e-6), cpu


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench pipeline")
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--symbols", type=int, default=9000)
    p.add_argument("--rules", type=int, default=100_000)
    p.add_argument("--rate", type=float, default=60_000, help="the simulator's rate, phase 1")
    p.add_argument("--fill", type=int, default=300_000, help="ticks for the engine-only phase")
    p.add_argument("--probes", type=int, default=5,
                   help="simulator rates tried to find the highest sustained one (0: skip)")
    args = p.parse_args(argv)
    shards = 2
    print(f"# pipeline benchmark on {machine()}")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as server:
        r = redis.Redis.from_url(server.url, decode_responses=True)
        ceiling = redis_benchmark_xadd(server.port)
        print(f"reference: redis-benchmark XADD (8 fields, -P 128, AOF everysec): "
              f"{ceiling:,.0f} entries/s" if ceiling else "reference: redis-benchmark not found")
        pipe = Pipeline(Path(tmp), server.url, shards=shards)
        try:
            pipe.start_sim(args.rate, args.symbols)
            pipe.start_ingest()
            deadline = time.monotonic() + 30
            # Ingest loads the master in parts: rules spread over a part would crowd fewer
            # symbols (a run once seeded 3000 of 9000).
            while r.hlen(keys.INSTRUMENTS) < args.symbols and time.monotonic() < deadline:
                time.sleep(0.2)
            symbols = sorted(r.hkeys(keys.INSTRUMENTS))
            seed_rules(r, args.rules, symbols)
            pipe.start_engines()
            wait_ready(r, pipe.procs, shards)
            assert server.proc is not None
            rate, per_tick = measure_rate(r, shards, args.seconds,
                                          {**pipe.procs, "redis": server.proc})
            counters = beat(r, "ingest-sim").get("counters", {})
            print(f"sim → ingest → {shards} shards → alerts: {rate:,.0f} ticks/s "
                  f"(sim asked for {args.rate:,.0f}/s over {len(symbols)} symbols, "
                  f"{args.rules} rules; ingest drops so far: {counters.get('drops', 0)})")
            print(f"  CPU per evaluated tick, all processes: {per_tick}")
            if args.probes:
                best, seen = find_sustained(r, pipe, server.proc, shards, args.rate, args.symbols,
                                            args.seconds, args.probes)
                print(f"highest sustained rate (no tick dropped, the engines keeping up): "
                      f"{best:,.0f} ticks/s" if best else
                      "highest sustained rate: none of the rates probed")
                for line in seen:
                    print(f"  probe {line}")

            pipe.stop("ingest")
            pipe.stop("sim")
            wait_drained(r, shards, 120)  # a backlog left now would count as capacity below
            for i in range(shards):
                pipe.stop(f"engine-{i}")
                # Fresh rule state: the fill's made-up prices against the last real ones (as
                # previous closes and window extremes) would fire most rules on every tick.
                r.delete(keys.engine_state(i))
            total = engine_capacity(r, shards, args.fill)
            started = time.monotonic()
            pipe.start_engines()
            wait_drained(r, shards, 600)
            spent = time.monotonic() - started
            print(f"engine capacity (streams filled first, {shards} shards incl. start-up): "
                  f"{total / spent:,.0f} ticks/s ({total:,} ticks in {spent:.2f} s)")

            for i in range(shards):  # fresh rule state: the filled ticks carried made-up times
                pipe.stop(f"engine-{i}")
                r.delete(keys.engine_state(i))
            pipe.start_engines()
            wait_ready(r, pipe.procs, shards)
            pipe.start_sim(10_000, args.symbols)
            pipe.start_ingest()
            r.config_set("slowlog-log-slower-than", 2000)
            since_us = int(time.time() * 1_000_000)
            lat, got_rate, cpu = measure_latency(r, shards, args.seconds,
                                                 {**pipe.procs, "redis": server.proc})
            if lat:
                print(f"latency at {got_rate:,.0f} ticks/s: {len(lat)} alerts, tick→alert "
                      f"p50={percentile(lat, 0.5):.2f} ms p99={percentile(lat, 0.99):.2f} ms "
                      f"max={max(lat):.2f} ms")
                print(f"  CPU (cores used / share of time waiting for a core) during it: {cpu}")
                print(f"  checkpoints: {checkpoint_figures(r, shards)}")
                print(f"  Redis commands over 2 ms meanwhile: {slow_commands(r, since_us)}")
            else:
                print("latency: no alerts fired during the run")
        finally:
            pipe.stop_all()
            with contextlib.suppress(redis.RedisError):
                r.close()
    return 0
