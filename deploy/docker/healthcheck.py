#!/usr/bin/env python3
"""Health check from a process's heartbeat: exit 0 when ``sa:hb:NAME`` exists in Redis and
was written within ``--max-age-s``, else 1 (2: bad arguments).

Only ``python -m notify`` has a ``--check`` of its own; ingest, the engine shards and web
publish the same heartbeat key (``proto.runtime``) but have no check option, so the Docker
health checks and the systemd watchdog use this one script for every process kind.

    stormalert-healthcheck engine-0          # heartbeat name: engine-I, ingest-FEED, notify, web
    stormalert-healthcheck --unit engine-0   # a systemd template instance (KIND-INSTANCE)
    stormalert-healthcheck --unit engine-0 --restart   # and restart the unit when dead
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import orjson
import redis

from proto import bus, keys
from proto.settings import BaseSettings, load

# Units of deploy/systemd and the heartbeat each one's process writes, by process kind:
# the instance is the shard (engine), the feed (ingest), the consumer (notify), the port (web).
KINDS = {
    "engine": lambda inst: f"engine-{inst}",
    "ingest": lambda inst: f"ingest-{inst}",
    "notify": lambda _inst: "notify",
    "web": lambda _inst: "web",
}


def for_unit(spec: str) -> tuple[str, str]:
    """``KIND-INSTANCE`` -> (heartbeat name, systemd unit name)."""
    kind, sep, inst = spec.partition("-")
    if not sep or not inst or kind not in KINDS:
        raise ValueError(f"{spec!r} is not KIND-INSTANCE with KIND one of {sorted(KINDS)}")
    return KINDS[kind](inst), f"stormalert-{kind}@{inst}.service"


def beat_age_s(r: redis.Redis, name: str) -> float | None:
    """Seconds since the heartbeat was written; None when the key is gone (its TTL is
    keys.HEARTBEAT_TTL_S, so a process silent that long has none)."""
    raw = r.get(keys.heartbeat(name))
    if not raw:
        return None
    return time.time() - float(orjson.loads(raw).get("at", 0))  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="stormalert-healthcheck", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", help="heartbeat name: engine-I, ingest-FEED, notify, web")
    p.add_argument("--unit", help="systemd instance KIND-INSTANCE, e.g. engine-0, ingest-kite")
    p.add_argument("--max-age-s", type=float, default=float(keys.HEARTBEAT_TTL_S))
    p.add_argument("--restart", action="store_true",
                   help="with --unit: `systemctl restart` the unit when its heartbeat is stale")
    args = p.parse_args(argv)
    if (args.name is None) == (args.unit is None) or (args.restart and not args.unit):
        p.error("give a heartbeat NAME or --unit KIND-INSTANCE (--restart needs --unit)")
    try:
        name, unit = for_unit(args.unit) if args.unit else (args.name, "")
    except ValueError as exc:
        p.error(str(exc))
    url = load(BaseSettings).redis_url
    try:
        age_s = beat_age_s(bus.connect(url), name)
    except redis.RedisError as exc:
        print(f"{name}: cannot reach Redis at {bus.redact_url(url)}: {exc}", file=sys.stderr)
        return 1  # not the process's fault: restarting it would not help
    alive = age_s is not None and age_s <= args.max_age_s
    print(f"{name}: alive ({age_s:.1f} s)" if alive else f"{name}: no fresh heartbeat")
    if not alive and args.restart:
        subprocess.run(["systemctl", "restart", unit], check=False)
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
