"""``python -m web [--host H] [--port P]``: serve the dashboard with uvicorn. ``--check``
exits 0 when the web heartbeat is fresh, 1 otherwise."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

import uvicorn

from proto import health
from proto.bus import RedisUnavailable
from proto.runtime import setup_logging
from proto.settings import load
from web.app import create_app, heartbeat_name
from web.live import Drain
from web.settings import WebSettings

log = logging.getLogger("stormalert.web")

# Open event streams end by themselves on shutdown (Drain); this bounds the wait if one
# does not, since uvicorn otherwise waits forever for them.
GRACEFUL_SHUTDOWN_S = 3
REDIS_WAIT_S = 10.0


class _Server(uvicorn.Server):
    """uvicorn, telling the app's event streams to end as soon as shutdown begins."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self._drain = drain

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._drain.start()
        super().handle_exit(sig, frame)


def _exit_cleanly(signum: int, _frame: FrameType | None) -> None:
    # uvicorn takes these signals over while it serves and re-raises the one it got after
    # its graceful shutdown: ending here makes that (and a signal during start-up) exit 0,
    # with no KeyboardInterrupt traceback.
    log.info("stopped by %s", signal.Signals(signum).name)
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m web", description=__doc__)
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8000)")
    parser.add_argument("--check", action="store_true",
                        help="exit 0 if this web process's heartbeat is fresh, else 1")
    args = parser.parse_args(argv)
    settings = load(WebSettings, host=args.host, port=args.port)
    if args.check:
        return health.run_check(settings.redis_url, heartbeat_name(settings))
    setup_logging("web", settings.log_level)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    drain = Drain()
    try:
        app = create_app(settings, drain=drain, secret_wait_s=REDIS_WAIT_S)
    except RedisUnavailable as exc:
        print(f"stormalert web: {exc}", file=sys.stderr)
        return 1
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        log_level=settings.log_level.lower(), access_log=False,
        log_config=None,  # keep the one log format set up above
    )
    log.info("dashboard at http://%s:%d/", settings.host, settings.port)
    server = _Server(config, drain)
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
