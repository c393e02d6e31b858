"""The simulator's Upstox side, in data: instrument keys, the instrument master, and the
``FeedResponse`` frames built from the market's quotes (the same quotes the Kite side sends).

Instrument keys follow Upstox: ``NSE_EQ|<ISIN>`` (and ``BSE_EQ|<ISIN>``) for equities,
``<SEGMENT>_INDEX|<Index Name>`` for indices (``NSE_INDEX|Nifty 50``), and
``<SEGMENT>|<exchange_token>`` for derivatives. INFY, RELIANCE and TCS keep their real ISINs;
every other equity gets a generated, well-formed one (valid check digit), stable per symbol.

A feed frame is the concatenation of a small header message (type, currentTs) and one
serialized single-feed message per instrument: protobuf merges concatenated messages (map
entries add up), so each instrument's bytes are built once per market step and shared by
every session subscribed to it in the same mode.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterable, Mapping, Sequence

import orjson

from ingest.sim.kite_wire import Quote
from ingest.sim.universe import Instrument
from proto import MarketDataFeedV3_pb2 as pb

MODES = ("ltpc", "full", "option_greeks", "full_d30")
REQUEST_MODE = {"ltpc": pb.ltpc, "full": pb.full_d5, "option_greeks": pb.option_greeks,
                "full_d30": pb.full_d30}
DEPTH_LEVELS = {"full": 5, "full_d30": 30}

REAL_ISINS = {"NSE:INFY": "INE009A01021", "NSE:RELIANCE": "INE002A01018",
              "NSE:TCS": "INE467B01029"}

# (Kite exchange, Kite segment) -> Upstox segment
_SEGMENTS = {("NSE", "NSE"): "NSE_EQ", ("NSE", "INDICES"): "NSE_INDEX",
             ("BSE", "BSE"): "BSE_EQ", ("BSE", "INDICES"): "BSE_INDEX",
             ("NFO", "NFO-FUT"): "NSE_FO", ("NFO", "NFO-OPT"): "NSE_FO",
             ("BFO", "BFO-FUT"): "BSE_FO", ("BFO", "BFO-OPT"): "BSE_FO",
             ("CDS", "CDS-FUT"): "NCD_FO", ("BCD", "BCD-FUT"): "BCD_FO",
             ("MCX", "MCX-FUT"): "MCX_FO", ("NCO", "NCO-FUT"): "NSE_COM"}
_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def segment_of(inst: Instrument) -> str:
    return _SEGMENTS.get((inst.exchange, inst.segment)) or (
        f"{inst.exchange}_INDEX" if inst.is_index else f"{inst.exchange}_EQ")


def isin_check_digit(body: str) -> str:
    """The ISIN check digit: Luhn over the digits, letters counted as 10..35."""
    digits = "".join(str(int(ch, 36)) for ch in body)
    total = 0
    for n, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if n % 2 == 0 else 1)
        total += d // 10 + d % 10
    return str((10 - total % 10) % 10)


def _generated_isin(symbol: str, salt: int) -> str:
    h = zlib.crc32(f"{symbol}#{salt}".encode())
    issuer = "".join(_ALNUM[(h >> (5 * i)) % 36] for i in range(4))
    body = f"INE{issuer}01{(h >> 20) % 100:02d}"[:11]
    return body + isin_check_digit(body)


def instrument_keys(instruments: Sequence[Instrument]) -> list[str]:
    """The Upstox instrument key of each instrument, unique, in the same order."""
    taken = set(REAL_ISINS.values())
    keys = []
    for inst in instruments:
        segment = segment_of(inst)
        if inst.is_index:
            keys.append(f"{segment}|{inst.name.title()}")
        elif inst.instrument_type == "EQ":
            isin = REAL_ISINS.get(inst.symbol)
            salt = 0
            while isin is None or (isin in taken and inst.symbol not in REAL_ISINS):
                isin = _generated_isin(inst.symbol, salt)
                salt += 1
            taken.add(isin)
            keys.append(f"{segment}|{isin}")
        else:
            keys.append(f"{segment}|{inst.exchange_token}")
    return keys


def master_json_gz(instruments: Sequence[Instrument], keys: Sequence[str]) -> bytes:
    """The instrument master: a gzipped JSON array of rows in Upstox's field names."""
    rows = []
    for inst, key in zip(instruments, keys, strict=True):
        row: dict[str, object] = {
            "instrument_key": key, "exchange_token": str(inst.exchange_token),
            "trading_symbol": inst.tradingsymbol, "name": inst.name.title() if inst.is_index
            else inst.name, "segment": segment_of(inst), "exchange": inst.exchange,
            "instrument_type": "INDEX" if inst.is_index else inst.instrument_type,
            "lot_size": inst.lot_size, "tick_size": inst.tick_size,
        }
        if inst.instrument_type == "EQ" and not inst.is_index:
            row["isin"] = key.split("|", 1)[1]
        rows.append(row)
    return gzip.compress(orjson.dumps(rows), mtime=0)


def header(kind: pb.Type, now_ms: int) -> bytes:
    return pb.FeedResponse(type=kind, currentTs=now_ms).SerializeToString()


def market_info(segments: Iterable[str], now_ms: int, status: int = pb.NORMAL_OPEN) -> bytes:
    return market_info_of(dict.fromkeys(segments, status), now_ms)


def market_info_of(statuses: Mapping[str, int], now_ms: int) -> bytes:
    """A ``market_info`` message: segment -> ``MarketStatus`` value."""
    msg = pb.FeedResponse(type=pb.market_info, currentTs=now_ms)
    for segment, status in statuses.items():
        msg.marketInfo.segmentStatus[segment] = status
    return msg.SerializeToString()


def feed_bytes(inst: Instrument, key: str, q: Quote, mode: str, day_start_ms: int) -> bytes:
    """One instrument's feed in ``mode`` as a serialized single-entry FeedResponse."""
    msg = pb.FeedResponse()
    feed = msg.feeds[key]
    feed.requestMode = REQUEST_MODE[mode]
    d = inst.divisor
    if mode == "ltpc":
        _ltpc(feed.ltpc, q, d, inst.is_index)
    elif mode == "option_greeks":
        fl = feed.firstLevelWithGreeks
        _ltpc(fl.ltpc, q, d, inst.is_index)
        if not inst.is_index:
            if q.bids and q.asks:
                best_bid, best_ask = q.bids[0], q.asks[0]
                fl.firstDepth.bidQ, fl.firstDepth.bidP = best_bid.qty, best_bid.price / d
                fl.firstDepth.askQ, fl.firstDepth.askP = best_ask.qty, best_ask.price / d
            fl.vtt, fl.oi = q.volume, float(q.oi)
            if inst.instrument_type == "FUT":
                fl.optionGreeks.delta = 1.0
    elif inst.is_index:
        ix = feed.fullFeed.indexFF
        _ltpc(ix.ltpc, q, d, True)
        _day_bar(ix.marketOHLC.ohlc.add(), q, d, day_start_ms)
    else:
        _market_full(feed.fullFeed.marketFF, q, d, DEPTH_LEVELS[mode], day_start_ms)
    return msg.SerializeToString()


def _ltpc(c: pb.LTPC, q: Quote, d: float, is_index: bool) -> None:
    c.ltp = q.ltp / d
    c.ltt = (q.exchange_ts if is_index else q.last_trade_time) * 1000
    c.cp = q.close / d
    if not is_index:
        c.ltq = q.last_qty


def _day_bar(bar: pb.OHLC, q: Quote, d: float, day_start_ms: int) -> None:
    bar.interval = "1d"
    bar.open, bar.high, bar.low, bar.close = q.open / d, q.high / d, q.low / d, q.ltp / d
    bar.vol, bar.ts = q.volume, day_start_ms


def _market_full(ff: pb.MarketFullFeed, q: Quote, d: float, levels: int,
                 day_start_ms: int) -> None:
    _ltpc(ff.ltpc, q, d, False)
    bids, asks = list(q.bids), list(q.asks)
    book = ff.marketLevel.bidAskQuote
    for n in range(min(len(bids), len(asks), levels)):
        book.add(bidQ=bids[n].qty, bidP=bids[n].price / d, askQ=asks[n].qty,
                 askP=asks[n].price / d)
    if levels > len(bids) and bids and asks:
        # The Kite-side book has five levels: extend it evenly for the 30-level mode.
        step = max(asks[-1].price - asks[-2].price, 1) if len(asks) > 1 else 1
        for n in range(len(bids), levels):
            src_bid, src_ask = bids[n % len(bids)], asks[n % len(asks)]
            extra = (n - len(bids) + 1) * step
            book.add(bidQ=src_bid.qty, bidP=max(bids[-1].price - extra, 0) / d,
                     askQ=src_ask.qty, askP=(asks[-1].price + extra) / d)
    _day_bar(ff.marketOHLC.ohlc.add(), q, d, day_start_ms)
    ff.atp = q.avg_price / d
    ff.vtt = q.volume
    ff.oi = float(q.oi)
    ff.tbq, ff.tsq = float(q.buy_qty), float(q.sell_qty)
