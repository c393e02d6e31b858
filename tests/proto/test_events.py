import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proto.events import Alert, CodecError, Tick, decode_ticks, encode_tick, encode_tick_batch
from proto.keys import shard_for, ticks

finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
opt = st.none() | finite
tick_st = st.builds(
    Tick, sym=st.text(min_size=1, max_size=20), tok=st.text(max_size=20),
    src=st.sampled_from(["kite", "upstox", "sim"]),
    ltp=finite, vol=st.integers(0, 2**62), ts=st.integers(0, 2**52), rx=st.integers(0, 2**60),
    oi=opt, bid=opt, ask=opt, pc=opt, o=opt, h=opt, l=opt,
)


@given(st.lists(tick_st, max_size=60))
def test_batch_round_trip(batch):
    assert decode_ticks(encode_tick_batch(batch)) == batch


@given(tick_st)
def test_flat_round_trip(tick):
    assert decode_ticks(encode_tick(tick)) == [tick]


@pytest.mark.parametrize("fields", [
    {"ticks": "not json"}, {"ticks": "{}"}, {"ticks": '[{"sym": "X"}]'}, {"sym": "NSE:INFY"},
    {"sym": "a", "tok": "1", "src": "s", "ltp": "abc", "vol": "1", "ts": "1", "rx": "1"},
])
def test_malformed_entries_raise_codec_error(fields):
    with pytest.raises(CodecError):
        decode_ticks(fields)


def test_alert_round_trip_and_latency():
    a = Alert(id="r1@1-0.0", rule="r1", user="u", sym="NSE:INFY", kind="cross_above", ltp=1501.5,
              ts=1_700_000_000_000, rx=1_700_000_000_000_100, at=1_700_000_000_000_600,
              msg="m", channels=["default", "phone"], ref={"level": 1500.0})
    assert Alert.from_fields(a.to_fields()) == a
    assert a.latency_us() == 500
    assert all(isinstance(v, str) for v in a.to_fields().values())


def test_shard_function_is_the_documented_crc32():
    for sym in ["NSE:INFY", "NSE:NIFTY 50", "BSE:SENSEX"]:
        assert shard_for(sym, 4) == zlib.crc32(sym.encode()) % 4
    assert ticks(3) == "sa:ticks:{3}"
