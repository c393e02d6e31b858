"""Liveness from a process's heartbeat (``sa:hb:NAME``, written every couple of seconds by
``proto.runtime`` with a ``keys.HEARTBEAT_TTL_S`` TTL): the ``--check`` option of every
process and deploy's health-check script share this.

A process is alive when its heartbeat exists and its ``at`` is at most ``max_age_s`` old.
Redis being unreachable is reported apart: restarting the process would not help.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson
import redis

from proto import bus, keys


@dataclass(frozen=True)
class Health:
    name: str
    alive: bool
    reason: str  # one line: "engine-0: alive (heartbeat 1.2 s old)"
    redis_down: bool = False

    @property
    def exit_code(self) -> int:
        return 0 if self.alive else 1


def beat_age_s(r: redis.Redis, name: str) -> float | None:
    """Seconds since the heartbeat was written; None when the key is gone or unreadable."""
    raw = r.get(keys.heartbeat(name))
    if not raw:
        return None
    try:
        at = float(orjson.loads(raw)["at"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    return time.time() - at


def check(redis_url: str, name: str, max_age_s: float = float(keys.HEARTBEAT_TTL_S)) -> Health:
    """Is process ``name`` (its heartbeat name: engine-I, ingest-FEED, notify, web) alive?"""
    r = bus.connect(redis_url)
    try:
        age_s = beat_age_s(r, name)
    except redis.RedisError as exc:
        return Health(name, False, f"{name}: cannot reach Redis at "
                      f"{bus.redact_url(redis_url)}: {exc}", redis_down=True)
    finally:
        r.close()
    if age_s is None:
        return Health(name, False, f"{name}: no heartbeat ({keys.heartbeat(name)} is absent)")
    if age_s > max_age_s:
        return Health(name, False, f"{name}: heartbeat is {age_s:.1f} s old "
                      f"(more than {max_age_s:g} s)")
    return Health(name, True, f"{name}: alive (heartbeat {max(age_s, 0.0):.1f} s old)")


def run_check(redis_url: str, name: str) -> int:
    """What ``python -m PROCESS --check`` does: one line on stdout, exit 0 or 1."""
    health = check(redis_url, name)
    print(health.reason, flush=True)
    return health.exit_code
