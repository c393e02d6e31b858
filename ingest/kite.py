"""Pure decoder for the Zerodha Kite ticker's binary frames.

A frame is ``u16 count`` then ``count`` times ``(u16 length, packet)``, big-endian. The packet
kind is told by its length (see FEEDS.md): ltp 8, index quote 28, index full 32, quote 44,
full 184. Prices are integers divided by a per-segment divisor (segment = ``token & 0xFF``).
A 1-byte frame is the server's heartbeat.

Timestamps: a tick's ``ts`` is the exchange timestamp when the packet carries a non-zero one,
else the last trade time, else the receive time; a zero in either field means "not sent".
``bid``/``ask`` are the best depth prices of a full packet, ``None`` when that side is empty.

The official parser (``kiteconnect.KiteTicker._parse_binary``) is the test oracle; this one
reads each packet with a single precompiled ``struct.Struct`` call and builds ``Tick``
positionally, which is what makes it several times faster.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

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


def _decode(frame: bytes, recv_us: int, symbols: Mapping[int, str]) -> tuple[list[Tick], int]:
    size = len(frame)
    if size == HEARTBEAT_LEN:
        return [], 0
    if size < 2:
        raise KiteDecodeError("empty frame")
    (count,) = _U16.unpack_from(frame, 0)
    rx_ms = recv_us // 1000
    ticks: list[Tick] = []
    append = ticks.append
    get_sym = symbols.get
    divisors = _DIVISORS
    skipped = 0
    pos = 2
    for index in range(count):
        if pos + 2 > size:
            raise KiteDecodeError(
                f"truncated frame: packet {index + 1} of {count} has no length ({size} bytes)")
        (length,) = _U16.unpack_from(frame, pos)
        start = pos + 2
        pos = start + length
        if pos > size:
            raise KiteDecodeError(f"truncated frame: packet {index + 1} of {count} needs "
                                  f"{length} bytes at offset {start}, frame has {size}")
        if length == FULL_LEN:
            (tok, ltp, _lq, _avg, vol, _bq, _sq, o, h, lo, c, ltt, oi, _oih, _oil, ets,
             bid, ask) = _FULL.unpack_from(frame, start)
            d = divisors[tok & 0xFF]
            append(Tick(
                get_sym(tok) or f"KITE:{tok}", str(tok), SOURCE, ltp / d, vol,
                ets * 1000 if ets else (ltt * 1000 if ltt else rx_ms), recv_us,
                oi, bid / d if bid else None, ask / d if ask else None,
                c / d, o / d, h / d, lo / d))
        elif length == QUOTE_LEN:
            tok, ltp, _lq, _avg, vol, _bq, _sq, o, h, lo, c = _QUOTE.unpack_from(frame, start)
            d = divisors[tok & 0xFF]
            append(Tick(
                get_sym(tok) or f"KITE:{tok}", str(tok), SOURCE, ltp / d, vol, rx_ms, recv_us,
                None, None, None, c / d, o / d, h / d, lo / d))
        elif length == LTP_LEN:
            tok, ltp = _LTP.unpack_from(frame, start)
            append(Tick(get_sym(tok) or f"KITE:{tok}", str(tok), SOURCE,
                        ltp / divisors[tok & 0xFF], 0, rx_ms, recv_us))
        elif length == INDEX_FULL_LEN:
            tok, ltp, h, lo, o, c, _chg, ets = _INDEX_FULL.unpack_from(frame, start)
            d = divisors[tok & 0xFF]
            append(Tick(
                get_sym(tok) or f"KITE:{tok}", str(tok), SOURCE, ltp / d, 0,
                ets * 1000 if ets else rx_ms, recv_us,
                None, None, None, c / d, o / d, h / d, lo / d))
        elif length == INDEX_QUOTE_LEN:
            tok, ltp, h, lo, o, c, _chg = _INDEX_QUOTE.unpack_from(frame, start)
            d = divisors[tok & 0xFF]
            append(Tick(
                get_sym(tok) or f"KITE:{tok}", str(tok), SOURCE, ltp / d, 0, rx_ms, recv_us,
                None, None, None, c / d, o / d, h / d, lo / d))
        else:
            skipped += 1
    if pos != size:
        raise KiteDecodeError(f"malformed frame: {size - pos} bytes after the last of "
                              f"{count} packets")
    return ticks, skipped
