"""``ingest.upstox.decode`` against the SDK's own parsing, on generated messages of every kind,
and fuzzed: arbitrary bytes only ever raise UpstoxDecodeError."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest import upstox
from ingest.sim import universe
from ingest.sim import upstox_wire as wire
from ingest.sim.market import Market
from proto import MarketDataFeedV3_pb2 as pb
from tests.ingest.upstox_oracle import oracle_ticks, sdk_dict

RX = 1_732_000_000_123_456
prices = st.floats(min_value=0, max_value=1e7, allow_nan=False, allow_infinity=False)
int64s = st.integers(min_value=0, max_value=2**62)
keys = st.sampled_from(["NSE_EQ|INE009A01021", "NSE_INDEX|Nifty 50", "NSE_FO|45450",
                        "BSE_EQ|INE002A01018", "MCX_FO|1", "NSE_EQ|INE467B01029"])


def _ltpc(c: pb.LTPC, draw: st.DrawFn) -> None:
    c.ltp, c.ltt, c.ltq, c.cp = draw(prices), draw(int64s), draw(int64s), draw(prices)


def _ohlc(ohlc: pb.MarketOHLC, draw: st.DrawFn) -> None:
    for interval in draw(st.lists(st.sampled_from(["1d", "I1", "I30"]), max_size=3)):
        ohlc.ohlc.add(interval=interval, open=draw(prices), high=draw(prices),
                      low=draw(prices), close=draw(prices), vol=draw(int64s), ts=draw(int64s))


@st.composite
def feed_responses(draw: st.DrawFn) -> bytes:
    msg = pb.FeedResponse(type=draw(st.sampled_from([pb.initial_feed, pb.live_feed])),
                          currentTs=draw(int64s))
    for key in draw(st.lists(keys, max_size=6, unique=True)):
        feed = msg.feeds[key]
        kind = draw(st.sampled_from(["ltpc", "marketFF", "indexFF", "greeks", "none"]))
        if kind == "ltpc":
            _ltpc(feed.ltpc, draw)
        elif kind == "marketFF":
            ff = feed.fullFeed.marketFF
            _ltpc(ff.ltpc, draw)
            for _ in range(draw(st.integers(0, 6))):
                ff.marketLevel.bidAskQuote.add(bidQ=draw(int64s), bidP=draw(prices),
                                               askQ=draw(int64s), askP=draw(prices))
            _ohlc(ff.marketOHLC, draw)
            ff.vtt, ff.oi, ff.atp = draw(int64s), draw(prices), draw(prices)
        elif kind == "indexFF":
            _ltpc(feed.fullFeed.indexFF.ltpc, draw)
            _ohlc(feed.fullFeed.indexFF.marketOHLC, draw)
        elif kind == "greeks":
            fl = feed.firstLevelWithGreeks
            _ltpc(fl.ltpc, draw)
            fl.firstDepth.bidP, fl.firstDepth.askP = draw(prices), draw(prices)
            fl.vtt, fl.oi, fl.optionGreeks.delta = draw(int64s), draw(prices), draw(prices)
        else:
            feed.requestMode = pb.full_d5
    return msg.SerializeToString()


def ours(frame: bytes, symbols: dict[str, str]) -> list[dict]:
    return [t.to_dict() for t in upstox.decode(frame, RX, symbols)]


def by_tok(ticks: list[dict]) -> dict[str, dict]:
    return {t["tok"]: t for t in ticks}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(feed_responses())
def test_matches_the_sdk_field_by_field(frame: bytes) -> None:
    symbols = {"NSE_EQ|INE009A01021": "NSE:INFY"}
    mine, theirs = ours(frame, symbols), oracle_ticks(frame, RX, symbols)
    assert len(mine) == len(theirs)
    assert by_tok(mine) == by_tok(theirs)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_the_decode_error(data: bytes) -> None:
    try:
        ticks = upstox.decode(data, RX, {})
    except upstox.UpstoxDecodeError:
        return
    assert all(t.src == "upstox" for t in ticks)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(feed_responses(), st.data())
def test_damaged_messages_only_raise_the_decode_error(frame: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, max(len(frame) - 1, 0)))
    flip = data.draw(st.integers(0, 255))
    damaged = bytearray(frame[:cut] if data.draw(st.booleans()) else frame)
    if damaged:
        damaged[data.draw(st.integers(0, len(damaged) - 1))] ^= flip
    with contextlib.suppress(upstox.UpstoxDecodeError):
        upstox.decode(bytes(damaged), RX, {})


def test_every_kind_by_value() -> None:
    msg = pb.FeedResponse(type=pb.live_feed, currentTs=1_732_000_000_999)
    ff = msg.feeds["NSE_EQ|INE009A01021"].fullFeed.marketFF
    ff.ltpc.ltp, ff.ltpc.ltt, ff.ltpc.cp = 1573.7, 1_732_000_000_000, 1567.8
    ff.marketLevel.bidAskQuote.add(bidQ=5, bidP=1573.4, askQ=7, askP=1573.75)
    ff.marketOHLC.ohlc.add(interval="I1", open=1, high=2, low=0.5, close=1.5)
    ff.marketOHLC.ohlc.add(interval="1d", open=1569.15, high=1575, low=1561.05, close=1573.7)
    ff.vtt, ff.oi = 1_192_471, 0.0
    ix = msg.feeds["NSE_INDEX|Nifty 50"].fullFeed.indexFF
    ix.ltpc.ltp, ix.ltpc.cp = 24_000.5, 23_900.0
    ix.marketOHLC.ohlc.add(interval="1d", open=23_950, high=24_010, low=23_900)
    msg.feeds["NSE_FO|45450"].ltpc.ltp = 101.25
    fl = msg.feeds["NSE_FO|45451"].firstLevelWithGreeks
    fl.ltpc.ltp, fl.ltpc.ltt, fl.vtt, fl.oi = 12.5, 5, 1000, 250.0
    fl.firstDepth.bidP, fl.firstDepth.askP = 12.45, 12.55
    symbols = {"NSE_EQ|INE009A01021": "NSE:INFY", "NSE_INDEX|Nifty 50": "NSE:NIFTY 50"}
    got = by_tok(ours(msg.SerializeToString(), symbols))
    assert got["NSE_EQ|INE009A01021"] == {
        "sym": "NSE:INFY", "tok": "NSE_EQ|INE009A01021", "src": "upstox", "ltp": 1573.7,
        "vol": 1_192_471, "ts": 1_732_000_000_000, "rx": RX, "bid": 1573.4, "ask": 1573.75,
        "pc": 1567.8, "o": 1569.15, "h": 1575.0, "l": 1561.05}
    assert got["NSE_INDEX|Nifty 50"] == {
        "sym": "NSE:NIFTY 50", "tok": "NSE_INDEX|Nifty 50", "src": "upstox", "ltp": 24_000.5,
        "vol": 0, "ts": 1_732_000_000_999, "rx": RX, "pc": 23_900.0, "o": 23_950.0,
        "h": 24_010.0, "l": 23_900.0}
    assert got["NSE_FO|45450"] == {"sym": "UPSTOX:NSE_FO|45450", "tok": "NSE_FO|45450",
                                   "src": "upstox", "ltp": 101.25, "vol": 0,
                                   "ts": 1_732_000_000_999, "rx": RX}
    assert got["NSE_FO|45451"]["bid"] == 12.45 and got["NSE_FO|45451"]["oi"] == 250.0
    assert got["NSE_FO|45451"]["vol"] == 1000 and got["NSE_FO|45451"]["ts"] == 5


def test_receive_time_is_the_last_fallback() -> None:
    msg = pb.FeedResponse(type=pb.live_feed)
    msg.feeds["NSE_FO|1"].ltpc.ltp = 1.0
    (tick,) = upstox.decode(msg.SerializeToString(), RX, {})
    assert tick.ts == RX // 1000


def test_market_info_gives_status_and_no_ticks() -> None:
    frame = wire.market_info(["NSE_EQ", "NSE_FO"], 1, pb.NORMAL_OPEN)
    decoded = upstox.decode_frame(frame, RX, {})
    assert decoded.ticks == []
    assert decoded.market_status == {"NSE_EQ": "NORMAL_OPEN", "NSE_FO": "NORMAL_OPEN"}
    assert sdk_dict(frame)["marketInfo"]["segmentStatus"]["NSE_FO"] == "NORMAL_OPEN"
    assert upstox.decode_frame(wire.header(pb.live_feed, 1), RX, {}).market_status is None


@pytest.mark.parametrize("mode", wire.MODES)
def test_sim_frames_match_the_sdk(mode: str) -> None:
    instruments = universe.build(60, 3)
    keys_ = wire.instrument_keys(instruments)
    market = Market(instruments, 1000, 3, 1_732_000_000)
    for _ in range(5):
        market.step(1_732_000_001)
    for i in range(len(instruments)):
        market.ensure_book(i)
    frame = wire.header(pb.live_feed, 1_732_000_001_500) + b"".join(
        wire.feed_bytes(inst, key, q, mode, 1_731_974_400_000)
        for inst, key, q in zip(instruments, keys_, market.quotes, strict=True))
    symbols = {key: inst.symbol for inst, key in zip(instruments, keys_, strict=True)}
    mine = by_tok(ours(frame, symbols))
    assert len(mine) == len(instruments)
    assert mine == by_tok(oracle_ticks(frame, RX, symbols))
    infy = mine["NSE_EQ|INE009A01021"]
    assert infy["sym"] == "NSE:INFY" and infy["ltp"] > 0 and infy["pc"] == 1573.7
    if mode in ("full", "full_d30"):
        assert infy["bid"] < infy["ask"] and infy["h"] >= infy["l"]
        depth = sdk_dict(frame)["feeds"]["NSE_EQ|INE009A01021"]["fullFeed"]["marketFF"]
        assert len(depth["marketLevel"]["bidAskQuote"]) == wire.DEPTH_LEVELS[mode]


def test_instrument_keys_are_unique_and_well_formed() -> None:
    instruments = universe.build(2000, 1)
    keys_ = wire.instrument_keys(instruments)
    assert len(set(keys_)) == len(keys_)
    by_sym = dict(zip((i.symbol for i in instruments), keys_, strict=True))
    assert by_sym["NSE:INFY"] == "NSE_EQ|INE009A01021"
    assert by_sym["NSE:RELIANCE"] == "NSE_EQ|INE002A01018"
    assert by_sym["NSE:TCS"] == "NSE_EQ|INE467B01029"
    assert by_sym["NSE:NIFTY 50"] == "NSE_INDEX|Nifty 50"
    for key in keys_:
        segment, ident = key.split("|", 1)
        if segment.endswith("_EQ"):
            assert len(ident) == 12 and ident.startswith("INE")
            assert wire.isin_check_digit(ident[:11]) == ident[11]
    for real in wire.REAL_ISINS.values():
        assert wire.isin_check_digit(real[:11]) == real[11]


def test_a_market_full_feed_with_a_zero_price_among_other_kinds_reads_like_the_sdk() -> None:
    """The fast path takes a non-zero price as "a market full feed"; a zero one, and the
    index, ltpc and empty feeds between full feeds, must still read exactly like the SDK."""
    msg = pb.FeedResponse(type=pb.live_feed, currentTs=1_732_000_000_500)
    for n, kind in enumerate(["full", "zero", "index", "full", "ltpc", "full", "none", "zero"]):
        feed = msg.feeds[f"NSE_EQ|K{n}"]
        if kind in ("full", "zero"):
            ff = feed.fullFeed.marketFF
            ff.ltpc.ltt, ff.ltpc.cp = 1_732_000_000_000 + n, 100.0 + n
            ff.ltpc.ltp = 0.0 if kind == "zero" else 101.5 + n
            ff.marketLevel.bidAskQuote.add(bidQ=5, bidP=99.5 + n, askQ=7, askP=102.0 + n)
            ff.marketOHLC.ohlc.add(interval="1d", open=100.0, high=110.0 + n, low=90.0)
            ff.vtt, ff.oi = 1000 + n, 0.0
        elif kind == "index":
            feed.fullFeed.indexFF.ltpc.ltp = 24_000.5
        elif kind == "ltpc":
            feed.ltpc.ltp, feed.ltpc.cp = 55.25, 54.0
        else:
            feed.requestMode = pb.full_d5
    frame = msg.SerializeToString()
    symbols: dict[str, str] = {}
    mine = by_tok(ours(frame, symbols))
    assert mine == by_tok(oracle_ticks(frame, RX, symbols))
    assert mine["NSE_EQ|K1"]["ltp"] == 0.0 and mine["NSE_EQ|K1"]["bid"] == 100.5
    assert len(mine) == 7  # the empty feed gives no tick
