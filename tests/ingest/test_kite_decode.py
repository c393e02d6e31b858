"""The Kite decoder against the official parser on real and generated frames, and fuzzed."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest import kite
from ingest.sim import kite_wire as wire
from tests.ingest.kite_oracle import assert_same, official

RECV_US = 1_700_000_000_123_456
SEGMENTS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 255)
MODES = ("ltp", "quote", "full")
U31 = st.integers(min_value=0, max_value=wire.U32_MAX)


def fixture_frames(fixtures_dir: Path) -> list[tuple[str, bytes]]:
    frames = []
    for path in sorted((fixtures_dir / "kite").rglob("*.packet")):
        data = path.read_bytes()
        if path.parent.name == "kiteconnect-mocks":
            # base64 of one bare packet (no frame header): wrap it in a one-packet frame
            packet = base64.b64decode(data)
            data = struct.pack(">HH", 1, len(packet)) + packet
        frames.append((path.name, data))
    return frames


def test_fixture_frames_match_official_parser(fixtures_dir: Path) -> None:
    frames = fixture_frames(fixtures_dir)
    assert len(frames) == 5
    for _name, frame in frames:
        expected = official(frame)
        assert expected, "oracle decoded nothing"
        assert_same(kite.decode(frame, RECV_US, {}), expected, RECV_US)


def test_fixture_full_matches_documented_values(fixtures_dir: Path) -> None:
    frame = dict(fixture_frames(fixtures_dir))["ticker_full.packet"]
    doc = orjson.loads((fixtures_dir / "kite/kiteconnect-mocks/ticker_full.json").read_bytes())
    (tick,) = kite.decode(frame, RECV_US, {408065: "NSE:INFY"})
    assert tick.sym == "NSE:INFY"
    assert tick.ltp == doc["last_price"]
    assert tick.vol == doc["volume"]
    assert (tick.o, tick.h, tick.l, tick.pc) == tuple(
        doc["ohlc"][k] for k in ("open", "high", "low", "close"))
    assert tick.bid == doc["depth"]["buy"][0]["price"]
    assert tick.ask == doc["depth"]["sell"][0]["price"]
    assert tick.ts == 1625461887000  # 2021-07-05T10:41:27+05:30


def quote(token: int, seed: int) -> wire.Quote:
    base = 10_000 + seed * 7919 % 1_000_000
    return wire.Quote(
        token=token, ltp=base, close=base - 37, open=base - 11, high=base + 50, low=base - 90,
        last_qty=seed % 500, avg_price=base - 5, volume=seed * 1000, buy_qty=1234,
        sell_qty=4321, last_trade_time=1_700_000_000 + seed, oi=seed * 3, oi_day_high=seed * 4,
        oi_day_low=seed, exchange_ts=1_700_000_100 + seed if seed % 3 else 0,
        bids=[wire.Level(10 + i, base - i, i + 1) for i in range(5 if seed % 4 else 0)],
        asks=[wire.Level(20 + i, base + 1 + i, i + 2) for i in range(5)])


@pytest.mark.parametrize("segment", SEGMENTS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("index", [False, True])
def test_generated_packets_match_official_parser(segment: int, mode: str, index: bool) -> None:
    quotes = [quote((1000 + n) << 8 | segment, n) for n in range(6)]
    frame = wire.frame(wire.packet(q, mode, index=index) for q in quotes)
    symbols = {quotes[0].token: "NSE:FIRST"}
    ticks = kite.decode(frame, RECV_US, symbols)
    assert_same(ticks, official(frame), RECV_US, symbols)
    divisor = kite.divisor_for(segment)
    assert ticks[1].ltp == quotes[1].ltp / divisor


def test_divisors() -> None:
    assert kite.divisor_for(3) == 1e7
    assert kite.divisor_for(6) == kite.divisor_for(12) == 1e4
    assert kite.divisor_for(1) == kite.divisor_for(9) == 100


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(MODES), st.booleans(), st.sampled_from(SEGMENTS),
                          U31, U31, U31, U31, U31, U31, U31), max_size=8))
def test_random_values_match_official_parser(
        rows: list[tuple[str, bool, int, int, int, int, int, int, int, int]]) -> None:
    packets = []
    for mode, index, segment, tok, ltp, close, vol, ets, ltt, bid in rows:
        q = wire.Quote(token=(tok & 0xFFFFFF) << 8 | segment, ltp=ltp, close=close,
                       open=ltp // 2, high=ltp, low=ltp // 3, volume=vol, exchange_ts=ets,
                       last_trade_time=ltt, bids=[wire.Level(1, bid, 1)])
        packets.append(wire.packet(q, mode, index=index))
    frame = wire.frame(packets)
    assert_same(kite.decode(frame, RECV_US, {}), official(frame), RECV_US)


def test_heartbeat_and_empty_frame() -> None:
    assert kite.decode(wire.HEARTBEAT, RECV_US, {}) == []
    assert kite.decode(b"\x00\x00", RECV_US, {}) == []
    with pytest.raises(kite.KiteDecodeError):
        kite.decode(b"", RECV_US, {})


def test_unknown_packet_lengths_are_skipped_and_counted() -> None:
    good = wire.ltp_packet(quote(408065, 1))
    frame = wire.frame([b"\x01\x02\x03", good, b"", b"x" * 100])
    ticks, skipped = kite.decode_counting(frame, RECV_US, {})
    assert [t.tok for t in ticks] == ["408065"]
    assert skipped == 3


@pytest.mark.parametrize("cut", [1, 3, 5, 20, 186])
def test_truncated_frames_raise(cut: int, fixtures_dir: Path) -> None:
    frame = (fixtures_dir / "kite/kiteconnectjs/fullMode_binary.packet").read_bytes()
    with pytest.raises(kite.KiteDecodeError):
        kite.decode(frame[:-cut], RECV_US, {})


def test_trailing_bytes_raise() -> None:
    frame = wire.frame([wire.ltp_packet(quote(408065, 1))]) + b"\x00"
    with pytest.raises(kite.KiteDecodeError, match="after the last"):
        kite.decode(frame, RECV_US, {})


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(kite.KiteDecodeError, ValueError)


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_arbitrary_bytes_only_raise_decode_error(data: bytes) -> None:
    try:
        ticks = kite.decode(data, RECV_US, {})
    except kite.KiteDecodeError:
        return
    assert isinstance(ticks, list)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=6), st.integers(0, 4))
def test_fuzz_well_framed_packets(packets: list[bytes], cut: int) -> None:
    frame = wire.frame(packets)
    frame = frame[: len(frame) - cut] if cut else frame
    try:
        kite.decode(frame, RECV_US, {})
    except kite.KiteDecodeError:
        assert cut > 0
