"""Pure decoder for the Zerodha Kite ticker's binary frames.

A frame is ``u16 count`` then ``count`` times ``(u16 length, packet)``, big-endian. The packet
kind is told by its length (see FEEDS.md): ltp 8, index quote 28, index full 32, quote 44,
full 184. Prices are integers divided by a per-segment divisor (segment = ``token & 0xFF``).
A 1-byte frame is the server's heartbeat.

Timestamps: a tick's ``ts`` is the exchange timestamp when the packet carries a non-zero one,
else the last trade time, else the receive time; a zero in either field means "not sent".
``bid``/``ask`` are the best depth prices of a full packet, ``None`` when that side is empty.

The official parser (``kiteconnect.KiteTicker._parse_binary``) is the test oracle. This one
avoids a Python step per packet: it splits the frame into runs of one packet kind (a feed
frame is mostly one mode), reads each run with one precompiled ``struct.Struct`` call, and
builds the run's ticks column by column with ``map`` (C loops): divisions, token lookups and
``Tick`` construction.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import repeat
from operator import itemgetter, mul, truediv
from typing import Any

from proto.events import Tick

SOURCE = "kite"
HEARTBEAT_LEN = 1

LTP_LEN = 8
INDEX_QUOTE_LEN = 28
INDEX_FULL_LEN = 32
QUOTE_LEN = 44
FULL_LEN = 184
PACKET_LENGTHS = (LTP_LEN, INDEX_QUOTE_LEN, INDEX_FULL_LEN, QUOTE_LEN, FULL_LEN)

SEGMENT_CDS = 3
SEGMENT_BCD = 6
SEGMENT_INDICES = 9
SEGMENT_NCO = 12

_U16 = struct.Struct(">H")
_LTP = struct.Struct(">II")
# token, ltp, high, low, open, close, change (signed, unused: recomputed by readers)
_INDEX_QUOTE = struct.Struct(">6Ii")
_INDEX_FULL = struct.Struct(">6IiI")
# token, ltp, last_qty, avg_price, volume, buy_qty, sell_qty, open, high, low, close
_QUOTE = struct.Struct(">11I")
# quote fields, last_trade_time, oi, oi_day_high, oi_day_low, exchange_ts, then the price of
# the first bid (depth entry 0 at byte 64) and of the first ask (depth entry 5 at byte 124).
_FULL = struct.Struct(">16I4xI56xI")


def divisor_for(segment: int) -> float:
    """The integer-price divisor of a segment."""
    if segment == SEGMENT_CDS:
        return 10_000_000.0
    if segment in (SEGMENT_BCD, SEGMENT_NCO):
        return 10_000.0
    return 100.0


_DIVISORS: tuple[float, ...] = tuple(divisor_for(seg) for seg in range(256))


class KiteDecodeError(ValueError):
    """A frame that is truncated or otherwise not a Kite ticker frame."""


def decode(frame: bytes, recv_us: int, symbols: Mapping[int, str]) -> list[Tick]:
    """The ticks of one frame, in frame order. Raises KiteDecodeError and nothing else."""
    return decode_counting(frame, recv_us, symbols)[0]


def decode_counting(frame: bytes, recv_us: int,
                    symbols: Mapping[int, str]) -> tuple[list[Tick], int]:
    """Like ``decode``, and also the number of packets skipped for an unknown length."""
    try:
        return _decode(frame, recv_us, symbols)
    except KiteDecodeError:
        raise
    except (struct.error, TypeError, ValueError, OverflowError) as exc:
        raise KiteDecodeError(f"malformed frame: {exc}") from None


# Each packet kind read with its u16 length prefix: the columns of a run of k packets of one
# kind are then plain strided slices of one flat tuple (column 0 is the length).
_UNITS = {
    LTP_LEN: "HII",  # length, token, ltp
    INDEX_QUOTE_LEN: "H6Ii",
    INDEX_FULL_LEN: "H6IiI",
    QUOTE_LEN: "H11I",
    FULL_LEN: "H16I4xI56xI52x",
}
_WIDTH = {length: len(struct.Struct(">" + unit).unpack(bytes(length + 2)))
          for length, unit in _UNITS.items()}
CHUNK = 64  # runs are read 64 packets per struct call; shorter tails use their own struct
_RUN_STRUCTS: dict[tuple[int, int], struct.Struct] = {}
_TOKEN_CACHE_MAX = 200_000


class _TokenText(dict[int, str]):
    """str(token), memoised: the same few thousand tokens arrive all day."""

    def __missing__(self, token: int) -> str:
        if len(self) > _TOKEN_CACHE_MAX:
            self.clear()
        text = self[token] = str(token)
        return text


class _TokenDivisor(dict[int, float]):
    def __missing__(self, token: int) -> float:
        if len(self) > _TOKEN_CACHE_MAX:
            self.clear()
        d = self[token] = _DIVISORS[token & 0xFF]
        return d


_TOKEN_TEXT = _TokenText()
_TOKEN_DIVISOR = _TokenDivisor()


def _run_struct(length: int, k: int) -> struct.Struct:
    s = _RUN_STRUCTS.get((length, k))
    if s is None:
        s = _RUN_STRUCTS[(length, k)] = struct.Struct(">" + _UNITS[length] * k)
    return s


def _runs(frame: bytes, count: int) -> list[tuple[int, int, int]]:
    """The frame as runs of consecutive packets of one length: (offset, length, k).

    A run is found without a Python step per packet: the length fields of a run of
    ``length``-byte packets sit every ``length + 2`` bytes, so a strided slice of the frame
    holds their high (or low) bytes, and its leading stretch equal to the run's byte counts
    the run. The first differing position is the next packet's own length field, so the
    count is exact."""
    size = len(frame)
    runs = []
    pos, left = 2, count
    while left:
        if pos + 2 > size:
            raise KiteDecodeError(f"truncated frame: packet {count - left + 1} of {count} has "
                                  f"no length ({size} bytes)")
        length = frame[pos] << 8 | frame[pos + 1]
        stride = length + 2
        fit = min(left, (size - pos) // stride)
        if fit == 0:
            raise KiteDecodeError(
                f"truncated frame: packet {count - left + 1} of {count} needs {length} bytes "
                f"at offset {pos + 2}, frame has {size}")
        end = pos + fit * stride
        if fit == 1:
            k = 1
        else:
            high = frame[pos:end:stride]
            low = frame[pos + 1:end:stride]
            k = min(fit - len(high.lstrip(high[:1])), fit - len(low.lstrip(low[:1])))
        runs.append((pos, length, k))
        pos += k * stride
        left -= k
    if pos != size:
        raise KiteDecodeError(f"malformed frame: {size - pos} bytes after the last of "
                              f"{count} packets")
    return runs


def _flat(frame: bytes, pos: int, length: int, k: int) -> tuple[int, ...] | list[int]:
    """The values of ``k`` packets of one kind at ``pos``, packet after packet."""
    if k <= CHUNK:
        return _run_struct(length, k).unpack_from(frame, pos)
    whole, tail = divmod(k, CHUNK)
    stride = (length + 2) * CHUNK
    flat: list[int] = []
    for part in _run_struct(length, CHUNK).iter_unpack(
            memoryview(frame)[pos:pos + whole * stride]):
        flat += part
    if tail:
        flat += _run_struct(length, tail).unpack_from(frame, pos + whole * stride)
    return flat


def _symbols(symbols: Mapping[int, str], tokens: Sequence[int],
             get: Callable[[Mapping[int, Any]], Any]) -> Sequence[str]:
    try:
        syms = get(symbols)
        if len(tokens) == 1:
            syms = (syms,)
        if "" not in syms:
            return syms  # type: ignore[no-any-return]
    except KeyError:
        pass
    return [symbols.get(tok) or f"KITE:{tok}" for tok in tokens]


def _decode(frame: bytes, recv_us: int, symbols: Mapping[int, str]) -> tuple[list[Tick], int]:
    size = len(frame)
    if size == HEARTBEAT_LEN:
        return [], 0
    if size < 2:
        raise KiteDecodeError("empty frame")
    runs = _runs(frame, _U16.unpack_from(frame, 0)[0])
    if len(runs) == 1:
        pos, length, k = runs[0]
        if length not in _UNITS:
            return [], k
        return _decode_run(_flat(frame, pos, length, k), length, recv_us, symbols), 0
    ticks: list[Tick] = []
    skipped = 0
    for pos, length, k in runs:
        if length in _UNITS:
            ticks += _decode_run(_flat(frame, pos, length, k), length, recv_us, symbols)
        else:
            skipped += k
    return ticks, skipped


def _decode_run(flat: Sequence[int], length: int, recv_us: int,
                symbols: Mapping[int, str]) -> list[Tick]:
    """Ticks of a run of one packet kind, built column by column (C-level loops)."""
    w = _WIDTH[length]
    toks = flat[1::w]
    get = itemgetter(*toks)
    syms = _symbols(symbols, toks, get)
    texts, divs = (get(_TOKEN_TEXT), get(_TOKEN_DIVISOR)) if len(toks) > 1 else (
        (_TOKEN_TEXT[toks[0]],), (_TOKEN_DIVISOR[toks[0]],))
    ltps = map(truediv, flat[2::w], divs)
    rx_ms = repeat(recv_us // 1000)
    rx = repeat(recv_us)
    if length == LTP_LEN:
        return list(map(Tick, syms, texts, repeat(SOURCE), ltps, repeat(0), rx_ms, rx))
    if length == QUOTE_LEN:  # token, ltp, last_qty, avg, volume, buy_q, sell_q, o, h, l, c
        return list(map(Tick, syms, texts, repeat(SOURCE), ltps, flat[5::w], rx_ms, rx,
                        _NONE, _NONE, _NONE, map(truediv, flat[11::w], divs),
                        map(truediv, flat[8::w], divs), map(truediv, flat[9::w], divs),
                        map(truediv, flat[10::w], divs)))
    if length == FULL_LEN:  # quote fields, ltt, oi, oi_high, oi_low, exchange_ts, bid, ask
        return list(map(Tick, syms, texts, repeat(SOURCE), ltps, flat[5::w],
                        _times(flat[16::w], flat[12::w], recv_us), rx, flat[13::w],
                        _prices(flat[17::w], divs), _prices(flat[18::w], divs),
                        map(truediv, flat[11::w], divs), map(truediv, flat[8::w], divs),
                        map(truediv, flat[9::w], divs), map(truediv, flat[10::w], divs)))
    # index quote / full: token, ltp, high, low, open, close, change[, exchange_ts]
    ts = _times(flat[8::w], (), recv_us) if length == INDEX_FULL_LEN else rx_ms
    return list(map(Tick, syms, texts, repeat(SOURCE), ltps, repeat(0), ts, rx,
                    _NONE, _NONE, _NONE, map(truediv, flat[6::w], divs),
                    map(truediv, flat[5::w], divs), map(truediv, flat[3::w], divs),
                    map(truediv, flat[4::w], divs)))


_NONE = repeat(None)


def _times(exchange_s: Sequence[int], trade_s: Sequence[int],
           recv_us: int) -> Iterable[int]:
    """Tick times in ms: the exchange time, else the last trade time, else receive time."""
    if 0 not in exchange_s:
        return map(mul, exchange_s, repeat(1000))
    fallback = recv_us // 1000
    trade = trade_s or repeat(0)
    return [e * 1000 if e else (t * 1000 if t else fallback)
            for e, t in zip(exchange_s, trade, strict=False)]


def _prices(raw: Sequence[int], divs: Sequence[float]) -> Iterable[float | None]:
    """Best depth prices; None for an empty side (price 0)."""
    if 0 not in raw:
        return map(truediv, raw, divs)
    return [p / d if p else None for p, d in zip(raw, divs, strict=True)]
