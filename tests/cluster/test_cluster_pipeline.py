"""The whole pipeline on a three-node Redis Cluster: simulator -> ingest -> two engine shards
(their tick streams on different nodes) -> notifier -> a loopback webhook, and the web's
/healthz and /api/quotes, every process given only ``redis+cluster://`` and one node's
address. Rules are added while the shards run (live rule changes), one shard is killed with
SIGKILL mid-stream and restarted (it redoes its unacked ticks: the same alert ids), and at the
end every alert in ``sa:alerts`` reached the webhook exactly once, each shard's ticks were
acked by its checkpoints, and ``stormalert status`` found the heartbeats on every node."""

from __future__ import annotations

import http.server
import json
import re
import signal
import subprocess
import sys
import threading
import typing
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import orjson
import pytest
import redis

from proto import bus, keys, store
from proto.rules import Rule
from tests.cluster.conftest import Cluster
from tests.helpers import ROOT, spawn, stop, wait_for
from tests.ingest.procs import running_sim
from tests.web.conftest import login
from tests.web.server import WebServer

DASHBOARD = "https://dash.test"
ALERT_LINK = re.compile(re.escape(DASHBOARD) + r"/alerts/([^\s\"]+)")
USER, PASSWORD = "asha", "a long password"
SYMBOLS = ("NSE:INFY", "NSE:RELIANCE", "NSE:TCS", "NSE:NIFTY 50")
ENV = {
    "STORMALERT_STATS_INTERVAL_S": "1",
    "STORMALERT_ENGINE_CHECKPOINT_S": "0.5",
    "STORMALERT_NOTIFY_MAX_PER_MINUTE": "0",  # every alert sent alone: one message each
    "STORMALERT_DASHBOARD_URL": DASHBOARD,
}


class Hook(http.server.BaseHTTPRequestHandler):
    received: typing.ClassVar[list[str]] = []  # alert ids, one per message
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        message = orjson.loads(body).get("message", "")
        with Hook.lock:
            Hook.received += [unquote(m) for m in ALERT_LINK.findall(message)]
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[int]:
    Hook.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


class Procs:
    """The processes of the pipeline, their logs in one folder; all stopped at the end."""

    def __init__(self, url: str, log_dir: Path) -> None:
        self.url, self.log_dir = url, log_dir
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *module_args: str) -> None:
        self.running[name] = spawn(list(module_args), self.url,
                                   self.log_dir / f"{name}-{len(self.running)}.log", ENV)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.log_dir.glob("*.log")))

    def check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.running.items() if p.poll() is not None}
        assert not dead, f"exited: {dead}\n{self.logs()}"

    def stop_all(self) -> None:
        for proc in self.running.values():
            stop(proc)


def alert_ids(r: redis.Redis) -> list[str]:
    return [f["id"] for _id, f in r.xrange(keys.ALERTS)]


def test_the_pipeline_runs_end_to_end_on_a_cluster(cluster: Cluster, webhook: int,
                                                   tmp_path: Path) -> None:
    url = cluster.url
    r = bus.connect(url)
    assert {keys.shard_for(s, 2) for s in SYMBOLS} == {0, 1}
    assert r.get_node_from_key(keys.ticks(0)) != r.get_node_from_key(keys.ticks(1))  # type: ignore[attr-defined]
    procs = Procs(url, tmp_path)
    web = WebServer(url, tmp_path)
    with running_sim("--symbols", "40", "--rate", "400") as sim_url:
        try:
            procs.start("ingest", "ingest", "--feed", "sim", "--shards", "2",
                        "--sim-url", sim_url)
            for shard in ("0", "1"):
                procs.start(f"engine-{shard}", "engine", "--shard", shard, "--shards", "2")
            procs.start("notify", "notify")
            web.start()
            wait_for(lambda: r.exists(keys.INSTRUMENTS) and all(
                r.exists(keys.heartbeat(f"engine-{i}")) for i in (0, 1)), timeout_s=30,
                what="the instrument master and both shards")

            store.add_user(r, USER, PASSWORD)
            store.add_channel(r, USER, f"json://127.0.0.1:{webhook}/hook")
            rules = [store.add_rule(r, Rule.model_validate(
                {"user": USER, "symbol": sym, "kind": "window_pct", "frequency": "every",
                 "cooldown_s": 1, "params": {"pct": 0.0001, "window_s": 60,
                                             "direction": "either"}})) for sym in SYMBOLS]

            def alerts_by_shard() -> Counter[int]:
                return Counter(keys.shard_for(f["sym"], 2) for _id, f in r.xrange(keys.ALERTS))

            wait_for(lambda: min(alerts_by_shard()[i] for i in (0, 1)) >= 3, timeout_s=30,
                     what="alerts from both shards")
            procs.check_alive()
            # Mid-stream: engine-0 dies without a word and comes back, redoing what it
            # had not acked; its alerts of those ticks must not be written or sent again.
            procs.running["engine-0"].send_signal(signal.SIGKILL)
            procs.running["engine-0"].wait(10)
            procs.start("engine-0", "engine", "--shard", "0", "--shards", "2")
            before = alerts_by_shard()
            wait_for(lambda: alerts_by_shard()[0] >= before[0] + 3, timeout_s=30,
                     what="alerts of the restarted shard")

            with httpx.Client(base_url=web.url, timeout=10) as client:
                health = client.get("/healthz")
                assert health.status_code == 200 and health.json() == {"redis": "ok"}
                assert login(client, USER, PASSWORD).is_redirect
                quotes = client.get("/api/quotes").json()["quotes"]
                assert set(SYMBOLS) <= set(quotes), sorted(quotes)[:10]

            status = subprocess.run(
                [sys.executable, "-m", "deploy", "status", "--json"], cwd=ROOT, timeout=60,
                env={"STORMALERT_REDIS_URL": url, "PATH": "/usr/bin:/bin"},
                capture_output=True, text=True)
            stop(procs.running.pop("ingest"))  # no more ticks: the rest drains
            everything = wait_for(
                lambda: (ids := alert_ids(r)) and set(Hook.received) == set(ids) and ids,
                timeout_s=30, what="every alert at the webhook")
            for shard in (0, 1):
                wait_for(lambda s=shard: r.xpending(keys.ticks(s), keys.ENGINE_GROUP)[
                    "pending"] == 0, timeout_s=15, what=f"shard {shard}'s ticks acked")
            wait_for(lambda: r.xpending(keys.ALERTS, keys.NOTIFY_GROUP)["pending"] == 0,
                     timeout_s=15, what="every alert acked by the notifier")
            procs.check_alive()
        except BaseException:
            print(procs.logs())
            raise
        finally:
            web.kill()
            procs.stop_all()

    assert len(everything) == len(set(everything)), "an alert written twice"
    duplicates = {i: n for i, n in Counter(Hook.received).items() if n > 1}
    assert not duplicates, f"sent more than once: {duplicates}"
    assert {a.split(":")[0] for a in everything} == {rule.id for rule in rules}
    for alert_id in everything:
        record = json.loads(str(next(iter(r.hgetall(keys.delivery(alert_id)).values()))))
        assert record["status"] == "sent", record
    assert status.returncode == 0, status.stderr
    beats = orjson.loads(status.stdout)["processes"]
    heartbeat_nodes = {r.get_node_from_key(keys.heartbeat(n)).port  # type: ignore[attr-defined]
                       for n in beats}
    assert {"engine-0", "engine-1", "notify", "web", "ingest-sim"} <= set(beats), sorted(beats)
    assert len(heartbeat_nodes) >= 2  # the scan went to more than one node
