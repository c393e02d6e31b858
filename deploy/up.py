"""``stormalert up``: the whole system on one machine, as the README's ``make run`` starts it."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path

import redis
from pydantic import Field

from deploy.embedded_redis import EmbeddedRedis, EmbeddedRedisError, free_port
from deploy.supervisor import Child, Supervisor, wait_for_port
from proto import bus, keys, store, topology
from proto.rules import parse_rule
from proto.settings import BaseSettings

log = logging.getLogger("stormalert.up")

DEMO_RULES = [
    {"symbol": "NSE:INFY", "kind": "window_pct", "cooldown_s": 30,
     "params": {"pct": 0.15, "window_s": 60, "direction": "either"}},
    {"symbol": "NSE:RELIANCE", "kind": "trailing_pct", "cooldown_s": 30,
     "params": {"pct": 0.2, "direction": "down"}},
    {"symbol": "NSE:TCS", "kind": "trailing_pct", "cooldown_s": 30,
     "params": {"pct": 0.2, "direction": "up"}},
    {"symbol": "NSE:NIFTY 50", "kind": "window_pct", "cooldown_s": 60,
     "params": {"pct": 0.1, "window_s": 120, "direction": "either"}},
]


class UpSettings(BaseSettings):
    redis_url: str | None = None  # type: ignore[assignment]  # None: start an embedded Redis
    data_dir: Path = Path("var")
    feed: str = Field(default="sim", pattern="^(sim|kite|upstox)$")
    shards: int = Field(default=2, ge=1, le=64)
    port: int = Field(default=8000, ge=1, le=65535)
    host: str = "127.0.0.1"
    sim_symbols: int = 50
    sim_rate: float = 200.0


class AlreadyRunning(RuntimeError):
    pass


def check_port_free(host: str, port: int) -> None:
    """Refuse a dashboard port someone else holds, rather than print their URL as ours."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise RuntimeError(f"cannot use {host}:{port} for the dashboard ({exc.strerror}); "
                               "choose another with --port") from None


def claim_pidfile(path: Path) -> None:
    if path.exists():
        with contextlib.suppress(ValueError, OSError):
            pid = int(path.read_text().strip())
            os.kill(pid, 0)
            raise AlreadyRunning(f"stormalert up is already running here (pid {pid})")
    path.write_text(str(os.getpid()))


def children(s: UpSettings, sim_port: int | None) -> list[Child]:
    procs: list[Child] = []
    feed_env: dict[str, str] = {}
    if sim_port is not None:
        procs.append(Child("sim", ["ingest.sim", "--host", "127.0.0.1", "--port", str(sim_port),
                                   "--symbols", str(s.sim_symbols), "--rate", str(s.sim_rate)]))
        feed_env = {"STORMALERT_SIM_URL": f"http://127.0.0.1:{sim_port}"}
    procs += [Child(f"engine-{i}", ["engine", "--shard", str(i), "--shards", str(s.shards)])
              for i in range(s.shards)]
    # Test on history: the web's backtest jobs, off the shards' cores (it runs niced).
    procs.append(Child("backtest", ["engine.backtest", "--shards", str(s.shards)]))
    # notify's drain must end before the supervisor's grace period does
    procs.append(Child("notify", ["notify"], env={
        "STORMALERT_DASHBOARD_URL": f"http://{s.host}:{s.port}",
        "STORMALERT_NOTIFY_DRAIN_TIMEOUT_S": "5"}))
    procs.append(Child("web", ["web", "--host", s.host, "--port", str(s.port)]))
    procs.append(Child(f"ingest-{s.feed}", ["ingest", "--feed", s.feed, "--shards", str(s.shards)],
                       env=feed_env))
    return procs


def seed_demo(r: redis.Redis, timeout_s: float = 30.0) -> None:
    """On first start with an empty store: a demo user with a few rules, so alerts show soon."""
    if store.list_users(r):
        return
    deadline = time.monotonic() + timeout_s
    while not r.exists(keys.INSTRUMENTS) and time.monotonic() < deadline:
        time.sleep(0.2)
    password = secrets.token_urlsafe(9)
    store.add_user(r, "demo", password, admin=True)
    for rule in DEMO_RULES:
        with contextlib.suppress(store.StoreError):
            store.add_rule(r, parse_rule(rule, user="demo"))
    print(f"Demo login: demo / {password}  (shown once; add users with `stormalert user add`)",
          flush=True)


def run(s: UpSettings) -> int:
    logging.basicConfig(level=s.log_level.upper(), format="%(asctime)s up %(message)s",
                        stream=sys.stderr)
    s.data_dir.mkdir(parents=True, exist_ok=True)
    pidfile = s.data_dir / "up.pid"
    try:
        claim_pidfile(pidfile)
    except AlreadyRunning as exc:
        print(f"stormalert up: {exc}", file=sys.stderr)
        return 1
    stop = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    embedded: EmbeddedRedis | None = None
    url_file = s.data_dir / "redis.url"
    sup: Supervisor | None = None
    try:
        check_port_free(s.host, s.port)
        if s.redis_url is None:
            embedded = EmbeddedRedis(s.data_dir / "redis").start()
            url = embedded.url
            url_file.write_text(url)
            log.info("embedded Redis on %s (AOF in %s)", url, s.data_dir / "redis")
        else:
            url = s.redis_url
        r = bus.connect(url)
        bus.check(r, url)
        topology.agree(r, s.shards)  # a different count needs `stormalert engine reshard`
        sim_port = free_port() if s.feed == "sim" else None
        env = {**os.environ, "STORMALERT_REDIS_URL": url, "PYTHONUNBUFFERED": "1"}
        sup = Supervisor(children(s, sim_port), env, s.data_dir / "log")
        sup.start_all()
        if sim_port is not None:
            wait_for_port("127.0.0.1", sim_port, 20, sup.children[0])
            seed_demo(r)
        web = next(c for c in sup.children if c.name == "web")
        wait_for_port(s.host, s.port, 30, web)
        print(f"Dashboard: http://{s.host}:{s.port}", flush=True)
        print(f"Logs: {s.data_dir / 'log'}/   Stop: Ctrl-C", flush=True)
        while not stop:
            sup.watch_once()
            time.sleep(0.2)
        return 0
    except (EmbeddedRedisError, bus.RedisUnavailable, RuntimeError, store.StoreError) as exc:
        print(f"stormalert up: {exc}", file=sys.stderr)
        return 1
    finally:
        if sup is not None:
            sup.stop_all()
        if embedded is not None:
            embedded.stop()
            url_file.unlink(missing_ok=True)
        pidfile.unlink(missing_ok=True)
        log.info("stopped")
