"""Upstox decode throughput: ours (fields read from the upb message objects) against the SDK's
own path (``FeedResponse.FromString`` + ``MessageToDict``, as ``MarketDataStreamerV3`` does),
on the same frames in the same run. Part of ``python -m tests.bench decode``.

Frames hold 50 instruments each, built by the simulator's encoder from its market: ``full``
(marketFF: 5 depth levels, the "1d" bar), ``full_d30`` (30 levels), ``option_greeks`` and
``ltpc``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from google.protobuf.internal import api_implementation
from google.protobuf.json_format import MessageToDict
from upstox_client.feeder.proto import MarketDataFeedV3_pb2 as sdk

from ingest import upstox
from ingest.sim import universe
from ingest.sim import upstox_wire as wire
from ingest.sim.market import Market
from proto import MarketDataFeedV3_pb2 as pb

FEEDS_PER_FRAME = 50
NOW_S = 1_732_000_000


def frame_of(mode: str) -> tuple[bytes, dict[str, str]]:
    instruments = [i for i in universe.build(400, 1) if not i.is_index][:FEEDS_PER_FRAME]
    keys = wire.instrument_keys(instruments)
    market = Market(instruments, 5_000, 1, NOW_S)
    for _ in range(10):
        market.step(NOW_S)
    for i in range(len(instruments)):
        market.ensure_book(i)
    frame = wire.header(pb.live_feed, NOW_S * 1000) + b"".join(
        wire.feed_bytes(inst, key, q, mode, NOW_S * 1000)
        for inst, key, q in zip(instruments, keys, market.quotes, strict=True))
    return frame, {key: inst.symbol for inst, key in zip(instruments, keys, strict=True)}


def compare(ours: Callable[[], object], theirs: Callable[[], object], seconds: float,
            rounds: int = 5) -> tuple[float, float]:
    """Ticks per second of each (one frame per call): the best of ``rounds`` slices, taken
    in turns so that a busy moment of the machine hits both sides alike."""
    best = [0.0, 0.0]
    for _ in range(rounds):
        for side, fn in enumerate((ours, theirs)):
            calls, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds / (2 * rounds):
                for _ in range(10):
                    fn()
                calls += 10
            best[side] = max(best[side], calls * FEEDS_PER_FRAME / elapsed)
    return best[0], best[1]


def sdk_path(frame: bytes) -> dict:
    return MessageToDict(sdk.FeedResponse.FromString(frame))


def main(seconds: float) -> None:
    print(f"# Upstox decode benchmark (protobuf backend: {api_implementation.Type()})")
    for mode in ("full", "full_d30", "option_greeks", "ltpc"):
        frame, symbols = frame_of(mode)
        assert len(upstox.decode(frame, 1, symbols)) == FEEDS_PER_FRAME
        ours, theirs = compare(lambda f=frame, s=symbols: upstox.decode(f, 1, s),
                               lambda f=frame: sdk_path(f), 2 * seconds)
        print(f"{mode:13s} ours {ours:>9,.0f} ticks/s  FromString+MessageToDict "
              f"{theirs:>7,.0f} ticks/s  ratio {ours / theirs:5.1f}x")
