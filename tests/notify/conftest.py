"""Fixtures for notify: a real loopback webhook receiver, a real SMTP server, users with
channels stored through proto.store, and the notifier as a real subprocess."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from notify.send import warm_up
from proto import keys, store
from proto.events import Alert
from tests.notify.apiserver import ApiServer, serving
from tests.webhook import Hit as Hit  # re-exported: the notify tests import them from here
from tests.webhook import Webhook as Webhook
from tests.webhook import answered as answered
from tests.webhook import kill_at_the_gate as kill_at_the_gate
from tests.webhook import serving_webhook

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    with serving_webhook() as hook:
        yield hook


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


@pytest.fixture
def api() -> Iterator[ApiServer]:
    """A loopback server acting as a service's API (Telegram, WhatsApp, Twilio, webhooks)."""
    warm_up()
    with serving() as server:
        yield server
