"""Kite decode throughput: ours against the official parser on the same frames, same run.

Run: ``.venv/bin/python -m tests.bench decode [--seconds S]``. Prints ticks/s for
full, quote and ltp frames of 50 packets each, and the ratio, with the machine it ran on.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from ingest import kite
from ingest.sim import kite_wire as wire
from tests.bench import upstox_decode
from tests.bench.common import machine
from tests.ingest.kite_oracle import official

PACKETS_PER_FRAME = 50


def frame_of(mode: str) -> bytes:
    bids, asks = [wire.Level(10, 149_990, 1)] * 5, [wire.Level(10, 150_010, 1)] * 5
    quotes = [wire.Quote(token=(5000 + n) << 8 | 1, ltp=150_000 + n, close=149_000,
                         open=149_500, high=151_000, low=148_000, volume=10_000 * n,
                         last_trade_time=1_700_000_000, exchange_ts=1_700_000_001,
                         bids=bids, asks=asks)
              for n in range(PACKETS_PER_FRAME)]
    return wire.frame(wire.packet(q, mode, index=False) for q in quotes)


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Ticks per second of ``fn`` (one frame per call), best of three slices."""
    best = 0.0
    for _ in range(3):
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / 3:
            for _ in range(20):
                fn()
            calls += 20
        best = max(best, calls * PACKETS_PER_FRAME / elapsed)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench decode")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    print(f"# Kite decode benchmark on {machine()}")
    symbols = {(5000 + n) << 8 | 1: f"NSE:S{n}" for n in range(PACKETS_PER_FRAME)}
    for mode in ("full", "quote", "ltp"):
        frame = frame_of(mode)
        ours = rate(lambda f=frame: kite.decode(f, 1, symbols), args.seconds)
        theirs = rate(lambda f=frame: official(f), args.seconds)
        print(f"{mode:5s} ours {ours:>11,.0f} ticks/s  KiteTicker._parse_binary "
              f"{theirs:>9,.0f} ticks/s  ratio {ours / theirs:5.1f}x")
    upstox_decode.main(args.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
