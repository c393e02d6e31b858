"""Encoder for the Kite ticker's binary frames: the inverse of ``ingest.kite``.

Values are the wire integers (prices already multiplied by the segment divisor), so tests can
build exact frames of every packet kind and the simulator never rounds twice.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

HEARTBEAT = b"\x00"
U32_MAX = 2**31 - 1  # the JS client reads these integers signed

_U16 = struct.Struct(">H")
_LTP = struct.Struct(">II")
_INDEX_QUOTE = struct.Struct(">6Ii")
_INDEX_FULL = struct.Struct(">6IiI")
_QUOTE = struct.Struct(">11I")
_FULL_HEAD = struct.Struct(">16I")
_DEPTH = struct.Struct(">IIH2x")


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
