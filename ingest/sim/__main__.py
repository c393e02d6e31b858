"""``python -m ingest.sim [--host H] [--port P] [--symbols N] [--rate R] [--seed S]``.

Prints exactly one line to stdout once listening: ``sim listening on http://HOST:PORT``
(``--port 0`` picks a free port). Logs go to stderr. SIGTERM/SIGINT stop it cleanly.
"""

from __future__ import annotations

import argparse
import sys

from ingest.sim import cli_options, universe
from ingest.sim.market import Market
from ingest.sim.server import Simulator, serve_forever
from proto.runtime import run_async, setup_logging

DEFAULT_PORT = 8765


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stormalert sim", description="Local exchange simulator (Kite REST + ticker).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument("--symbols", type=int, default=500,
                        help=f"universe size (at least {universe.MIN_SYMBOLS})")
    parser.add_argument("--rate", type=float, default=200.0, help="total ticks per second")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--upstox-token", help="the only Upstox bearer token accepted "
                        "(default: any non-empty one)")
    cli_options.add_arguments(parser)
    args = parser.parse_args(argv)
    options = cli_options.build_options(args, parser)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be 0..65535")
    if args.rate < 0:
        parser.error("--rate must be >= 0")
    setup_logging("sim", args.log_level)
    instruments = universe.build(args.symbols, args.seed)
    market = Market(instruments, args.rate, args.seed, int(options.clock()))
    sim = Simulator(instruments, market, options)
    sim.upstox.accepted_token = args.upstox_token

    async def run() -> None:
        await serve_forever(sim, args.host, args.port)

    try:
        return run_async(run)
    except OSError as exc:
        print(f"sim: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
