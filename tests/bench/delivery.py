"""Benchmark (not collected by pytest): alerts/s the notifier delivers to a loopback webhook,
next to the reference of bare apprise sends from a thread pool on the same machine.

    .venv/bin/python -m tests.bench.delivery [N]

Uses ``STORMALERT_TEST_REDIS_URL`` when set, else a private embedded Redis (AOF off).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis

from deploy.embedded_redis import EmbeddedRedis
from notify.render import Message
from notify.send import Channel, send_blocking, warm_up
from proto import keys, store
from proto.events import Alert
from tests.bench.common import machine

ROOT = Path(__file__).resolve().parents[2]


class _Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    count = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with _Sink.lock:
            _Sink.count += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


def _alerts(n: int) -> list[Alert]:
    now_us = time.time_ns() // 1000
    return [Alert(id=f"bench:{i}", rule="bench", user="bench", sym="NSE:INFY",
                  kind="cross_above", ltp=1500.0 + i / 100, ts=now_us // 1000, rx=now_us,
                  at=now_us, msg="bench", ref={"level": 1500.0}) for i in range(n)]


def bench_notifier(url: str, hook: str, n: int) -> float:
    r = redis.Redis.from_url(url, decode_responses=True)
    r.flushdb()
    store.add_user(r, "bench", "bench-password")
    store.add_channel(r, "bench", hook)
    env = {**os.environ, "STORMALERT_REDIS_URL": url, "STORMALERT_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "notify"], cwd=ROOT, env=env)
    try:
        while not r.exists(keys.heartbeat("notify")):
            time.sleep(0.05)
        time.sleep(0.5)  # group created, first read blocking
        _Sink.count = 0
        started = time.monotonic()
        pipe = r.pipeline(transaction=False)
        for alert in _alerts(n):
            pipe.xadd(keys.ALERTS, alert.to_fields())  # type: ignore[arg-type]
        pipe.execute()
        while _Sink.count < n:
            time.sleep(0.01)
        return n / (time.monotonic() - started)
    finally:
        proc.terminate()
        proc.wait(10)


def bench_bare_apprise(hook: str, n: int, threads: int = 64) -> float:
    warm_up()
    channel, message = Channel("c", hook, "default"), Message("title", "body")
    _Sink.count = 0
    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _i: send_blocking(channel, message, 5.0), range(n)))
    return n / (time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    n = int(argv[0]) if argv else 2000
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"json://127.0.0.1:{server.server_address[1]}/bench"
    url = os.environ.get("STORMALERT_TEST_REDIS_URL")
    with tempfile.TemporaryDirectory() as tmp:
        embedded = None if url else EmbeddedRedis(Path(tmp), appendonly=False).start()
        try:
            notifier = bench_notifier(url or embedded.url, hook, n)  # type: ignore[union-attr]
        finally:
            if embedded:
                embedded.stop()
    bare = bench_bare_apprise(hook, n)
    print(f"# delivery benchmark on {machine()}")
    print(f"notifier, 1 json:// channel per alert: {notifier:,.0f} alerts/s ({n} alerts)")
    print(f"reference, bare apprise sends, 64 threads: {bare:,.0f} sends/s")
    print(f"ratio: {notifier / bare:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
