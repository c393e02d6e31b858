"""End to end: ``stormalert up`` on the simulator with its embedded Redis; a user, a webhook
channel and a rule added with the CLI; the alert lands in sa:alerts and at a local HTTP
webhook (apprise json://); then a clean stop within 10 s that leaves no process behind."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
import typing
from pathlib import Path

import orjson
import pytest
import redis

from deploy.embedded_redis import free_port
from proto import keys
from tests.helpers import wait_for


class Hook(http.server.BaseHTTPRequestHandler):
    received: typing.ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Hook.received.append(orjson.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def webhook():
    Hook.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def test_up_end_to_end(tmp_path, webhook):
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORMALERT_")}
    env.update(PYTHONUNBUFFERED="1", STORMALERT_SIM_RATE="400")
    port = free_port()
    log = (tmp_path / "up.out").open("w+")
    up = subprocess.Popen([sys.executable, "-m", "deploy", "up", "--port", str(port)], cwd=tmp_path,
                          env=env, stdout=log, stderr=subprocess.STDOUT, text=True)

    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "deploy", *args], cwd=tmp_path, env=env,
                              input=stdin, capture_output=True, text=True, timeout=60)

    def output() -> str:
        return (tmp_path / "up.out").read_text()

    try:
        wait_for(lambda: "Dashboard: http://127.0.0.1:" in output() or up.poll() is not None,
                 timeout_s=90, what="the dashboard line")
        assert up.poll() is None, output()
        assert f"Dashboard: http://127.0.0.1:{port}" in output()
        assert "Demo login: demo / " in output()
        url = (tmp_path / "var" / "redis.url").read_text().strip()
        r = redis.Redis.from_url(url, decode_responses=True)
        assert r.config_get("appendonly")["appendonly"] == "yes"

        assert cli("user", "add", "trader", stdin="trader password\n").returncode == 0
        added = cli("user", "channel", "trader", f"json://127.0.0.1:{webhook}/hook")
        assert added.returncode == 0, added.stderr
        rule = cli("rule", "add", "--user", "trader", "--json", orjson.dumps(
            {"symbol": "NSE:INFY", "kind": "window_pct", "frequency": "once",
             "params": {"pct": 0.01, "window_s": 60, "direction": "either"}}).decode())
        assert rule.returncode == 0, rule.stderr
        rule_id = rule.stdout.strip()

        def my_alert():
            return [f for _id, f in r.xrange(keys.ALERTS) if f["rule"] == rule_id]

        alert = wait_for(my_alert, timeout_s=60, what="the rule's alert in sa:alerts")[0]
        assert alert["user"] == "trader" and alert["sym"] == "NSE:INFY"
        delivered = wait_for(lambda: [m for m in Hook.received if "NSE:INFY" in str(m)],
                             timeout_s=30, what="the webhook delivery")
        assert len(delivered) == 1
        status = cli("status")
        assert status.returncode == 0 and "engine-0" in status.stdout and "notify" in status.stdout
        # A child that dies is restarted (and logged), the others carry on.
        engine_pid = orjson.loads(r.get(keys.heartbeat("engine-0")))["pid"]
        os.kill(engine_pid, signal.SIGKILL)
        wait_for(lambda: (b := r.get(keys.heartbeat("engine-0")))
                 and orjson.loads(b)["pid"] != engine_pid, timeout_s=30, what="engine restart")
        assert "engine-0 exited with code -9; restarting" in output()
        procs = children_of(up.pid)
        assert len(procs) >= 7, procs  # redis, sim, 2 engines, notify, web, ingest
    finally:
        started = time.monotonic()
        up.send_signal(signal.SIGINT)
        try:
            code = up.wait(15)
        except subprocess.TimeoutExpired:
            up.kill()
            raise
    assert time.monotonic() - started < 10, "up took more than 10 s to stop"
    assert code == 0, output()
    time.sleep(0.2)
    assert [p for p in procs if alive(p)] == [], output()
    assert not (tmp_path / "var" / "redis.url").exists()
