"""Pure decoder for the Upstox Market Data Feed V3: one protobuf ``FeedResponse`` per frame.

Fields are read straight from the generated message objects (on the upb backend); converting
to dicts (the SDK's ``MessageToDict``) costs more than ten times as much and turns int64 into
strings.

Mapping to ``Tick`` (see FEEDS.md for the schema):

- every feed: ``ltp`` and ``ltt`` from its LTPC; ``pc`` is the LTPC's ``cp`` (previous close);
  ``ts`` is ``ltt`` when sent, else the message's ``currentTs``, else the receive time.
- ``marketFF`` (full modes): ``vol`` from ``vtt``, ``oi``, ``bid``/``ask`` from the first
  ``marketLevel`` quote, ``o``/``h``/``l`` from the ``"1d"`` OHLC entry.
- ``indexFF``: LTPC and the ``"1d"`` OHLC; ``vol`` is 0.
- ``firstLevelWithGreeks``: LTPC, ``bid``/``ask`` from ``firstDepth``, ``vtt``, ``oi``.

Proto3 does not send zeros, so a zero ``cp``, ``oi``, bid or ask price reads as "not sent"
(``None``). A ``market_info`` message carries no ticks: its per-segment status comes back in
``Decoded.market_status``. A feed entry with none of the three payloads yields no tick.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from google.protobuf.internal import api_implementation
from google.protobuf.message import DecodeError

from proto import MarketDataFeedV3_pb2 as pb
from proto.events import Tick

SOURCE = "upstox"
DAY_INTERVAL = "1d"

_FeedResponse = pb.FeedResponse
_MARKET_INFO = pb.market_info
_STATUS_NAMES = {value: name for name, value in pb.MarketStatus.items()}

log = logging.getLogger("stormalert.ingest")


class UpstoxDecodeError(ValueError):
    """A frame that is not a Market Data Feed V3 ``FeedResponse``."""


@dataclass(frozen=True, slots=True)
class Decoded:
    """One frame: its ticks, and for a ``market_info`` message the status of each segment
    (``{"NSE_EQ": "NORMAL_OPEN", ...}``), else ``None``."""

    ticks: list[Tick]
    market_status: dict[str, str] | None = None


def backend_is_fast() -> bool:
    """True on the upb (C) protobuf backend; logs a warning otherwise (~50x slower)."""
    backend = api_implementation.Type()
    if backend != "upb":
        log.warning("protobuf runs on the %r backend, not upb: Upstox decoding will be "
                    "~50x slower (install a protobuf wheel with upb)", backend)
        return False
    return True


def decode(frame: bytes, recv_us: int, symbols: Mapping[str, str]) -> list[Tick]:
    """The ticks of one frame. Raises UpstoxDecodeError and nothing else."""
    msg = _parse(frame)
    return [] if msg.type == _MARKET_INFO else _ticks(msg, recv_us, symbols)


def decode_frame(frame: bytes, recv_us: int, symbols: Mapping[str, str]) -> Decoded:
    """Ticks and market status of one frame. Raises UpstoxDecodeError and nothing else."""
    msg = _parse(frame)
    if msg.type == _MARKET_INFO:
        return Decoded([], market_status(msg))
    return Decoded(_ticks(msg, recv_us, symbols))


def _parse(frame: bytes) -> pb.FeedResponse:
    try:
        return _FeedResponse.FromString(frame)
    except (DecodeError, TypeError, ValueError, RuntimeError) as exc:
        raise UpstoxDecodeError(f"not a FeedResponse ({len(frame)} bytes): {exc}") from None


def market_status(msg: pb.FeedResponse) -> dict[str, str]:
    """Segment -> status name of a message's ``marketInfo`` (unknown numbers as digits)."""
    names = _STATUS_NAMES
    return {segment: names.get(status, str(status))
            for segment, status in msg.marketInfo.segmentStatus.items()}


def _ticks(msg: pb.FeedResponse, recv_us: int, symbols: Mapping[str, str]) -> list[Tick]:
    """One tick per feed entry. The market full feed, the bulk of a full-mode frame, is read
    inline: each submessage access makes a upb wrapper (~0.1 µs), so the loop takes each one
    once; the map is iterated by key because ``items()`` is the pure-Python Mapping mixin,
    twice the cost of ``feeds[key]``; after a market full feed the next is taken for one too,
    which a non-zero price confirms (stubs read 0), else the exact ``HasField`` path decides;
    an empty depth or bar list is rarer than a full one, hence ``IndexError``."""
    fallback_ms = msg.currentTs or recv_us // 1000
    get_sym = symbols.get
    ticks: list[Tick] = []
    append = ticks.append
    feeds = msg.feeds
    expect_full = True  # frames are mostly of one kind: guess from the last feed
    for key in feeds:
        feed = feeds[key]
        sym = get_sym(key) or f"UPSTOX:{key}"
        # feed.fullFeed and its marketFF are stubs when unset, whose ltp reads 0: a price
        # stands for "a market full feed" without a HasField per feed; a zero price (never
        # sent by a live market, but possible) takes the exact path below.
        if expect_full:
            ff = feed.fullFeed.marketFF
            c = ff.ltpc
            if not c.ltp:
                expect_full = False
        if not expect_full:
            if not (feed.HasField("fullFeed") and (full := feed.fullFeed).HasField("marketFF")):
                _append_other(append, feed, key, sym, fallback_ms, recv_us)
                continue
            expect_full = True
            ff = full.marketFF
            c = ff.ltpc
        try:
            best = ff.marketLevel.bidAskQuote[0]
        except IndexError:
            bid = ask = None
        else:
            bid, ask = best.bidP or None, best.askP or None
        bars = ff.marketOHLC.ohlc
        try:
            bar = bars[0]
        except IndexError:
            o = h = lo = None
        else:
            if bar.interval == DAY_INTERVAL:
                o, h, lo = bar.open, bar.high, bar.low
            else:
                o, h, lo = _day_bar(bars)
        append(Tick(sym, key, SOURCE, c.ltp, ff.vtt, c.ltt or fallback_ms, recv_us,
                    ff.oi or None, bid, ask, c.cp or None, o, h, lo))
    return ticks


def _append_other(append: Callable[[Tick], None], feed: pb.Feed, key: str, sym: str,
                  fallback_ms: int, recv_us: int) -> None:
    """The tick of an index full, ``ltpc`` or ``firstLevelWithGreeks`` feed; nothing for an
    empty one."""
    kind = feed.WhichOneof("FeedUnion")
    if kind == "fullFeed":
        append(_index_full(feed.fullFeed.indexFF, key, sym, fallback_ms, recv_us))
    elif kind == "ltpc":
        c = feed.ltpc
        append(Tick(sym, key, SOURCE, c.ltp, 0, c.ltt or fallback_ms, recv_us,
                    None, None, None, c.cp or None))
    elif kind == "firstLevelWithGreeks":
        append(_first_level(feed.firstLevelWithGreeks, key, sym, fallback_ms, recv_us))


def _index_full(ix: pb.IndexFullFeed, key: str, sym: str, fallback_ms: int,
                recv_us: int) -> Tick:
    c = ix.ltpc
    o, h, lo = _day_bar(ix.marketOHLC.ohlc)
    return Tick(sym, key, SOURCE, c.ltp, 0, c.ltt or fallback_ms, recv_us,
                None, None, None, c.cp or None, o, h, lo)


def _day_bar(bars: Sequence[pb.OHLC]) -> tuple[float | None, float | None, float | None]:
    """Open, high, low of the "1d" bar (Upstox sends it first; callers try that one inline)."""
    for bar in bars:
        if bar.interval == DAY_INTERVAL:
            return bar.open, bar.high, bar.low
    return None, None, None


def _first_level(fl: pb.FirstLevelWithGreeks, key: str, sym: str, fallback_ms: int,
                 recv_us: int) -> Tick:
    c = fl.ltpc
    depth = fl.firstDepth
    return Tick(sym, key, SOURCE, c.ltp, fl.vtt, c.ltt or fallback_ms, recv_us,
                fl.oi or None, depth.bidP or None, depth.askP or None, c.cp or None)
