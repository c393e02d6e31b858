"""``stormalert up``: start Redis (embedded unless STORMALERT_REDIS_URL is set), the simulator,
ingest, the engine shards, the notifier and the web server as child processes; restart a
child that dies (with backoff); stop everything within 10 s on Ctrl-C or SIGTERM.

Children are started as ``python -m <package>``; the supervisor never imports them. Each child
gets PR_SET_PDEATHSIG so even a SIGKILLed supervisor leaves no orphans.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("stormalert.up")

STOP_GRACE_S = 7.0
BACKOFF_CAP_S = 30.0
HEALTHY_AFTER_S = 30.0


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the supervisor dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    name: str
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start: float = 0.0
    env: dict[str, str] = field(default_factory=dict)

    def start(self, base_env: dict[str, str], log_dir: Path) -> None:
        out = (log_dir / f"{self.name}.log").open("ab")
        cmd = [sys.executable, "-m", *self.args]
        self.proc = subprocess.Popen(cmd, env={**base_env, **self.env}, stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=subprocess.STDOUT,
                                     preexec_fn=_die_with_parent)
        out.close()
        self.started_at = time.monotonic()
        log.info("started %s (pid %d): %s", self.name, self.proc.pid, " ".join(self.args))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Supervisor:
    def __init__(self, children: list[Child], env: dict[str, str], log_dir: Path) -> None:
        self.children = children
        self.env = env
        self.log_dir = log_dir
        self.stopping = False
        log_dir.mkdir(parents=True, exist_ok=True)

    def start_all(self) -> None:
        for child in self.children:
            child.start(self.env, self.log_dir)

    def watch_once(self) -> None:
        """Restart children that died, with capped exponential backoff."""
        now = time.monotonic()
        for child in self.children:
            if child.alive() or self.stopping:
                continue
            if child.next_start == 0.0:
                code = child.proc.returncode if child.proc else None
                if now - child.started_at > HEALTHY_AFTER_S:
                    child.restarts = 0
                delay = min(BACKOFF_CAP_S, 0.5 * 2 ** child.restarts)
                child.next_start = now + delay
                log.warning("%s exited with code %s; restarting in %.1f s (see %s)", child.name,
                            code, delay, self.log_dir / f"{child.name}.log")
            elif now >= child.next_start:
                child.restarts += 1
                child.next_start = 0.0
                child.start(self.env, self.log_dir)

    def stop_all(self) -> None:
        """SIGTERM everyone, wait, SIGKILL the stragglers."""
        self.stopping = True
        for child in reversed(self.children):
            if child.alive():
                assert child.proc is not None
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for child in self.children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", child.name)
                child.proc.kill()
                child.proc.wait()


def wait_for_port(host: str, port: int, timeout_s: float, child: Child | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child is not None and not child.alive():
            raise RuntimeError(f"{child.name} exited during start; see its log")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {host}:{port} after {timeout_s:.0f} s")
