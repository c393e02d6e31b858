"""Small helpers shared by tests that start real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def spawn(module_args: list[str], redis_url: str, log_path: Path,
          env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``python -m <module_args>`` with the test Redis, output to a log file."""
    full_env = {**os.environ, "STORMALERT_REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1",
                **(env or {})}
    log = log_path.open("wb")
    proc = subprocess.Popen([sys.executable, "-m", *module_args], cwd=ROOT, env=full_env,
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    return proc


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> int:
    """Signal (SIGTERM by default) and wait; returns the exit code (kills and fails loudly if
    it hangs)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"process {proc.args} did not stop within {timeout_s} s") from None


def wait_for(predicate: Callable[[], T | None], timeout_s: float = 15.0, what: str = "") -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}")


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux: /proc/PID/task/PID/children)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
