"""The system under test of the fault suite: a private Redis with AOF on, and everything else
started by ``stormalert up`` (its supervisor restarts a child that dies, as in production a
process manager would), fed by the simulator, notifying a loopback webhook.

Redis runs with ``appendfsync always``: the suite asserts that nothing is lost when Redis is
killed, and that must hold whatever the disk does. With ``everysec`` (production's setting)
a killed Redis process also keeps every write it acknowledged as long as the disk keeps up,
but when an fsync lags Redis postpones its AOF writes for up to 2 s while it goes on
answering, and a kill then loses acknowledged writes: a loss we would be measuring in the
disk of a shared CI machine, not in StormAlert. On this machine ``always`` costs little at
the suite's write rate (Redis groups the writes of one event-loop turn into one fsync).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import redis

from deploy.embedded_redis import EmbeddedRedis, free_port
from proto import keys, store
from proto.rules import parse_rule
from tests.helpers import alive, children, spawn, stop, wait_for
from tests.webhook import Webhook

SHARDS = 2
PROCESSES = ("ingest-sim", "engine-0", "engine-1", "notify", "web", "backtest")  # heartbeats
SYMBOLS = ("NSE:INFY", "NSE:RELIANCE", "NSE:TCS", "NSE:NIFTY 50")  # shard 0, 1, 1, 1
PASSWORD = "correct horse battery"
HEALTHY_WITHIN_S = 5.0

# Settings of every process (``stormalert up`` passes its environment on).
ENV = {
    "STORMALERT_SIM_SYMBOLS": "8",  # the four named symbols tick once a second or more
    "STORMALERT_SIM_RATE": "40",
    # Every alert is sent on its own: storm control folds bursts into digests, which the
    # notify tests cover; here one alert is one message per channel.
    "STORMALERT_NOTIFY_MAX_PER_MINUTE": "0",
    # The slow channel answers after 10 s: a try must be allowed longer than that, or every
    # send would time out, be retried and arrive twice (at-least-once, not a bug).
    "STORMALERT_NOTIFY_SEND_TIMEOUT_S": "15",
    # The feed stall outlasts ingest's silence window (5 s by default) in less wall time.
    "STORMALERT_HEARTBEAT_SILENCE_S": "2",
    "STORMALERT_LOG_LEVEL": "INFO",
}


@dataclass(frozen=True)
class Channel:
    user: str
    path: str  # on the webhook; every one under /gate so a notifier kill can hold them
    cid: str = ""


# Rules whose firings follow from the recorded ticks alone (no bars, no market hours).
RULES: dict[str, list[dict[str, object]]] = {
    "asha": [
        {"id": "asha-infy-trail", "symbol": "NSE:INFY", "kind": "trailing_pct",
         "params": {"pct": 0.05, "direction": "down"}},
        {"id": "asha-tcs-window", "symbol": "NSE:TCS", "kind": "window_pct",
         "params": {"pct": 0.07, "window_s": 10, "direction": "either"}},
    ],
    "ravi": [  # two channels: every alert goes to both
        {"id": "ravi-rel-trail", "symbol": "NSE:RELIANCE", "kind": "trailing_pct",
         "params": {"pct": 0.05, "direction": "up"}},
        {"id": "ravi-nifty-window", "symbol": "NSE:NIFTY 50", "kind": "window_pct",
         "params": {"pct": 0.05, "window_s": 10, "direction": "either"}},
    ],
    "sunil": [  # his channel is the one made slow
        {"id": "sunil-infy-trail", "symbol": "NSE:INFY", "kind": "trailing_pct",
         "params": {"pct": 0.03, "direction": "up"}},
    ],
}
CHANNEL_PATHS = {"asha": ["/gate/asha"], "ravi": ["/gate/ravi/1", "/gate/ravi/2"],
                 "sunil": ["/gate/slow/sunil"]}
SLOW_PREFIX = "/gate/slow"


@dataclass
class Stack:
    root: Path
    hook: Webhook
    redis_port: int = field(default_factory=free_port)
    web_port: int = field(default_factory=free_port)
    server: EmbeddedRedis | None = None
    up: subprocess.Popen[bytes] | None = None
    channels: list[Channel] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=5)

    # Redis -------------------------------------------------------------------------------

    def start_redis(self) -> None:
        self.server = EmbeddedRedis(self.root / "redis", self.redis_port,
                                    extra_args=["--appendfsync", "always"]).start()

    def kill_redis(self) -> None:
        """kill -9: no shutdown, no last AOF flush (none is needed with ``always``)."""
        assert self.server is not None and self.server.proc is not None
        self.server.proc.kill()
        self.server.proc.wait()

    # The system --------------------------------------------------------------------------

    def seed(self, r: redis.Redis) -> None:
        """Users, channels and rules before any process starts, so every rule sees every
        tick from the first (the oracle replays the streams from their start), and the
        engine's group on each tick stream from its first entry."""
        r.hset(keys.INSTRUMENTS, mapping={s: orjson.dumps({"tok": "1"}) for s in SYMBOLS})
        for user, bodies in RULES.items():
            store.add_user(r, user, PASSWORD)
            for path in CHANNEL_PATHS[user]:
                cid = store.add_channel(r, user, self.hook.url(path), "default")
                self.channels.append(Channel(user, path, cid))
            for body in bodies:
                store.add_rule(r, parse_rule(body, user=user))
        for shard in range(SHARDS):
            r.xgroup_create(keys.ticks(shard), keys.ENGINE_GROUP, id="0", mkstream=True)

    def start(self) -> None:
        self.start_redis()
        with self.client() as r:
            self.seed(r)
        data = self.root / "var"
        self.up = spawn(["deploy", "up", "--feed", "sim", "--shards", str(SHARDS),
                         "--port", str(self.web_port)], self.url, self.root / "up.log",
                        env={**ENV, "STORMALERT_DATA_DIR": str(data)})
        with self.client() as r:
            wait_for(lambda: all(r.exists(keys.heartbeat(p)) for p in PROCESSES)
                     and r.xlen(keys.ALERTS) > 0, timeout_s=60,
                     what=f"every process's heartbeat and a first alert (logs: {data / 'log'})")

    def stop_system(self) -> None:
        """SIGTERM to ``stormalert up``: it stops its children and waits for them."""
        if self.up is not None:
            stop(self.up, timeout_s=20)

    def stop(self) -> None:
        self.stop_system()
        if self.server is not None:
            self.server.stop()

    def exits(self, offset: int = 0) -> tuple[list[str], int]:
        """The children the supervisor saw exit, from its log after byte ``offset``:
        ``["engine-0 (code 1)", ...]``, and the log's end (the offset of the next call)."""
        log = (self.root / "up.log").read_bytes()
        found = re.findall(rb" up (\S+) exited with code (\S+);", log[offset:])
        return [f"{name.decode()} (code {code.decode()})" for name, code in found], len(log)

    def logs(self) -> Path:
        return self.root / "var" / "log"

    # Processes ---------------------------------------------------------------------------

    def pids(self) -> dict[str, int]:
        """The supervisor's children by name (``sim``, ``ingest-sim``, ``engine-0``, ...)."""
        assert self.up is not None
        found = {}
        for pid in children(self.up.pid):
            with contextlib.suppress(FileNotFoundError):
                name = child_name(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"))
                if name and alive(pid):
                    found[name] = pid
        return found

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        pid = self.pids()[name]
        os.kill(pid, sig)
        return pid

    def heartbeats(self, r: redis.Redis) -> dict[str, dict[str, object]]:
        with r.pipeline(transaction=False) as pipe:
            for name in PROCESSES:
                pipe.get(keys.heartbeat(name))
            raw = pipe.execute()
        return {name: orjson.loads(b) for name, b in zip(PROCESSES, raw, strict=True) if b}

    def wait_healthy(self, since: float, not_pids: frozenset[int] = frozenset(),
                     timeout_s: float = 30.0) -> float:
        """Seconds from ``since`` (epoch s) until every process has beaten after it, from a
        live process (and not from one of ``not_pids``, the killed ones). Waits at most
        ``timeout_s``: a slower recovery is returned (and fails the caller's assertion)."""
        deadline = time.monotonic() + timeout_s
        with self.client() as r:
            while time.monotonic() < deadline:
                with contextlib.suppress(redis.RedisError):
                    beats = self.heartbeats(r)
                    fresh = [b for b in beats.values()
                             if float(b["at"]) >= since and int(b["pid"]) not in not_pids
                             and alive(int(b["pid"]))]
                    if len(fresh) == len(PROCESSES):
                        return time.time() - since
                time.sleep(0.05)
        raise AssertionError(f"not every process healthy {timeout_s} s after the fault: "
                             f"{self.stale(since)} (logs: {self.logs()})")

    def stale(self, since: float) -> list[str]:
        with contextlib.suppress(redis.RedisError), self.client() as r:
            beats = self.heartbeats(r)
            return [p for p in PROCESSES if p not in beats or float(beats[p]["at"]) < since]
        return list(PROCESSES)


def child_name(argv: list[bytes]) -> str | None:
    """``python -m engine --shard 1 ...`` -> ``engine-1``, and so on."""
    args = [a.decode() for a in argv if a]
    if "-m" not in args:
        return None
    module, rest = args[args.index("-m") + 1], args[args.index("-m") + 2:]
    if module == "ingest.sim":
        return "sim"
    if module == "engine.backtest":
        return "backtest"
    if module == "engine":
        return f"engine-{rest[rest.index('--shard') + 1]}"
    if module == "ingest":
        return f"ingest-{rest[rest.index('--feed') + 1]}"
    return module

