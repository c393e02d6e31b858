"""Web benchmark: dashboard render time, and live alerts over 200 concurrent event streams.

Figures, against a real ``python -m web`` process and a private Redis:
- the dashboard page (a signed-in user with the default watchlist, quotes and 50 alerts in
  the feed): time to answer, p50/p99 over sequential requests; reference in the same run:
  ``/healthz`` on the same server (the framework's and the socket's own cost);
- live alerts over ``/events``: 200 concurrent streams (20 for each of 10 users) while
  alerts are written to ``sa:alerts`` at a steady rate; the latency from the XADD to the
  event read by the client (each alert reaches its user's 20 streams), p50/p99/max;
  reference in the same run: the same with one stream. Goal: p99 ≤ 100 ms.

The clients run in this process on the same two cores as the server: what they cost is in
the figures, so these are upper bounds of what the web adds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import orjson
import redis

from deploy.embedded_redis import EmbeddedRedis, free_port
from proto import keys, store
from proto.events import Alert, Tick, quote_json
from tests.bench.common import machine, percentile
from web.session import COOKIE

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "bench password 1"


def start_web(url: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STORMALERT_")},
           "STORMALERT_REDIS_URL": url, "STORMALERT_STATS_INTERVAL_S": "3600",
           "STORMALERT_LOGIN_ATTEMPTS_PER_MINUTE": "1000", "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "web", "--port", str(port)], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"python -m web did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)


def sign_in(base: str, name: str) -> str:
    """The session cookie of ``name``, through the login form."""
    with httpx.Client(base_url=base) as client:
        page = client.get("/login").text
        token = page.split('name="_csrf_token" value="', 1)[1].split('"', 1)[0]
        response = client.post("/login", data={"username": name, "password": PASSWORD,
                                               "_csrf_token": token}, follow_redirects=False)
        if response.status_code != 303:
            raise RuntimeError(f"sign-in of {name} failed: {response.status_code}")
        return str(client.cookies[COOKIE])


def seed(r: redis.Redis, users: list[str]) -> None:
    for name in users:
        store.add_user(r, name, PASSWORD)
    now_ms = int(time.time() * 1000)
    for sym, ltp in (("NSE:NIFTY 50", 24100.5), ("NSE:INFY", 1500.25), ("NSE:RELIANCE", 2900.0),
                     ("NSE:TCS", 4000.0)):
        tick = Tick(sym=sym, tok="1", src="sim", ltp=ltp, vol=1200, ts=now_ms,
                    rx=now_ms * 1000, pc=ltp * 0.99)
        r.hset(keys.QUOTES, sym, quote_json(tick))
        r.hset(keys.INSTRUMENTS, sym, orjson.dumps({"tok": "1", "src": "sim", "name": sym}))
    for n in range(50):
        write_alert(r, users[0], f"history {n}")


def write_alert(r: redis.Redis, user: str, msg: str) -> None:
    now_us = time.time_ns() // 1000
    alert = Alert(id=f"bench-{user}-{now_us}", rule=f"r-{user}", user=user, sym="NSE:INFY",
                  kind="cross_above", ltp=1501.5, ts=now_us // 1000, rx=now_us, at=now_us,
                  msg=msg)
    r.xadd(keys.ALERTS, alert.to_fields())


def timed_gets(base: str, cookie: str, path: str, n: int) -> list[float]:
    times = []
    with httpx.Client(base_url=base, cookies={COOKIE: cookie}) as client:
        for i in range(n + 10):
            started = time.perf_counter()
            response = client.get(path, headers={"Accept": "text/html"})
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                raise RuntimeError(f"GET {path}: {response.status_code}")
            if i >= 10:  # warm-up left out
                times.append(elapsed * 1000)
    return times


async def sse_client(host: str, port: int, cookie: str, latencies: list[float],
                     ready: asyncio.Event, counter: list[int], stop: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET /events HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
                 f"Cookie: {COOKIE}={cookie}\r\n\r\n".encode())
    await writer.drain()
    status = await reader.readline()
    if b" 200 " not in status:
        raise RuntimeError(f"/events answered {status!r}")
    while (await reader.readline()) not in (b"\r\n", b""):
        pass  # headers
    counter[0] += 1
    if counter[0] == counter[1]:
        ready.set()
    event = b""
    try:
        while not stop.is_set():
            line = await reader.readline()
            if not line:
                break
            if line.startswith(b"event:"):
                event = line[6:].strip()
            elif line.startswith(b"data:") and event == b"alert":
                received_ns = time.time_ns()
                msg = orjson.loads(line[5:])["msg"]
                if msg.startswith("live "):
                    latencies.append((received_ns - int(msg[5:])) / 1e6)
            elif line in (b"\n", b"\r\n"):
                event = b""
    finally:
        writer.close()


def writer_thread(url: str, users: list[str], rate: float, seconds: float,
                  go: threading.Event) -> threading.Thread:
    def run() -> None:
        r = redis.Redis.from_url(url, decode_responses=True)
        go.wait()
        n = int(rate * seconds)
        started = time.monotonic()
        for i in range(n):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            write_alert(r, users[i % len(users)], f"live {time.time_ns()}")
        r.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


async def stream_latency(base: str, url: str, cookies: dict[str, str], per_user: int,
                         rate: float, seconds: float) -> tuple[list[float], int]:
    """Open ``per_user`` streams for each user, write alerts round-robin at ``rate``; the
    delivery latencies and how many deliveries were expected."""
    host, port = base.removeprefix("http://").split(":")
    latencies: list[float] = []
    ready, stop = asyncio.Event(), asyncio.Event()
    counter = [0, per_user * len(cookies)]
    tasks = [asyncio.create_task(sse_client(host, int(port), cookie, latencies, ready, counter,
                                            stop))
             for cookie in cookies.values() for _ in range(per_user)]
    await asyncio.wait_for(ready.wait(), 60)
    await asyncio.sleep(1.0)  # every stream is past its first read
    go = threading.Event()
    users = list(cookies)
    thread = writer_thread(url, users, rate, seconds, go)
    go.set()
    expected = int(rate * seconds) * per_user
    deadline = time.monotonic() + seconds + 10
    while len(latencies) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    thread.join()
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return latencies, expected


def report(label: str, lat: list[float], expected: int) -> None:
    print(f"{label}: {len(lat)}/{expected} deliveries, latency p50={percentile(lat, 0.5):.1f} ms "
          f"p99={percentile(lat, 0.99):.1f} ms max={max(lat):.1f} ms")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench web")
    p.add_argument("--clients", type=int, default=200, help="concurrent event streams")
    p.add_argument("--users", type=int, default=10)
    p.add_argument("--rate", type=float, default=20.0, help="alerts written per second")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--renders", type=int, default=200)
    args = p.parse_args(argv)
    print(f"# web benchmark on {machine()}")
    users = [f"trader{n}" for n in range(args.users)]
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as server:
        r = redis.Redis.from_url(server.url, decode_responses=True)
        seed(r, users)
        proc, base = start_web(server.url, Path(tmp) / "web.log")
        try:
            cookies = {name: sign_in(base, name) for name in users}
            page = timed_gets(base, cookies[users[0]], "/", args.renders)
            floor = timed_gets(base, cookies[users[0]], "/healthz", args.renders)
            print(f"dashboard render: p50={percentile(page, 0.5):.1f} ms "
                  f"p99={percentile(page, 0.99):.1f} ms over {len(page)} requests; reference "
                  f"/healthz on the same server p50={percentile(floor, 0.5):.1f} ms "
                  f"p99={percentile(floor, 0.99):.1f} ms")
            one = {users[0]: cookies[users[0]]}
            lat1, exp1 = asyncio.run(stream_latency(base, server.url, one, 1, args.rate / 4,
                                                    args.seconds / 2))
            report("reference, 1 event stream", lat1, exp1)
            per_user = max(1, args.clients // len(users))
            lat, expected = asyncio.run(stream_latency(base, server.url, cookies, per_user,
                                                       args.rate, args.seconds))
            report(f"{per_user * len(users)} concurrent event streams ({len(users)} users, "
                   f"{args.rate:g} alerts/s, each to its user's {per_user} streams)", lat,
                   expected)
            met = bool(lat) and percentile(lat, 0.99) <= 100 and len(lat) == expected
            print(f"  goal (every delivery, p99 ≤ 100 ms): {'met' if met else 'NOT met'}")
        except Exception:
            print((Path(tmp) / "web.log").read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            r.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
