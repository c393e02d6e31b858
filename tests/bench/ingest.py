"""Ingest throughput: the simulator at a high rate → ``python -m ingest --feed sim`` → a private
Redis. Figures: sustained ticks/s written (the worker's heartbeat counters), drops, and the
ingest process's CPU (cores, from /proc). References in the same run: redis-benchmark's
pipelined XADD rate on the same server, and the raw rate the simulator sends to a minimal
WebSocket client that only counts packets (the most any ingest could see).

Run: ``.venv/bin/python -m tests.bench ingest [--rate R] [--symbols N] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import io
import os
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson
import redis
from websockets.asyncio.client import connect

from deploy.embedded_redis import EmbeddedRedis, free_port
from proto import keys
from tests.bench.common import machine, redis_benchmark_xadd
from tests.bench.pipeline import beat, cpu_seconds, spawn

TOKENS_PER_CONNECTION = 3000


def tokens(base_url: str) -> list[int]:
    req = urllib.request.Request(base_url + "/instruments",
                                 headers={"Authorization": "token bench:bench"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        text = gzip.decompress(resp.read()).decode()
    return [int(row["instrument_token"]) for row in csv.DictReader(io.StringIO(text))]


async def count_packets(ws_url: str, group: list[int], mode: str, seconds: float,
                        totals: list[int]) -> None:
    """Subscribe like ingest does and only count: packets and bytes."""
    async with connect(f"{ws_url}/?api_key=bench&access_token=bench", max_size=2**22,
                       ping_interval=None) as ws:
        await ws.send(orjson.dumps({"a": "subscribe", "v": group}).decode())
        await ws.send(orjson.dumps({"a": "mode", "v": [mode, group]}).decode())
        await asyncio.sleep(1.0)  # settle: the snapshot after subscribing is not a rate
        ends = time.monotonic() + seconds
        while (left := ends - time.monotonic()) > 0:
            try:
                async with asyncio.timeout(left):
                    frame = await ws.recv()
            except TimeoutError:
                break
            if isinstance(frame, bytes) and len(frame) > 1:
                totals[0] += int.from_bytes(frame[:2], "big")
                totals[1] += len(frame)


def raw_rate(base_url: str, all_tokens: list[int], mode: str, seconds: float) -> tuple[float,
                                                                                        float]:
    """Ticks/s and MB/s the simulator delivers to clients that do nothing but count."""
    ws_url = "ws" + base_url.removeprefix("http")
    groups = [all_tokens[i:i + TOKENS_PER_CONNECTION]
              for i in range(0, len(all_tokens), TOKENS_PER_CONNECTION)]
    totals = [0, 0]

    async def run() -> None:
        async with asyncio.TaskGroup() as tg:
            for group in groups:
                tg.create_task(count_packets(ws_url, group, mode, seconds, totals))

    asyncio.run(run())
    return totals[0] / seconds, totals[1] / seconds / 1e6


def measure_ingest(r: redis.Redis, pid: int, seconds: float) -> dict[str, float]:
    """Rates from two heartbeats ``seconds`` apart (heartbeats move every 2 s)."""
    first = beat(r, "ingest-sim")
    cpu0 = cpu_seconds(pid)
    time.sleep(seconds)
    last = beat(r, "ingest-sim")
    cpu1 = cpu_seconds(pid)
    dt = max(last.get("at", 0) - first.get("at", 0), 1e-6)
    c0, c1 = first.get("counters", {}), last.get("counters", {})
    return {name: (c1.get(name, 0) - c0.get(name, 0)) / dt
            for name in ("ticks", "written", "drops", "frames", "entries")} | {
        "cpu": (cpu1 - cpu0) / seconds}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench ingest")
    p.add_argument("--rate", type=float, default=200_000)
    p.add_argument("--symbols", type=int, default=9000)
    p.add_argument("--mode", choices=("ltp", "quote", "full"), default="full")
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args(argv)
    print(f"# ingest benchmark on {machine()}")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as server:
        r = redis.Redis.from_url(server.url, decode_responses=True)
        ceiling = redis_benchmark_xadd(server.port)
        print(f"reference: redis-benchmark XADD (8 fields, -P 128, AOF everysec): "
              f"{ceiling:,.0f} entries/s" if ceiling else "reference: redis-benchmark not found")
        env = {**os.environ, "STORMALERT_REDIS_URL": server.url, "PYTHONUNBUFFERED": "1",
               "STORMALERT_STATS_INTERVAL_S": "3600", "STORMALERT_KITE_MODE": args.mode}
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        sim = spawn(["ingest.sim", "--port", str(port), "--rate", str(args.rate), "--symbols",
                     str(args.symbols), "--seed", "7", "--log-level", "WARNING"], env,
                    Path(tmp) / "sim.log")
        ingest: subprocess.Popen[bytes] | None = None
        try:
            time.sleep(2.0)
            all_tokens = tokens(base_url)
            sent, mb = raw_rate(base_url, all_tokens, args.mode, args.seconds)
            print(f"reference: sim → counting client ({args.mode} mode, {len(all_tokens)} "
                  f"symbols, asked {args.rate:,.0f}/s): {sent:,.0f} ticks/s, {mb:.1f} MB/s")
            ingest = spawn(["ingest", "--feed", "sim", "--shards", str(args.shards)],
                           {**env, "STORMALERT_SIM_URL": base_url}, Path(tmp) / "ingest.log")
            deadline = time.monotonic() + 30
            while not beat(r, "ingest-sim").get("connected") and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(3.0)
            got = measure_ingest(r, ingest.pid, args.seconds)
            sim_cpu = ""
            print(f"sim → ingest → Redis ({args.shards} shards): {got['written']:,.0f} ticks/s "
                  f"written of {got['ticks']:,.0f}/s decoded, drops {got['drops']:,.0f}/s, "
                  f"{got['written'] / max(got['entries'], 1):.0f} ticks/entry; "
                  f"ingest CPU {got['cpu']:.2f} cores{sim_cpu}")
            lengths = sum(r.xlen(keys.ticks(i)) for i in range(args.shards))
            print(f"  stream entries now: {lengths:,}; "
                  f"ticks/s per ingest core: {got['written'] / max(got['cpu'], 1e-6):,.0f}")
        finally:
            for proc in (ingest, sim):
                if proc is not None:
                    proc.terminate()
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
            r.close()
    return 0
