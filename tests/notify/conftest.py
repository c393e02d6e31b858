"""Fixtures for notify: a real loopback webhook receiver, a real SMTP server, users with
channels stored through proto.store, and the notifier as a real subprocess."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from notify.policy import DIGEST_REF
from notify.send import warm_up
from proto import keys, store
from proto.events import Alert
from tests.notify.apiserver import ApiServer, serving

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float
    held: bool = False  # arrived while the gate was closed: answered only once it opened
    answered: bool = False  # the whole answer was written

    def alert_id(self) -> str:
        """The alert id in the message's dashboard link (its last line), or a digest's id
        from its ``Digest id:`` line (a digest links to the dashboard's alert list)."""
        message = str(self.body.get("message", ""))
        _head, sep, alert_id = message.rsplit("\n", 1)[-1].partition("/alerts/")
        if sep:
            return alert_id
        refs = [line.removeprefix(DIGEST_REF) for line in message.splitlines()
                if line.startswith(DIGEST_REF)]
        assert len(refs) == 1, f"no alert link nor digest id in {self.body!r}"
        return refs[0]


@dataclass
class Webhook:
    """Records every POST. Paths starting /fail answer 500; /slow answer after ``slow_s``;
    /gate answer when ``gate`` is set (it is, until a test clears it)."""

    port: int = 0
    hits: list[Hit] = field(default_factory=list)
    slow_s: float = 1.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    gate: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        return f"json://127.0.0.1:{self.port}{path}"

    def at(self, prefix: str) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if h.path.startswith(prefix)]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    hook.gate.set()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            held = self.path.startswith("/gate") and not hook.gate.is_set()
            hit = Hit(self.path, dict(self.headers), orjson.loads(raw), time.monotonic(), held)
            with hook.lock:
                hook.hits.append(hit)
            if self.path.startswith("/slow"):
                time.sleep(hook.slow_s)
            if held:
                hook.gate.wait()
            # Telegram's and WhatsApp's plugins read a JSON answer.
            answer = b'{"ok": true, "result": {}, "messages": [{"id": "m1"}]}'
            try:
                self.send_response(500 if self.path.startswith("/fail") else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                self.wfile.flush()
                hit.answered = True
            except OSError:  # a held request whose sender was killed meanwhile
                self.close_connection = True

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    hook.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="webhook", daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        hook.gate.set()
        server.shutdown()
        server.server_close()


def free_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_user(r: redis.Redis, name: str, urls: dict[str, str]) -> dict[str, str]:
    """Create a user with channels {url: tag}; returns {url: channel id}."""
    store.add_user(r, name, PASSWORD)
    return {url: store.add_channel(r, name, url, tag) for url, tag in urls.items()}


_seq = iter(range(1, 1_000_000))


def make_alert(user: str, **over: Any) -> Alert:
    n = next(_seq)
    now_us = time.time_ns() // 1000
    base: dict[str, Any] = dict(
        id=f"r{n}:1700000000000-{n}:0", rule=f"r{n}", user=user, sym="NSE:INFY",
        kind="cross_above", ltp=1523.4, ts=now_us // 1000 - 5, rx=now_us - 2500,
        at=now_us, msg="crossed above 1520", channels=["default"],
        ref={"level": 1520.0, "prev": 1519.5})
    base.update(over)
    return Alert(**base)


def publish(r: redis.Redis, alert: Alert) -> str:
    return str(r.xadd(keys.ALERTS, alert.to_fields()))  # type: ignore[arg-type]


def wait_until(pred: Callable[[], Any], timeout_s: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or pred}")
        time.sleep(0.02)


def dead_letters(r: redis.Redis) -> list[dict[str, str]]:
    """The fields of every sa:alerts:dead entry, oldest first."""
    return [dict(fields) for _id, fields in r.xrange(keys.ALERTS_DEAD)]  # type: ignore[union-attr,misc,arg-type]


def pending_count(r: redis.Redis) -> int:
    try:
        return int(r.xpending(keys.ALERTS, keys.NOTIFY_GROUP)["pending"])  # type: ignore[index]
    except redis.ResponseError:
        return -1  # no group yet


FAST_ENV = {
    "STORMALERT_NOTIFY_BACKOFF_BASE_S": "0.05",
    "STORMALERT_NOTIFY_BACKOFF_CAP_S": "0.2",
    "STORMALERT_NOTIFY_MAX_TRIES": "3",
    "STORMALERT_NOTIFY_SEND_TIMEOUT_S": "2",
    "STORMALERT_NOTIFY_BLOCK_MS": "200",
    "STORMALERT_NOTIFY_CLAIM_IDLE_MS": "1000",
    "STORMALERT_NOTIFY_CLAIM_INTERVAL_S": "0.3",
    "STORMALERT_NOTIFY_DRAIN_TIMEOUT_S": "5",
    "STORMALERT_DASHBOARD_URL": "http://dash.example",
    "STORMALERT_LOG_LEVEL": "INFO",
}


@dataclass
class NotifierProc:
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(5)

    def final_stats(self) -> dict[str, int]:
        match = re.search(r"final stats (.*)$", self.log(), re.MULTILINE)
        assert match, f"no final stats line in log:\n{self.log()}"
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)\(", match.group(1))}


@pytest.fixture
def notifier(r: redis.Redis, redis_url: str,
             tmp_path: Path) -> Iterator[Callable[..., NotifierProc]]:
    """Start ``python -m notify`` subprocesses; each is stopped at the end of the test."""
    started: list[NotifierProc] = []

    def start(consumer: str = "notify-1", redis_url_: str | None = None,
              **env: str) -> NotifierProc:
        log_path = tmp_path / f"{consumer}-{len(started)}.log"
        full_env = {**os.environ, **FAST_ENV, **env,
                    "STORMALERT_REDIS_URL": redis_url_ or redis_url}
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen([sys.executable, "-m", "notify", "--consumer", consumer],
                                    cwd=ROOT, env=full_env, stdout=log_file,
                                    stderr=subprocess.STDOUT)
        handle = NotifierProc(proc, log_path)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        if handle.proc.poll() is None:
            handle.proc.kill()
            handle.proc.wait(5)


def minute_start_us(minutes_ago: int) -> int:
    """Epoch µs of the start of the minute ``minutes_ago`` minutes before this one."""
    return (time.time_ns() // 60_000_000_000 - minutes_ago) * 60_000_000


def settled(r: redis.Redis) -> bool:
    """Every alert entry acked and no digest waiting."""
    try:
        lag = r.xinfo_groups(keys.ALERTS)[0]["lag"]  # type: ignore[index]
    except (redis.ResponseError, IndexError):
        return False
    return pending_count(r) == 0 and lag == 0 and r.zcard(keys.DIGESTS_DUE) == 0


def kill_at_the_gate(webhook: Webhook, proc: NotifierProc, r: redis.Redis,
                     cids: dict[str, str], after_hits: int = 0,
                     held: Callable[[Hit], bool] = lambda _hit: True) -> None:
    """kill -9 ``proc`` while its sends are piled up at the webhook's closed gate.

    ``cids``: the channel id of each gated path. Before the kill, every request that got
    through the gate has been answered and its delivery record says ``sent``, so the sender
    knows of it; requests held at the gate are answered only after the kill, to a dead
    sender, which therefore never learned they arrived: the one case where a receiver may
    see a message twice, which no sender can avoid. Tests count held hits apart.
    The kill waits for ``after_hits`` requests, then for a held one that ``held`` accepts."""
    wait_until(lambda: len(webhook.hits) >= after_hits, timeout_s=30, what="sends before kill")
    webhook.gate.clear()
    wait_until(lambda: any(h.held and held(h) for h in webhook.hits), timeout_s=30,
               what="sends held at the gate")

    def known_to_sender(hit: Hit) -> bool:
        raw = r.hget(keys.delivery(hit.alert_id()), cids[hit.path])
        return hit.answered and raw is not None and orjson.loads(raw)["status"] == "sent"  # type: ignore[arg-type]

    wait_until(lambda: all(h.held or known_to_sender(h) for h in webhook.at("/gate")),
               timeout_s=30, what="every answered send recorded by the sender")
    proc.kill()
    webhook.gate.set()


def answered(webhook: Webhook, prefix: str) -> Counter[str]:
    """Alert ids of the requests to ``prefix`` answered to a live sender, with counts."""
    return Counter(h.alert_id() for h in webhook.at(prefix) if not h.held)


@pytest.fixture
def api() -> Iterator[ApiServer]:
    """A loopback server acting as a service's API (Telegram, WhatsApp, Twilio, webhooks)."""
    warm_up()
    with serving() as server:
        yield server
