"""``--check`` of every process kind, against the real processes: each one's check passes
while it runs (its heartbeat is fresh) and fails, with one line saying why, once it stopped,
when its heartbeat is stale, and when Redis cannot be reached."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import redis

from deploy.embedded_redis import free_port
from proto import keys
from tests.helpers import ROOT, spawn, stop, wait_for
from tests.ingest.procs import running_sim

# The check each compose service, systemd watchdog and Kubernetes probe runs.
CHECKS = {
    "ingest-sim": ["ingest", "--check", "--feed", "sim"],
    "engine-1": ["engine", "--check", "--shard", "1"],
    "notify": ["notify", "--check"],
    "web": ["web", "--check"],
    "backtest": ["backtest", "--check"],
}


def check(argv: list[str], redis_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``stormalert KIND --check ...`` as a subprocess (the ``stormalert`` entry point)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STORMALERT_")}
    return subprocess.run([sys.executable, "-m", "deploy", *argv], cwd=ROOT,
                          env={**clean, "STORMALERT_REDIS_URL": redis_url, **env},
                          capture_output=True, text=True, timeout=30)


def check_all(redis_url: str) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every kind's check, run side by side."""
    with ThreadPoolExecutor(len(CHECKS)) as pool:
        done = {name: pool.submit(check, argv, redis_url) for name, argv in CHECKS.items()}
        return {name: future.result() for name, future in done.items()}


def test_each_process_passes_its_check_while_it_runs_and_fails_after(
        r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    before = check_all(redis_url)
    for name, done in before.items():
        assert done.returncode == 1, (name, done)
        assert done.stdout.strip() == f"{name}: no heartbeat (sa:hb:{name} is absent)"
    with running_sim("--symbols", "5", "--rate", "20") as sim_url:
        procs = [
            spawn(["ingest", "--feed", "sim", "--shards", "2", "--sim-url", sim_url],
                  redis_url, tmp_path / "ingest.log"),
            # The shard index from the environment, as a Kubernetes StatefulSet sets it.
            spawn(["engine", "--shards", "2"], redis_url, tmp_path / "engine.log",
                  {"STORMALERT_SHARD": "1"}),
            spawn(["notify"], redis_url, tmp_path / "notify.log"),
            spawn(["web", "--port", str(free_port())], redis_url, tmp_path / "web.log"),
            spawn(["engine.backtest", "--shards", "2"], redis_url, tmp_path / "backtest.log"),
        ]
        try:
            wait_for(lambda: all(r.exists(keys.heartbeat(n)) for n in CHECKS), 30,
                     "every heartbeat")
            for name, done in check_all(redis_url).items():
                assert done.returncode == 0, (name, done)
                assert done.stdout.startswith(f"{name}: alive (heartbeat "), done.stdout
            # Another shard's heartbeat is not this one's.
            assert check(["engine", "--check", "--shard", "0"], redis_url).returncode == 1
        finally:
            codes = {p.args[2]: stop(p) for p in procs}
    assert set(codes.values()) == {0}, codes
    # A stopped process takes its heartbeat with it.
    for name, done in check_all(redis_url).items():
        assert done.returncode == 1 and "no heartbeat" in done.stdout, (name, done)
    assert r.get(keys.SHARDS) == "2"  # recorded by the first of ingest and engine to start


def test_a_stale_heartbeat_and_an_unreachable_redis_fail_the_check(
        r: redis.Redis, redis_url: str) -> None:
    r.set(keys.heartbeat("engine-0"), orjson.dumps({"at": time.time() - 40}), ex=15)
    done = check(["engine", "--check"], redis_url, STORMALERT_SHARD="0")
    assert done.returncode == 1
    assert re.fullmatch(r"engine-0: heartbeat is 4\d\.\d s old \(more than 15 s\)\n", done.stdout)
    r.set(keys.heartbeat("engine-0"), orjson.dumps({"at": time.time()}), ex=15)
    assert check(["engine", "--check"], redis_url, STORMALERT_SHARD="0").returncode == 0
    down = f"redis://127.0.0.1:{free_port()}/0"
    done = check(["ingest", "--check", "--feed", "kite"], down)  # no Kite key needed
    assert done.returncode == 1
    assert done.stdout.startswith(f"ingest-kite: cannot reach Redis at {down}")
    assert len(done.stdout.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_each_notifier_checks_its_own_heartbeat(r: redis.Redis, redis_url: str,
                                                tmp_path: Path) -> None:
    """Several notifiers (a Kubernetes pod or a systemd instance each, with its own
    consumer name) beat under their own names, so a stopped one fails its check while the
    others pass theirs."""
    procs = {consumer: spawn(["notify", "--consumer", consumer], redis_url,
                             tmp_path / f"{consumer}.log")
             for consumer in ("notify-7f9c-a", "pod-b")}
    names = {"notify-7f9c-a": "notify-7f9c-a", "pod-b": "notify-pod-b"}
    try:
        wait_for(lambda: all(r.exists(keys.heartbeat(n)) for n in names.values()), 30,
                 "both heartbeats")
        assert stop(procs.pop("pod-b")) == 0
        gone = check(["notify", "--check", "--consumer", "pod-b"], redis_url)
        assert gone.returncode == 1 and gone.stdout.startswith("notify-pod-b: no heartbeat")
        alive = check(["notify", "--check"], redis_url,
                      STORMALERT_NOTIFY_CONSUMER="notify-7f9c-a")  # as the pod's env sets it
        assert alive.returncode == 0 and alive.stdout.startswith("notify-7f9c-a: alive")
        assert not r.exists(keys.heartbeat("notify"))  # the default name is nobody's here
    finally:
        for proc in procs.values():
            stop(proc)


def test_each_web_pod_checks_its_own_heartbeat(r: redis.Redis, redis_url: str,
                                               tmp_path: Path) -> None:
    """A web process with STORMALERT_WEB_INSTANCE (a pod's name) beats as web-INSTANCE;
    its check passes, and the plain ``web`` heartbeat, nobody's here, fails."""
    env = {"STORMALERT_WEB_INSTANCE": "web-5d8f-x"}
    proc = spawn(["web", "--port", str(free_port())], redis_url, tmp_path / "web.log", env)
    try:
        wait_for(lambda: r.exists(keys.heartbeat("web-5d8f-x")), 30, "the pod's heartbeat")
        own = check(["web", "--check"], redis_url, **env)
        assert own.returncode == 0 and own.stdout.startswith("web-5d8f-x: alive"), own
        assert check(["web", "--check"], redis_url).returncode == 1
    finally:
        assert stop(proc) == 0
