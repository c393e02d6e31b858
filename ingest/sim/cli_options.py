"""The simulator's command-line flags for login, market hours, faults and replay."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from ingest.sim.faults import FaultConfig
from ingest.sim.hours import NORMAL, PRE_OPEN, MarketHours, SimClock, parse_window
from ingest.sim.kite_auth import KiteAuth
from ingest.sim.options import ReplayPlan, SimOptions
from ingest.sim.replay import ReplayFileError, read_rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    login = parser.add_argument_group("Kite login")
    login.add_argument("--access-token", help="a static Kite access token accepted besides the "
                       "ones POST /session/token issues (default: any non-empty token)")
    login.add_argument("--api-secret", default="sim-secret",
                       help="the secret generate_session's checksum must use")
    login.add_argument("--expire-tokens-after", type=float, metavar="S",
                       help="refuse (HTTP 403) every access token S seconds after it was "
                       "issued, or after start for the static one: the daily expiry, sped up")
    hours = parser.add_argument_group("market hours")
    hours.add_argument("--market-hours", choices=("always", "nse"), default="always",
                       help="always open (demo), or the exchange day in IST")
    hours.add_argument("--nse-session", default="09:15-15:30", metavar="HH:MM-HH:MM")
    hours.add_argument("--nse-pre-open", default="09:00-09:08", metavar="HH:MM-HH:MM")
    hours.add_argument("--clock", metavar="ISO-8601",
                       help="start the simulator's clock at this instant (with an offset, "
                       "e.g. 2024-01-05T09:14:55+05:30); it runs at real speed from there")
    faults = parser.add_argument_group("faults")
    faults.add_argument("--drop-every", type=float, metavar="S",
                        help="abort every ticker connection every S seconds")
    faults.add_argument("--stall-every", type=float, metavar="S",
                        help="every S seconds, open ticker connections go silent")
    faults.add_argument("--stall-for", type=float, default=3.0, metavar="S",
                        help="how long a stall lasts (no frames, no heartbeats)")
    faults.add_argument("--malformed-every", type=int, metavar="N",
                        help="send a broken binary frame after every N data frames")
    replay = parser.add_argument_group("replay")
    replay.add_argument("--replay", type=Path, metavar="FILE.csv",
                        help="play recorded ticks (ts,symbol,ltp[,volume][,pc]) instead of "
                        "the random walk")
    replay.add_argument("--replay-speed", type=float, default=1.0, metavar="X",
                        help="pace multiplier (0: as fast as clients take them)")


def build_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> SimOptions:
    """SimOptions from parsed flags; bad values end in ``parser.error`` (exit 2)."""
    for name in ("expire_tokens_after", "drop_every", "stall_every"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0")
    if args.stall_for <= 0 or args.replay_speed < 0:
        parser.error("--stall-for must be > 0 and --replay-speed >= 0")
    if args.malformed_every is not None and args.malformed_every < 1:
        parser.error("--malformed-every must be >= 1")
    if args.access_token is not None and not args.access_token.strip():
        parser.error("--access-token must not be empty")
    try:
        start = None
        if args.clock:
            when = datetime.fromisoformat(args.clock)
            if when.tzinfo is None:
                raise ValueError(f"--clock {args.clock!r} needs an offset, e.g. +05:30")
            start = when.timestamp()
        hours = MarketHours(args.market_hours,
                            normal=parse_window(args.nse_session, NORMAL),
                            pre_open=parse_window(args.nse_pre_open, PRE_OPEN))
        replay = ReplayPlan(read_rows(args.replay), args.replay_speed) if args.replay else None
    except (ValueError, ReplayFileError) as exc:
        parser.error(str(exc))
    clock = SimClock(start)
    return SimOptions(
        auth=KiteAuth(api_secret=args.api_secret, static_token=args.access_token,
                      expire_after_s=args.expire_tokens_after, clock=clock),
        hours=hours, clock=clock, replay=replay,
        faults=FaultConfig(args.drop_every, args.stall_every, args.stall_for,
                           args.malformed_every))
