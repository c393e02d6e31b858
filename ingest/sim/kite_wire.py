"""Encoder for the Kite ticker's binary frames: the inverse of ``ingest.kite``.

Values are the wire integers (prices already multiplied by the segment divisor), so tests can
build exact frames of every packet kind and the simulator never rounds twice.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
import numpy.typing as npt

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


# Bulk encoding for the simulator's send loop: hundreds of thousands of packets a second.
# The market keeps its state as one int64 row per instrument with the columns in full-packet
# order, so each packet kind is a column selection cast to big-endian integers in a numpy
# structured array whose first field is the packet's u16 length: ``.tobytes()`` of the array
# is that run of packets exactly as they sit in a frame.
TOKEN, LTP, LAST_QTY, AVG_PRICE, VOLUME, BUY_QTY, SELL_QTY, OPEN, HIGH, LOW, CLOSE, \
    LAST_TRADE_TIME, OI, OI_DAY_HIGH, OI_DAY_LOW, EXCHANGE_TS = range(16)
COLUMNS = 16
MODE_NONE, MODE_LTP, MODE_QUOTE, MODE_FULL = 0, 1, 2, 3
MODE_CODES = {"ltp": MODE_LTP, "quote": MODE_QUOTE, "full": MODE_FULL}
MAX_FRAME_BYTES = 1 << 20  # the websockets client's default max_size; Kite clients take it
MAX_FRAME_PACKETS = 0xFFFF  # the frame's u16 count
DEPTH_QTY_MAX, DEPTH_ORDERS_MAX = 2000, 30
# The ten depth prices are ltp + c * tick: five bids below the last price, five asks from it.
DEPTH_STEPS = np.array([-1, -2, -3, -4, -5, 0, 1, 2, 3, 4], np.int64)

_INDEX_COLUMNS = [TOKEN, LTP, HIGH, LOW, OPEN, CLOSE]
_LEVEL_DT = np.dtype([("qty", ">u4"), ("price", ">u4"), ("orders", ">u2"), ("pad", "V2")])
_LTP_DT = np.dtype([("len", ">u2"), ("body", ">u4", (2,))])
_QUOTE_DT = np.dtype([("len", ">u2"), ("body", ">u4", (11,))])
_FULL_DT = np.dtype([("len", ">u2"), ("head", ">u4", (COLUMNS,)), ("depth", _LEVEL_DT, (10,))])
_INDEX_QUOTE_DT = np.dtype([("len", ">u2"), ("body", ">u4", (6,)), ("change", ">i4")])
_INDEX_FULL_DT = np.dtype([("len", ">u2"), ("body", ">u4", (6,)), ("change", ">i4"),
                           ("ts", ">u4")])
assert _FULL_DT.itemsize == 2 + FULL_LEN and _QUOTE_DT.itemsize == 2 + QUOTE_LEN

IntArray = npt.NDArray[np.int64]


class FrameBuilder:
    """Frames for many instruments at once, in whatever mode each is subscribed in.

    Depth is drawn at send time (random quantities around the last price): the market's
    lazily drawn book is the Upstox side's, and most Kite packets are not full ones."""

    def __init__(self, ticks: npt.ArrayLike, index_flags: npt.ArrayLike, seed: int) -> None:
        self._ticks = np.asarray(ticks, np.int64)
        self._index = np.asarray(index_flags, bool)
        self._rng = np.random.default_rng(seed)

    def frames(self, state: IntArray, indices: npt.ArrayLike,
               modes: npt.ArrayLike) -> list[bytes]:
        """Frames carrying the packet of each index (distinct) in its mode: ``state`` is the
        market's (instrument, column) array, ``modes`` one ``MODE_*`` code per index."""
        idx = np.asarray(indices, np.intp)
        codes = np.asarray(modes, np.int8)
        quote, full = idx[codes == MODE_QUOTE], idx[codes == MODE_FULL]
        quote_index, full_index = self._index[quote], self._index[full]
        runs = [self._leading(state, idx[codes == MODE_LTP], _LTP_DT),
                self._index_packets(state, quote[quote_index], full=False),
                self._leading(state, quote[~quote_index], _QUOTE_DT),
                self._index_packets(state, full[full_index], full=True),
                self._full(state, full[~full_index])]
        return split_frames([r for r in runs if len(r)])

    @staticmethod
    def _leading(state: IntArray, idx: npt.NDArray[np.intp], dtype: np.dtype) -> np.ndarray:
        """ltp and quote packets: the first columns of the full packet, as they are."""
        out = np.empty(len(idx), dtype)
        out["len"] = out.itemsize - 2
        out["body"] = state[idx, :dtype["body"].shape[0]]
        return out

    @staticmethod
    def _index_packets(state: IntArray, idx: npt.NDArray[np.intp], *, full: bool) -> np.ndarray:
        rows = state[idx]
        out = np.empty(len(idx), _INDEX_FULL_DT if full else _INDEX_QUOTE_DT)
        out["len"] = out.itemsize - 2
        out["body"] = rows[:, _INDEX_COLUMNS]
        out["change"] = rows[:, LTP] - rows[:, CLOSE]
        if full:
            out["ts"] = rows[:, EXCHANGE_TS]
        return out

    def _full(self, state: IntArray, idx: npt.NDArray[np.intp]) -> np.ndarray:
        rows = state[idx]
        out = np.zeros(len(idx), _FULL_DT)  # zeros: the depth entries' padding
        out["len"] = FULL_LEN
        out["head"] = rows
        depth = out["depth"]
        prices = rows[:, LTP, None] + self._ticks[idx, None] * DEPTH_STEPS
        depth["price"] = np.clip(prices, 0, U32_MAX)
        depth["qty"] = self._rng.integers(1, DEPTH_QTY_MAX + 1, depth.shape)
        depth["orders"] = self._rng.integers(1, DEPTH_ORDERS_MAX + 1, depth.shape)
        return out


def split_frames(runs: list[np.ndarray]) -> list[bytes]:
    """Runs of packets as frames within the u16 packet count and the byte limit (every packet
    is at most a full one, so a fixed number of packets per frame fits)."""
    total = sum(len(r) for r in runs)
    if total == 0:
        return []
    body = b"".join(r.tobytes() for r in runs)
    per_frame = min(MAX_FRAME_PACKETS, (MAX_FRAME_BYTES - 2) // (FULL_LEN + 2))
    if total <= per_frame:
        return [_U16.pack(total) + body]
    ends = np.cumsum(np.concatenate([np.full(len(r), r.itemsize) for r in runs]))
    cuts = [0, *ends[per_frame - 1::per_frame].tolist()]
    if cuts[-1] != len(body):
        cuts.append(len(body))
    return [_U16.pack(min(per_frame, total - n * per_frame)) + body[start:end]
            for n, (start, end) in enumerate(pairwise(cuts))]
