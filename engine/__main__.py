"""``python -m engine --shard I --shards N``: run one engine shard until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import sys

from engine.shard import EngineSettings, Shard
from proto import bus, settings
from proto.runtime import Runtime, setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stormalert engine", description=__doc__)
    parser.add_argument("--shard", type=int, help="this shard's index (0-based)")
    parser.add_argument("--shards", type=int, help="total number of engine shards")
    args = parser.parse_args(argv)
    s = settings.load(EngineSettings, shard=args.shard, shards=args.shards)
    setup_logging(f"engine-{s.shard}", s.log_level)
    r = bus.connect(s.redis_url, blocking=True)
    try:
        bus.check(r, s.redis_url)
        shard = Shard(s, r, Runtime(f"engine-{s.shard}", r, s.stats_interval_s))
    except (bus.RedisUnavailable, ValueError) as exc:
        print(f"stormalert engine: {exc}", file=sys.stderr)
        return 2
    shard.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
