#!/usr/bin/env python3
"""Heartbeat health check and systemd watchdog.

Every process has its own ``--check`` (``stormalert engine --check --shard 0``, ``stormalert
ingest --check --feed kite``, ``stormalert notify --check``, ``stormalert web --check``,
``stormalert backtest --check``): exit 0 when its heartbeat ``sa:hb:NAME`` is fresh, 1
otherwise (proto.health). The compose file and
the Kubernetes probes call those. This script adds what a systemd watchdog needs around them:

    stormalert-healthcheck engine-0                    # any heartbeat by name (proto.health)
    stormalert-healthcheck --unit engine-0             # the unit's own `--check`
    stormalert-healthcheck --unit engine-0 --restart   # and `systemctl restart` it when dead

``--unit`` takes a systemd template instance ``KIND-INSTANCE`` (the instance is the shard,
the feed, the notify or backtest consumer, the web port). With ``--restart`` nothing is
restarted while Redis itself is unreachable: the process is not at fault, and restarting it
would not help.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import redis

from proto import bus, health, keys
from proto.settings import BaseSettings, load

# The `--check` arguments of each kind's unit (after `stormalert KIND`), by instance.
KINDS = {
    "engine": lambda inst: ["--check", "--shard", inst],
    "ingest": lambda inst: ["--check", "--feed", inst],
    "notify": lambda inst: ["--check", "--consumer", inst],
    "web": lambda inst: ["--check", "--port", inst],
    "backtest": lambda inst: ["--check", "--consumer", inst],
}


def for_unit(spec: str) -> tuple[list[str], str]:
    """``KIND-INSTANCE`` -> (the process's check command after ``stormalert``, unit name)."""
    kind, sep, inst = spec.partition("-")
    if not sep or not inst or kind not in KINDS:
        raise ValueError(f"{spec!r} is not KIND-INSTANCE with KIND one of {sorted(KINDS)}")
    return [kind, *KINDS[kind](inst)], f"stormalert-{kind}@{inst}.service"


def run_unit_check(command: list[str]) -> int:
    """The unit's own ``stormalert KIND --check ...``, in this Python (``python -m deploy``
    is the ``stormalert`` command)."""
    done = subprocess.run([sys.executable, "-m", "deploy", *command], check=False,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30)
    print(done.stdout.strip() or f"stormalert {' '.join(command)}: exit {done.returncode}")
    return done.returncode


def redis_reachable(url: str) -> bool:
    try:
        bus.connect(url).ping()
    except redis.RedisError as exc:
        print(f"cannot reach Redis at {bus.redact_url(url)}: {exc}", file=sys.stderr)
        return False
    return True


def restart(unit: str) -> None:
    subprocess.run(["systemctl", "restart", unit], check=False)


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
    url = load(BaseSettings).redis_url
    if args.name is not None:
        result = health.check(url, args.name, args.max_age_s)
        print(result.reason)
        return result.exit_code
    try:
        command, unit = for_unit(args.unit)
    except ValueError as exc:
        p.error(str(exc))
    if not redis_reachable(url):
        return 1
    code = run_unit_check(command)
    if code != 0 and args.restart and redis_reachable(url):
        restart(unit)
    return code


if __name__ == "__main__":
    sys.exit(main())
