"""``python -m ingest --feed sim|kite [--shards N] [--sim-url URL]``: the ingest worker.

``--check`` exits 0 when the heartbeat of this feed's worker (``ingest-FEED``) is fresh, 1
otherwise. Settings come from the environment (``STORMALERT_*``, plus ``KITE_API_KEY`` /
``KITE_ACCESS_TOKEN``) and ``.env``; the flags override them. Exits non-zero with one line on
stderr when Redis is unreachable or the configuration is unusable.
"""

from __future__ import annotations

import argparse
import sys
from typing import Literal

import redis
from websockets.exceptions import InvalidURI
from websockets.uri import parse_uri

from ingest import worker
from ingest.settings import IngestSettings
from proto import bus, health, keys, topology
from proto.runtime import run_async, setup_logging
from proto.settings import BaseSettings, load


class _CheckSettings(BaseSettings):
    feed: Literal["sim", "kite", "upstox"] = "sim"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stormalert ingest",
                                     description="Feed ingest worker: ticks to sa:ticks:{i}.")
    parser.add_argument("--feed", choices=("sim", "kite", "upstox"))
    parser.add_argument("--shards", type=int)
    parser.add_argument("--sim-url", help="simulator base URL, e.g. http://127.0.0.1:8765")
    parser.add_argument("--check", action="store_true",
                        help="exit 0 if this feed's ingest heartbeat is fresh, else 1")
    args = parser.parse_args(argv)
    if args.check:  # needs no feed credentials: only the feed's name and Redis
        check = load(_CheckSettings, feed=args.feed)
        return health.run_check(check.redis_url, f"ingest-{check.feed}")
    settings = load(IngestSettings, feed=args.feed, shards=args.shards, sim_url=args.sim_url)
    setup_logging(worker.process_name(settings), settings.log_level)
    try:
        parse_uri(settings.ws_url())
    except InvalidURI as exc:
        print(f"ingest: bad WebSocket URL: {exc}", file=sys.stderr)
        return 2
    sync = bus.connect(settings.redis_url)
    try:
        bus.check(sync, settings.redis_url)
        topology.agree(sync, settings.shards)
        # The engine's consumer groups from ingest's first tick on, so that ticks written
        # before a shard's first start are evaluated when it starts (a shard creates a
        # missing group at the stream's end: "$").
        for shard in range(settings.shards):
            bus.ensure_group(sync, keys.ticks(shard), keys.ENGINE_GROUP, start="$")
    except bus.RedisUnavailable as exc:
        print(f"ingest: {exc}", file=sys.stderr)
        return 1
    except topology.ShardCountMismatch as exc:
        print(f"ingest: {exc}", file=sys.stderr)
        return 2
    except redis.RedisError as exc:  # e.g. refusing writes (OOM) before the groups exist
        print(f"ingest: cannot create the engine's consumer groups: {exc}", file=sys.stderr)
        return 1
    finally:
        sync.close()
    failure: list[str] = []

    async def run() -> None:
        r = bus.aconnect(settings.redis_url)
        try:
            await worker.run(settings, r)
        except* worker.FatalIngestError as group:
            failure.extend(str(e) for e in leaves(group))
        finally:
            await r.aclose()

    code = run_async(run)
    if failure:
        print(f"ingest: {failure[0]}", file=sys.stderr)
        return 1
    return code


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions of a group, nested groups flattened (a fatal error raised two task
    groups deep would otherwise print as the generic "unhandled errors" line)."""
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


if __name__ == "__main__":
    raise SystemExit(main())
