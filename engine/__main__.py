"""``python -m engine --shard I --shards N``: run one engine shard until SIGTERM/SIGINT.

``--check`` exits 0 when shard I's heartbeat is fresh, 1 otherwise; ``reshard --to M``
changes the shard count (engine.reshard). The shard index may come from
``STORMALERT_SHARD`` (on Kubernetes, the StatefulSet pod's ordinal: deploy/k8s).
"""

from __future__ import annotations

import argparse
import sys

from engine.shard import EngineSettings, Shard
from proto import bus, health, settings, topology
from proto.runtime import Runtime, setup_logging


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["reshard"]:
        from engine import reshard

        return reshard.main(argv[1:])
    parser = argparse.ArgumentParser(prog="stormalert engine", description=__doc__)
    parser.add_argument("--shard", type=int, help="this shard's index (0-based)")
    parser.add_argument("--shards", type=int, help="total number of engine shards")
    parser.add_argument("--check", action="store_true",
                        help="exit 0 if this shard's heartbeat is fresh, else 1")
    args = parser.parse_args(argv)
    s = settings.load(EngineSettings, shard=args.shard, shards=args.shards)
    if args.check:
        return health.run_check(s.redis_url, f"engine-{s.shard}")
    setup_logging(f"engine-{s.shard}", s.log_level)
    r = bus.connect(s.redis_url, blocking=True)
    try:
        bus.check(r, s.redis_url)
        topology.agree(r, s.shards)
        shard = Shard(s, r, Runtime(f"engine-{s.shard}", r, s.stats_interval_s))
    except (bus.RedisUnavailable, topology.ShardCountMismatch, ValueError) as exc:
        print(f"stormalert engine: {exc}", file=sys.stderr)
        return 2
    try:
        shard.run()
    except topology.ShardCountMismatch as exc:  # re-sharded while this shard was starting
        print(f"stormalert engine: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
