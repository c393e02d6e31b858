"""Benchmark (not collected by pytest): deliveries/s and alert→delivered latency of the
notifier to a loopback webhook, next to references measured on the same sink in the same
run: bare apprise sends from 64 threads (what the notifier did before it sent webhooks
itself), raw posts from 64 tasks by notify.http11 (the ceiling of our way of sending), and
by httpx for comparison (its pool is why notify does not use it).

    .venv/bin/python -m tests.bench delivery [N]

Phase 1 publishes N alerts at once and times until the sink has N requests. Phase 2
publishes alerts at steady rates (STEADY_RATES), each stamped ``at`` when published, and
reads the latency every delivery record holds (alert ``at`` to the webhook's 2xx answer).
The sink is an asyncio HTTP/1.1 server in its own process, so it is not the bottleneck
(its own rate shows in the raw references). Storm control is off for the notifier (one
user's thousands of alerts a minute would be folded into digests). Uses
``STORMALERT_TEST_REDIS_URL`` when set, else a private embedded Redis (AOF off).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path

import httpx
import orjson
import redis

from deploy.embedded_redis import EmbeddedRedis
from notify import http11
from notify.render import Message
from notify.send import Channel, send_blocking, warm_up
from proto import keys, store
from proto.events import Alert
from tests.bench.common import machine, percentile

ROOT = Path(__file__).resolve().parents[2]
CONCURRENCY = 64
# Alerts/s of the latency phases, each LATENCY_S long: a busy market minute, and half the
# 1000/s goal (the machine is shared, so a rate near capacity would measure queueing).
STEADY_RATES = (200.0, 500.0)
LATENCY_S = 5
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
BODY = orjson.dumps({"version": "1.0", "title": "title", "message": "body",
                     "attachments": [], "type": "info"})


async def _serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            count: Synchronized[int]) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length, close = 0, False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            if length:
                await reader.readexactly(length)
            count.value += 1  # one writer (this process), read by the parent
            writer.write(OK)
            if close:
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def _sink_main(sock: socket.socket, count: Synchronized[int]) -> None:
    async def main() -> None:
        server = await asyncio.start_server(
            lambda r, w: _serve_connection(r, w, count), sock=sock, backlog=1024)
        await server.serve_forever()

    asyncio.run(main())


def start_sink() -> tuple[BaseProcess, int, Synchronized[int]]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    count: Synchronized[int] = multiprocessing.Value("q", 0, lock=False)  # type: ignore[assignment]
    proc = multiprocessing.get_context("fork").Process(
        target=_sink_main, args=(sock, count), daemon=True)
    proc.start()
    return proc, int(sock.getsockname()[1]), count


def _alert(i: int, tag: str) -> Alert:
    now_us = time.time_ns() // 1000
    return Alert(id=f"bench:{tag}:{i}", rule="bench", user="bench", sym="NSE:INFY",
                 kind="cross_above", ltp=1500.0 + i / 100, ts=now_us // 1000, rx=now_us - 500,
                 at=now_us, msg="crossed above 1500", ref={"level": 1500.0})


def _wait_count(count: Synchronized[int], target: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while count.value < target:
        if time.monotonic() > deadline:
            raise SystemExit(f"sink got {count.value} of {target} requests")
        time.sleep(0.002)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(r: redis.Redis, count: Synchronized[int], n: int) -> float:
    base = count.value
    pipe = r.pipeline(transaction=False)
    for alert in (_alert(i, "burst") for i in range(n)):
        pipe.xadd(keys.ALERTS, alert.to_fields())  # type: ignore[arg-type]
    started = time.monotonic()
    pipe.execute()
    _wait_count(count, base + n, 120)
    return n / (time.monotonic() - started)


def latency(r: redis.Redis, count: Synchronized[int], n: int, rate_per_s: float,
            cid: str) -> list[float]:
    """Publish ``n`` alerts at ``rate_per_s``; the latency in ms of each delivery record."""
    base = count.value
    started = time.monotonic()
    ids = []
    for i in range(n):
        pause_s = started + i / rate_per_s - time.monotonic()
        if pause_s > 0:
            time.sleep(pause_s)
        alert = _alert(i, f"steady{rate_per_s:g}")
        r.xadd(keys.ALERTS, alert.to_fields())  # type: ignore[arg-type]
        ids.append(alert.id)
    _wait_count(count, base + n, 60)
    time.sleep(0.2)  # the last records are written just after the sink answered
    pipe = r.pipeline(transaction=False)
    for alert_id in ids:
        pipe.hget(keys.delivery(alert_id), cid)
    return [float(orjson.loads(raw)["latency_ms"]) for raw in pipe.execute() if raw]


def bench_notifier(url: str, hook: str, count: Synchronized[int],
                   n: int) -> tuple[float, float, dict[float, list[float]]]:
    """Burst deliveries/s, the notifier's CPU µs per delivery in the burst (what it costs,
    whatever else the shared machine runs), and the latencies per steady rate."""
    r = redis.Redis.from_url(url, decode_responses=True)
    r.flushdb()
    store.add_user(r, "bench", "bench-password")
    cid = store.add_channel(r, "bench", hook)
    env = {**os.environ, "STORMALERT_REDIS_URL": url, "STORMALERT_LOG_LEVEL": "WARNING",
           "STORMALERT_NOTIFY_MAX_PER_MINUTE": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "notify"], cwd=ROOT, env=env)
    try:
        while not r.exists(keys.heartbeat("notify")):
            time.sleep(0.05)
        time.sleep(0.5)  # group created, first read blocking
        cpu_before_s = cpu_s(proc.pid)
        rate = throughput(r, count, n)
        cpu_us = (cpu_s(proc.pid) - cpu_before_s) / n * 1e6
        latencies = {steady: latency(r, count, int(steady * LATENCY_S), steady, cid)
                     for steady in STEADY_RATES}
        return rate, cpu_us, latencies
    finally:
        proc.terminate()
        proc.wait(10)


def bench_bare_apprise(hook: str, count: Synchronized[int], n: int) -> float:
    warm_up()
    channel, message = Channel("c", hook, "default"), Message("title", "body")
    base = count.value
    started = time.monotonic()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        outcomes = list(pool.map(lambda _i: send_blocking(channel, message, 5.0), range(n)))
    assert all(o.ok for o in outcomes) and count.value - base == n
    return n / (time.monotonic() - started)


def _posts(post: Callable[[bytes], Awaitable[None]], n: int) -> float:
    """Posts/s of ``n`` posts from ``CONCURRENCY`` tasks."""

    async def main() -> float:
        todo = iter(range(n))

        async def worker() -> None:
            for _ in todo:
                await post(BODY)

        started = time.monotonic()
        async with asyncio.TaskGroup() as tg:
            for _ in range(CONCURRENCY):
                tg.create_task(worker())
        return n / (time.monotonic() - started)

    return asyncio.run(main())


def bench_raw_httpx(port: int, count: Synchronized[int], n: int) -> float:
    client: httpx.AsyncClient | None = None

    async def post(body: bytes) -> None:
        nonlocal client
        if client is None:  # created on the loop that uses it
            client = httpx.AsyncClient(limits=httpx.Limits(max_connections=CONCURRENCY))
        reply = await client.post(f"http://127.0.0.1:{port}/bench", content=body,
                                  headers={"Content-Type": "application/json"})
        reply.raise_for_status()

    base = count.value
    rate = _posts(post, n)
    assert count.value - base == n
    return rate


def bench_raw_http11(port: int, count: Synchronized[int], n: int) -> float:
    client = http11.Client(CONCURRENCY)

    async def post(body: bytes) -> None:
        reply = await client.request("POST", f"http://127.0.0.1:{port}/bench", body=body,
                                     headers={"Content-Type": "application/json"})
        assert reply.status == 200

    base = count.value
    rate = _posts(post, n)
    assert count.value - base == n
    return rate


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    n = int(argv[0]) if argv else 3000
    sink, port, count = start_sink()
    hook = f"json://127.0.0.1:{port}/bench"
    url = os.environ.get("STORMALERT_TEST_REDIS_URL")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            embedded = None if url else EmbeddedRedis(Path(tmp), appendonly=False).start()
            try:
                rate, cpu_us, latencies = bench_notifier(
                    url or embedded.url, hook, count, n)  # type: ignore[union-attr]
            finally:
                if embedded:
                    embedded.stop()
        bare = bench_bare_apprise(hook, count, min(n, 2000))
        raw = bench_raw_http11(port, count, n)
        raw_httpx = bench_raw_httpx(port, count, min(n, 2000))
    finally:
        sink.terminate()
    print(f"# delivery benchmark on {machine()}")
    print(f"notifier, 1 json:// channel per alert, burst of {n}: {rate:,.0f} deliveries/s, "
          f"{cpu_us:,.0f} us CPU each ({1e6 / cpu_us:,.0f} per CPU-second)")
    for steady, ms in latencies.items():
        print(f"notifier, {len(ms)} alerts at {steady:,.0f}/s: alert->delivered "
              f"p50 {percentile(ms, 0.5):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms, "
              f"max {max(ms):.1f} ms")
    print(f"reference, bare apprise sends, {CONCURRENCY} threads: {bare:,.0f} sends/s "
          f"(notifier/apprise {rate / bare:.2f})")
    print(f"reference, raw posts by notify.http11, {CONCURRENCY} tasks: {raw:,.0f} posts/s "
          f"(notifier/raw {rate / raw:.2f})")
    print(f"reference, raw httpx posts, {CONCURRENCY} tasks: {raw_httpx:,.0f} posts/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
