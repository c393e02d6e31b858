"""The backtest worker is a process kind of its own: ``stormalert up`` starts it beside the
shards (with their count, to find a symbol's tick stream) and ``stormalert backtest`` runs it."""

from __future__ import annotations

import subprocess
import sys

from deploy.up import UpSettings, children
from tests.helpers import ROOT


def test_up_starts_one_worker_with_the_shard_count() -> None:
    procs = children(UpSettings(shards=3), None)
    [worker] = [c for c in procs if c.name == "backtest"]
    assert worker.args == ["engine.backtest", "--shards", "3"]


def test_the_command_runs_the_worker() -> None:
    out = subprocess.run([sys.executable, "-m", "deploy", "backtest", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--consumer" in out.stdout and "backtest" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "engine.backtest", "--shards", "0"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "shards" in bad.stderr
