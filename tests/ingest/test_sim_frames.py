"""The simulator's bulk (numpy) frame builder against the per-packet encoder, our decoder and
the official parser."""

from __future__ import annotations

import struct
from dataclasses import replace

import numpy as np
import pytest

from ingest import kite
from ingest.sim import kite_wire as wire
from ingest.sim import universe
from ingest.sim.market import Market
from tests.ingest.kite_oracle import assert_same, official

RECV_US = 1_732_000_000_000_000
MODE_NAMES = {wire.MODE_LTP: "ltp", wire.MODE_QUOTE: "quote", wire.MODE_FULL: "full"}


def packets_of(frame: bytes) -> list[bytes]:
    (count,), at, out = struct.unpack_from(">H", frame), 2, []
    for _ in range(count):
        (length,) = struct.unpack_from(">H", frame, at)
        out.append(frame[at + 2:at + 2 + length])
        at += 2 + length
    assert at == len(frame)
    return out


def depth_levels(packet: bytes) -> tuple[list[wire.Level], list[wire.Level]]:
    levels = [wire.Level(*struct.unpack_from(">IIH", packet, 64 + 12 * n)) for n in range(10)]
    return levels[:5], levels[5:]


@pytest.fixture
def traded() -> Market:
    instruments = universe.build(400, 5)
    market = Market(instruments, 20_000, 5, 1_732_000_000)
    for second in range(5):
        market.step(1_732_000_001 + second)
    market.state[7, wire.LTP] = 1  # below five ticks: the bid prices clamp at 0
    return market


def test_bulk_frames_equal_the_per_packet_encoder_for_every_kind(traded: Market) -> None:
    builder = wire.FrameBuilder(traded.tick, traded.is_index, 1)
    indices = np.arange(len(traded.instruments))
    kinds: set[tuple[str, bool, int]] = set()
    for shift in range(4):  # none, ltp, quote, full in turn for every instrument
        codes = (indices + shift) % 4
        (frame,) = builder.frames(traded.state, indices, codes)
        kinds |= same_as_per_packet(traded, frame, codes)
    assert {(m, ix) for m, ix, _seg in kinds} == {
        (m, ix) for m in MODE_NAMES.values() for ix in (False, True)}
    assert {seg for _m, _ix, seg in kinds} >= {1, 3, 4, 6, 7, 9, 12}


def same_as_per_packet(market: Market, frame: bytes,
                       codes: np.ndarray) -> set[tuple[str, bool, int]]:
    """Each packet of the frame equals ``wire.packet`` of the instrument's quote; the kinds
    (mode, index, segment) seen."""
    by_token = {struct.unpack_from(">I", p)[0]: p for p in packets_of(frame)}
    assert len(by_token) == int(np.count_nonzero(codes))
    kinds = set()
    for i, code in enumerate(codes.tolist()):
        q, inst = market.quotes[i], market.instruments[i]
        if code == wire.MODE_NONE:
            assert q.token not in by_token
            continue
        got, mode = by_token[q.token], MODE_NAMES[code]
        kinds.add((mode, inst.is_index, inst.token & 0xFF))
        if mode == "full" and not inst.is_index:
            bids, asks = depth_levels(got)  # drawn at send time: check, then take as given
            t = int(market.tick[i])
            assert [b.price for b in bids] == [max(q.ltp - t * (n + 1), 0) for n in range(5)]
            assert [a.price for a in asks] == [q.ltp + t * n for n in range(5)]
            assert all(1 <= lv.qty <= 2000 and 1 <= lv.orders <= 30 for lv in bids + asks)
            q = replace(q, bids=bids, asks=asks)
        assert got == wire.packet(q, mode, index=inst.is_index), (i, mode)
    return kinds


def test_bulk_frames_decode_alike_with_ours_and_the_official_parser(traded: Market) -> None:
    builder = wire.FrameBuilder(traded.tick, traded.is_index, 2)
    indices = np.arange(len(traded.instruments))
    for code in (wire.MODE_LTP, wire.MODE_QUOTE, wire.MODE_FULL):
        (frame,) = builder.frames(traded.state, indices, np.full(len(indices), code))
        expected = official(frame)
        assert len(expected) == len(indices)
        assert_same(kite.decode(frame, RECV_US, {}), expected, RECV_US)
        for tick in expected:
            inst = traded.instruments[int(np.flatnonzero(
                traded.state[:, wire.TOKEN] == tick["instrument_token"])[0])]
            assert tick["mode"] == MODE_NAMES[code]
            assert tick["tradable"] == (not inst.is_index)


def test_nothing_subscribed_is_no_frame(traded: Market) -> None:
    builder = wire.FrameBuilder(traded.tick, traded.is_index, 1)
    indices = np.arange(10)
    assert builder.frames(traded.state, indices, np.zeros(10, np.int8)) == []
    assert builder.frames(traded.state, indices[:0], indices[:0]) == []


@pytest.mark.parametrize("mixed", [False, True])
def test_large_batches_split_into_frames_within_the_limits(mixed: bool) -> None:
    instruments = universe.build(12_000, 5)
    market = Market(instruments, 0, 5, 1_732_000_000)
    builder = wire.FrameBuilder(market.tick, market.is_index, 1)
    indices = np.arange(len(instruments))
    codes = (indices % 3 + 1) if mixed else np.full(len(indices), wire.MODE_FULL)
    frames = builder.frames(market.state, indices, codes)
    assert len(frames) == 3  # at most (1 MiB - 2) // 186 packets a frame, whatever their kinds
    assert all(len(f) <= wire.MAX_FRAME_BYTES for f in frames)
    parsed = [t for f in frames for t in official(f)]
    assert sorted(t["instrument_token"] for t in parsed) == sorted(
        inst.token for inst in instruments)
    assert sum(len(kite.decode(f, RECV_US, {})) for f in frames) == len(instruments)
