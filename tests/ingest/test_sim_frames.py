"""The simulator's bulk frame builder against the official parser."""

from __future__ import annotations

from ingest.sim import kite_wire as wire
from ingest.sim import universe
from ingest.sim.market import Market
from tests.ingest.kite_oracle import official


def test_bulk_frames_match_the_quotes_in_every_mode() -> None:
    instruments = universe.build(400, 5)
    market = Market(instruments, 20_000, 5, 1_732_000_000)
    for second in range(5):
        market.step(1_732_000_001 + second)
    market.quotes[7].ltp = 1  # below five ticks: the depth takes the clamped path
    ticks = [max(round(i.tick_size * i.divisor), 1) for i in instruments]
    builder = wire.FrameBuilder(ticks, [i.is_index for i in instruments], 1)
    indices = list(range(len(instruments)))
    modes = [(None, "ltp", "quote", "full")[i % 4] for i in indices]
    frames = builder.frames(market.quotes, indices, modes)
    assert len(frames) == 1
    parsed = {t["instrument_token"]: t for t in official(frames[0])}
    assert len(parsed) == sum(m is not None for m in modes)
    for i, mode in zip(indices, modes, strict=True):
        q, inst = market.quotes[i], instruments[i]
        if mode is None:
            assert q.token not in parsed
            continue
        tick = parsed[q.token]
        assert tick["mode"] == mode
        assert tick["last_price"] == q.ltp / inst.divisor
        if mode == "full" and not inst.is_index:
            bids, asks = tick["depth"]["buy"], tick["depth"]["sell"]
            t = ticks[i] / inst.divisor
            assert [b["price"] for b in bids] == [
                max(q.ltp - ticks[i] * (n + 1), 0) / inst.divisor for n in range(5)]
            assert asks[0]["price"] == q.ltp / inst.divisor
            assert abs(asks[4]["price"] - (q.ltp / inst.divisor + 4 * t)) < 1e-6 * q.ltp
            assert all(1 <= b["quantity"] <= 2000 and 1 <= b["orders"] <= 30
                       for b in bids + asks)
            assert tick["volume_traded"] == q.volume and tick["oi"] == q.oi


def test_large_batches_split_into_frames_within_the_byte_limit() -> None:
    instruments = universe.build(12_000, 5)
    market = Market(instruments, 0, 5, 1_732_000_000)
    builder = wire.FrameBuilder([1] * len(instruments), [i.is_index for i in instruments], 1)
    frames = builder.frames(market.quotes, range(len(instruments)),
                            ["full"] * len(instruments))
    assert len(frames) == 3 and all(len(f) <= wire.MAX_FRAME_BYTES for f in frames)
    assert sum(len(official(f)) for f in frames) == len(instruments)
