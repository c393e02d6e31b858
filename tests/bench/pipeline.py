"""End-to-end pipeline benchmark: simulator → ingest → 2 engine shards → sa:alerts.

Figures: sustained ticks/s through the engines at the simulator's top rate, and p50/p99
tick→alert latency (ingest receive → alert written) at 10k ticks/s. Reference in the same
run: redis-benchmark's pipelined XADD rate on the same Redis server.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import redis

from deploy.embedded_redis import EmbeddedRedis, free_port
from proto import keys, store
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
    if not store.get_user(r, "bench"):
        store.add_user(r, "bench", "bench password")
    pipe = r.pipeline(transaction=False)
    for i in range(count):
        sym = symbols[i % len(symbols)]
        kind = i % 3
        body = ({"kind": "window_pct", "params": {"pct": 0.05, "window_s": 30}} if kind == 0 else
                {"kind": "trailing_pct", "params": {"pct": 0.1}} if kind == 1 else
                {"kind": "change_pct", "params": {"pct": 50}})
        rule = parse_rule({"id": f"b{i}", "symbol": sym, **body}, user="bench")
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

    def start_rest(self) -> None:
        for i in range(self.shards):
            self.procs[f"engine-{i}"] = spawn(
                ["engine", "--shard", str(i), "--shards", str(self.shards)], self.env,
                self.workdir / f"engine-{i}.log")
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


def measure_throughput(r: redis.Redis, shards: int, seconds: float) -> float:
    time.sleep(4.0)  # warm up, and let heartbeats (every 2 s) move
    n0, t0 = engine_ticks(r, shards)
    time.sleep(seconds)
    n1, t1 = engine_ticks(r, shards)
    return (n1 - n0) / max(t1 - t0, 1e-6)


def measure_latency(r: redis.Redis, seconds: float) -> tuple[list[float], float]:
    time.sleep(3.0)
    start_ms = int(time.time() * 1000)
    n0, t0 = engine_ticks(r, 2)
    time.sleep(seconds)
    n1, t1 = engine_ticks(r, 2)
    entries = r.xrange(keys.ALERTS, min=f"{start_ms}-0", max="+")
    lat = [(int(f["at"]) - int(f["rx"])) / 1000 for _id, f in entries]
    return lat, (n1 - n0) / max(t1 - t0, 1e-6)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench pipeline")
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--symbols", type=int, default=500)
    p.add_argument("--rules", type=int, default=3000)
    p.add_argument("--max-rate", type=float, default=300_000)
    args = p.parse_args(argv)
    print(f"# pipeline benchmark on {machine()}")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as server:
        r = redis.Redis.from_url(server.url, decode_responses=True)
        ceiling = redis_benchmark_xadd(server.port)
        print(f"reference: redis-benchmark XADD (8 fields, -P 128, AOF everysec): "
              f"{ceiling:,.0f} entries/s" if ceiling else "reference: redis-benchmark not found")
        pipe = Pipeline(Path(tmp), server.url, shards=2)
        try:
            pipe.start_sim(args.max_rate, args.symbols)
            pipe.start_rest()
            deadline = time.monotonic() + 30
            while not r.exists(keys.INSTRUMENTS) and time.monotonic() < deadline:
                time.sleep(0.2)
            symbols = sorted(r.hkeys(keys.INSTRUMENTS))
            seed_rules(r, args.rules, symbols)
            # the shards load rules at start: restart them so they arm the seeded rules
            for i in range(2):
                pipe.stop(f"engine-{i}")
            pipe.procs.update({f"engine-{i}": spawn(
                ["engine", "--shard", str(i), "--shards", "2"], pipe.env,
                Path(tmp) / f"engine-{i}.log") for i in range(2)})
            rate = measure_throughput(r, 2, args.seconds)
            ingest = beat(r, "ingest-sim")
            print(f"throughput: sim at up to {args.max_rate:,.0f}/s, {len(symbols)} symbols, "
                  f"{args.rules} rules: {rate:,.0f} ticks/s evaluated by 2 shards "
                  f"(ingest drops so far: {ingest.get('counters', {}).get('drops', 0)})")
            pipe.restart_sim(10_000, args.symbols)
            lat, got_rate = measure_latency(r, args.seconds)
            if lat:
                print(f"latency at {got_rate:,.0f} ticks/s: {len(lat)} alerts, tick→alert "
                      f"p50={percentile(lat, 0.5):.2f} ms p99={percentile(lat, 0.99):.2f} ms "
                      f"max={max(lat):.2f} ms")
            else:
                print("latency: no alerts fired during the run")
        finally:
            pipe.stop_all()
            with contextlib.suppress(redis.RedisError):
                r.close()
    return 0
