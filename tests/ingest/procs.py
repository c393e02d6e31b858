"""Start the simulator and the ingest worker as real subprocesses for tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

import orjson
import redis

from tests.helpers import ROOT, stop, wait_for

__all__ = ["ROOT", "heartbeat", "running_sim", "start_ingest", "start_sim", "stop", "wait_for"]


def start_sim(port: int = 0, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """A running simulator and its base URL (read from its one stdout line)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingest.sim", "--port", str(port), "--log-level", "WARNING",
         *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("sim listening on http://"):
        stop(proc)
        err = proc.stderr.read() if proc.stderr else ""
        raise AssertionError(f"sim did not start: {line!r} {err}")
    return proc, line.removeprefix("sim listening on ")


@contextlib.contextmanager
def running_sim(*args: str) -> Iterator[str]:
    """A simulator on a free port for the ``with`` block; its base URL."""
    proc, url = start_sim(0, *args)
    try:
        yield url
    finally:
        stop(proc)


def start_ingest(redis_url: str, sim_url: str, shards: int,
                 **env: str) -> subprocess.Popen[str]:
    environment = {**os.environ, "STORMALERT_REDIS_URL": redis_url,
                   "STORMALERT_STATS_INTERVAL_S": "2", **env}
    return subprocess.Popen(
        [sys.executable, "-m", "ingest", "--feed", "sim", "--shards", str(shards),
         "--sim-url", sim_url], cwd=ROOT, env=environment, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def heartbeat(r: redis.Redis, process: str) -> dict | None:
    raw = r.get(f"sa:hb:{process}")
    return orjson.loads(raw) if raw else None
