"""``python -m web`` as a real server process, for tests that need a real socket (event
streams, shutdown, a browser)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from deploy.embedded_redis import free_port

__all__ = ["WebServer", "free_port", "wait_for"]

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 15.0

# Fast pushes and heartbeats keep the tests short; sign-in is not rate-limited for them.
TEST_ENV = {
    "STORMALERT_QUOTES_INTERVAL_S": "0.2",
    "STORMALERT_HEARTBEAT_INTERVAL_S": "0.5",
    "STORMALERT_STATS_INTERVAL_S": "3600",
    "STORMALERT_LOGIN_ATTEMPTS_PER_MINUTE": "1000",
}


def wait_for(condition: Callable[[], object], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


class WebServer:
    """One ``python -m web`` process; its output goes to a file (a pipe nobody reads
    could fill up and stall it)."""

    def __init__(self, redis_url: str, log_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._redis_url = redis_url
        self._log_path = log_dir / f"web-{self.port}-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WebServer:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("STORMALERT_") and k != "JWT_SECRET"}
        env.update(TEST_ENV, STORMALERT_REDIS_URL=self._redis_url)
        with self._log_path.open("wb") as log:  # the child keeps its own copy of the fd
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "web", "--port", str(self.port)], cwd=ROOT, env=env,
                stdout=log, stderr=subprocess.STDOUT)
        if not wait_for(self._healthy, START_TIMEOUT_S):
            self.proc.kill()
            pytest.fail(f"python -m web did not start: {self.output()}")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"python -m web exited with {self.proc.returncode}: {self.output()}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=0.5).status_code == 200
        except httpx.TransportError:
            return False

    def terminate(self, timeout_s: float = 10.0) -> int:
        """SIGTERM, as a supervisor stops it; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def output(self) -> str:
        return self._log_path.read_text(errors="replace")
