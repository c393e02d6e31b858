"""``python -m web [--host H] [--port P]``: serve the dashboard with uvicorn."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from proto.bus import RedisUnavailable
from proto.runtime import setup_logging
from proto.settings import load
from web.app import create_app
from web.settings import WebSettings

log = logging.getLogger("stormalert.web")

# uvicorn otherwise waits forever for open event streams when asked to stop.
GRACEFUL_SHUTDOWN_S = 3
REDIS_WAIT_S = 10.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m web", description=__doc__)
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8000)")
    args = parser.parse_args(argv)
    settings = load(WebSettings, host=args.host, port=args.port)
    setup_logging("web", settings.log_level)
    try:
        app = create_app(settings, secret_wait_s=REDIS_WAIT_S)
    except RedisUnavailable as exc:
        print(f"stormalert web: {exc}", file=sys.stderr)
        return 1
    log.info("dashboard at http://%s:%d/", settings.host, settings.port)
    uvicorn.run(
        app, host=settings.host, port=settings.port,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        log_level=settings.log_level.lower(), access_log=False,
        log_config=None,  # keep the one log format set up above
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
