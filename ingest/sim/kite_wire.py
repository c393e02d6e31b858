"""Encoder for the Kite ticker's binary frames: the inverse of ``ingest.kite``.

Values are the wire integers (prices already multiplied by the segment divisor), so tests can
build exact frames of every packet kind and the simulator never rounds twice.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import add, mul

HEARTBEAT = b"\x00"
U32_MAX = 2**31 - 1  # the JS client reads these integers signed

_U16 = struct.Struct(">H")
_LTP = struct.Struct(">II")
_INDEX_QUOTE = struct.Struct(">6Ii")
_INDEX_FULL = struct.Struct(">6IiI")
_QUOTE = struct.Struct(">11I")
_FULL_HEAD = struct.Struct(">16I")
_DEPTH = struct.Struct(">IIH2x")
QUOTE_LEN = _QUOTE.size
FULL_LEN = _FULL_HEAD.size + 10 * _DEPTH.size


@dataclass(slots=True)
class Level:
    qty: int
    price: int
    orders: int


@dataclass(slots=True)
class Quote:
    """One instrument's state in wire integers."""

    token: int
    ltp: int
    close: int
    open: int
    high: int
    low: int
    last_qty: int = 0
    avg_price: int = 0
    volume: int = 0
    buy_qty: int = 0
    sell_qty: int = 0
    last_trade_time: int = 0
    oi: int = 0
    oi_day_high: int = 0
    oi_day_low: int = 0
    exchange_ts: int = 0
    bids: Sequence[Level] = field(default_factory=tuple)
    asks: Sequence[Level] = field(default_factory=tuple)


def ltp_packet(q: Quote) -> bytes:
    return _LTP.pack(q.token, q.ltp)


def index_packet(q: Quote, *, full: bool) -> bytes:
    change = q.ltp - q.close
    if full:
        return _INDEX_FULL.pack(q.token, q.ltp, q.high, q.low, q.open, q.close, change,
                                q.exchange_ts)
    return _INDEX_QUOTE.pack(q.token, q.ltp, q.high, q.low, q.open, q.close, change)


def quote_packet(q: Quote) -> bytes:
    return _QUOTE.pack(q.token, q.ltp, q.last_qty, q.avg_price, q.volume, q.buy_qty,
                       q.sell_qty, q.open, q.high, q.low, q.close)


def full_packet(q: Quote) -> bytes:
    head = _FULL_HEAD.pack(
        q.token, q.ltp, q.last_qty, q.avg_price, q.volume, q.buy_qty, q.sell_qty,
        q.open, q.high, q.low, q.close, q.last_trade_time, q.oi, q.oi_day_high, q.oi_day_low,
        q.exchange_ts)
    return head + _depth(q.bids) + _depth(q.asks)


def _depth(levels: Sequence[Level]) -> bytes:
    padded = list(levels[:5]) + [Level(0, 0, 0)] * (5 - min(len(levels), 5))
    return b"".join(_DEPTH.pack(lv.qty, lv.price, lv.orders) for lv in padded)


def packet(q: Quote, mode: str, *, index: bool) -> bytes:
    """The packet a subscriber in ``mode`` (ltp, quote, full) receives for this instrument."""
    if mode == "ltp":
        return ltp_packet(q)
    if index:
        return index_packet(q, full=mode == "full")
    return full_packet(q) if mode == "full" else quote_packet(q)


def frame(packets: Iterable[bytes]) -> bytes:
    """One binary frame: ``u16 count`` then each packet behind its ``u16`` length."""
    parts = [b""]
    n = 0
    for p in packets:
        parts.append(_U16.pack(len(p)))
        parts.append(p)
        n += 1
    parts[0] = _U16.pack(n)
    return b"".join(parts)


# Bulk encoding for the simulator's send loop: a packet per traded instrument, hundreds of
# thousands a second, so each packet is one struct call with its u16 length prefix included,
# and a full packet's depth is one big-integer sum (below) instead of ten struct entries.
MAX_FRAME_BYTES = 1 << 20  # the websockets client's default max_size; Kite clients take it
MAX_FRAME_PACKETS = 0xFFFF  # the frame's u16 count
_LTP_P = struct.Struct(">HII")
_QUOTE_P = struct.Struct(">H11I")
_FULL_HEAD_P = struct.Struct(">H16I")
_DEPTH_BYTES = 10 * _DEPTH.size
_SHAPES = 4096  # precomputed depth quantity/order patterns, drawn per packet


def _shift(offset: int, width: int) -> int:
    """Bit position of a field at ``offset`` in the depth block read as one big-endian int."""
    return 8 * (_DEPTH_BYTES - offset - width)


# The 10 depth prices are ltp + c*tick with c = -1..-5 for the bids and 0..4 for the asks.
# Read as one integer, the block is shape + tick*_DEPTH_C + ltp*_DEPTH_M: exact as long as
# every price field stays within 0..2^32-1 (no borrow or carry between fields).
_PRICE_SHIFTS = [_shift(12 * e + 4, 4) for e in range(10)]
_DEPTH_M = sum(1 << s for s in _PRICE_SHIFTS)
_DEPTH_C = sum(c << s for c, s in zip([-1, -2, -3, -4, -5, 0, 1, 2, 3, 4], _PRICE_SHIFTS,
                                       strict=True))


def _depth_shape(rng: random.Random) -> int:
    shape = 0
    for e in range(10):
        shape += (1 + int(rng.random() * 2000)) << _shift(12 * e, 4)
        shape += (1 + int(rng.random() * 30)) << _shift(12 * e + 8, 2)
    return shape


class FrameBuilder:
    """Frames for many instruments at once, in whatever mode each is subscribed in.

    Depth is drawn at send time (random quantities around the last price); ``Quote.bids`` /
    ``asks`` are not read, so the market need not build Level objects for the Kite side."""

    def __init__(self, ticks: Sequence[int], index_flags: Sequence[bool], seed: int) -> None:
        self._ticks = list(ticks)
        self._index = list(index_flags)
        self._rng = random.Random(seed)
        self._shapes = [_depth_shape(self._rng) for _ in range(_SHAPES)]

    def frames(self, quotes: Sequence[Quote], indices: Iterable[int],
               modes: Iterable[str | None]) -> list[bytes]:
        """Frames carrying the packet of each index in its mode (None: not subscribed)."""
        groups: dict[str, list[int]] = {"ltp": [], "quote": [], "full": []}
        for index, mode in zip(indices, modes, strict=True):
            if mode is not None:
                groups[mode].append(index)
        flags = self._index
        packets = [_LTP_P.pack(8, q.token, q.ltp)
                   for q in map(quotes.__getitem__, groups["ltp"])]
        for mode in ("quote", "full"):
            chosen = groups[mode]
            if any(map(flags.__getitem__, chosen)):
                for i in chosen:
                    if flags[i]:
                        p = index_packet(quotes[i], full=mode == "full")
                        packets.append(_U16.pack(len(p)) + p)
                chosen = [i for i in chosen if not flags[i]]
            packets += self._full(quotes, chosen) if mode == "full" else [
                _QUOTE_P.pack(QUOTE_LEN, q.token, q.ltp, q.last_qty, q.avg_price, q.volume,
                              q.buy_qty, q.sell_qty, q.open, q.high, q.low, q.close)
                for q in map(quotes.__getitem__, chosen)]
        per_frame = min(MAX_FRAME_PACKETS, (MAX_FRAME_BYTES - 2) // (FULL_LEN + 2))
        return [_U16.pack(len(part)) + b"".join(part)
                for part in (packets[at:at + per_frame]
                             for at in range(0, len(packets), per_frame))]

    def _full(self, quotes: Sequence[Quote], chosen: list[int]) -> list[bytes]:
        qs = list(map(quotes.__getitem__, chosen))
        heads = [_FULL_HEAD_P.pack(
            FULL_LEN, q.token, q.ltp, q.last_qty, q.avg_price, q.volume, q.buy_qty, q.sell_qty,
            q.open, q.high, q.low, q.close, q.last_trade_time, q.oi, q.oi_day_high,
            q.oi_day_low, q.exchange_ts) for q in qs]
        ltps = [q.ltp for q in qs]
        ticks = list(map(self._ticks.__getitem__, chosen))
        at = self._rng.randrange(_SHAPES)
        shapes = (self._shapes * (len(qs) // _SHAPES + 2))[at:at + len(qs)]
        depths = map(int.to_bytes, map(add, map(add, shapes, map(mul, ticks, repeat(_DEPTH_C))),
                                        map(mul, ltps, repeat(_DEPTH_M))), repeat(_DEPTH_BYTES))
        out = list(map(add, heads, depths))
        for n, (p, t) in enumerate(zip(ltps, ticks, strict=True)):
            if not 5 * t <= p <= U32_MAX - 4 * t:  # a price field would leave 0..2^31-1
                out[n] = (heads[n] + _depth([Level(1, max(p - t * (e + 1), 0), 1)
                                             for e in range(5)])
                          + _depth([Level(1, min(p + t * e, U32_MAX), 1) for e in range(5)]))
        return out
