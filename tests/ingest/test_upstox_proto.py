"""Our compiled Upstox V3 schema against the upstox-python-sdk's own.

Our file keeps the SDK's file name (``MarketDataFeedV3.proto``), so protobuf's default pool
sees one schema and both modules can load in one process (checked below). The SDK side of the
comparison still runs in a subprocess, so it reads a schema that ours never touched.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import textwrap

import orjson
from google.protobuf import descriptor_pb2
from google.protobuf.internal import api_implementation
from google.protobuf.json_format import MessageToDict

from proto import MarketDataFeedV3_pb2 as pb

SDK_SIDE = textwrap.dedent("""
    import base64, sys, orjson
    from google.protobuf import descriptor_pb2
    from google.protobuf.json_format import MessageToDict
    from upstox_client.feeder.proto import MarketDataFeedV3_pb2 as sdk
    fd = descriptor_pb2.FileDescriptorProto()
    sdk.DESCRIPTOR.CopyToProto(fd)
    fd.name = ""
    message = sdk.FeedResponse.FromString(base64.b64decode(sys.argv[1]))
    print(orjson.dumps({
        "descriptor": base64.b64encode(fd.SerializeToString(deterministic=True)).decode(),
        "parsed": MessageToDict(message),
        "reserialized": base64.b64encode(message.SerializeToString(deterministic=True)).decode(),
    }).decode())
""")


def sample() -> pb.FeedResponse:
    msg = pb.FeedResponse(type=pb.live_feed, currentTs=1_732_000_000_123)
    eq = msg.feeds["NSE_EQ|INE009A01021"]
    eq.requestMode = pb.full_d5
    ff = eq.fullFeed.marketFF
    ff.ltpc.ltp, ff.ltpc.ltt, ff.ltpc.ltq, ff.ltpc.cp = 1573.7, 1_732_000_000_000, 7, 1567.8
    ff.ltpc.iep.value = 1570.0
    for i in range(5):
        ff.marketLevel.bidAskQuote.add(bidQ=10 + i, bidP=1573.4 - i / 20, askQ=20 + i,
                                       askP=1573.7 + i / 20)
    ff.marketOHLC.ohlc.add(interval="1d", open=1569.15, high=1575, low=1561.05,
                           close=1573.7, vol=1_192_471, ts=1_731_974_400_000)
    ff.marketOHLC.ohlc.add(interval="I1", open=1573, high=1574, low=1572, close=1573.7, vol=9)
    ff.optionGreeks.delta = 0.5
    ff.atp, ff.vtt, ff.oi, ff.iv, ff.tbq, ff.tsq = 1570.37, 1_192_471, 12.0, 0.2, 256443, 363009
    ff.iep, ff.rp, ff.ieq, ff.iiqTotal, ff.iiqM, ff.casEligible = 1.5, 2.5, 3, 4, 5, True
    idx = msg.feeds["NSE_INDEX|Nifty 50"].fullFeed.indexFF
    idx.ltpc.ltp, idx.ltpc.cp = 24_000.5, 23_900.0
    idx.marketOHLC.ohlc.add(interval="1d", open=23_950, high=24_010, low=23_900, close=24_000.5)
    ltp = msg.feeds["NSE_FO|45450"]
    ltp.ltpc.ltp, ltp.ltpc.ltt, ltp.requestMode = 101.25, 1_732_000_000_500, pb.ltpc
    greeks = msg.feeds["NSE_FO|45451"]
    greeks.requestMode = pb.option_greeks
    fl = greeks.firstLevelWithGreeks
    fl.ltpc.ltp, fl.vtt, fl.oi, fl.iv = 12.5, 1000, 250.0, 0.31
    fl.firstDepth.bidQ, fl.firstDepth.bidP, fl.firstDepth.askQ, fl.firstDepth.askP = 1, 2, 3, 4
    fl.optionGreeks.theta, fl.optionGreeks.gamma, fl.optionGreeks.vega = -1.5, 0.01, 3.3
    fl.optionGreeks.rho = 0.2
    info = msg.marketInfo
    info.segmentStatus["NSE_EQ"] = pb.NORMAL_OPEN
    info.casMarketStatus["NSE_EQ"].status = "open"
    info.preOpenSessionStatus["NSE_EQ"].updatedTime = 1_731_990_000_000
    return msg


def run_sdk(data: bytes) -> dict:
    proc = subprocess.run([sys.executable, "-c", SDK_SIDE, base64.b64encode(data).decode()],
                          capture_output=True, text=True, timeout=60, check=True)
    return orjson.loads(proc.stdout)


def test_upb_backend_is_in_use() -> None:
    assert api_implementation.Type() == "upb"


def test_schema_matches_sdk_and_parses_identically() -> None:
    msg = sample()
    data = msg.SerializeToString(deterministic=True)
    sdk = run_sdk(data)

    ours = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(ours)
    ours.name = ""
    theirs = descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(sdk["descriptor"]))
    assert ours == theirs

    assert sdk["parsed"] == MessageToDict(pb.FeedResponse.FromString(data))
    assert base64.b64decode(sdk["reserialized"]) == data


def test_market_info_message() -> None:
    msg = pb.FeedResponse(type=pb.market_info, currentTs=1)
    msg.marketInfo.segmentStatus["NSE_FO"] = pb.CLOSING_END
    data = msg.SerializeToString()
    sdk = run_sdk(data)
    assert sdk["parsed"]["type"] == "market_info"
    assert sdk["parsed"]["marketInfo"]["segmentStatus"] == {"NSE_FO": "CLOSING_END"}


def test_ours_and_the_sdks_load_in_one_process():
    code = ("import upstox_client\n"
            "from proto import MarketDataFeedV3_pb2 as ours\n"
            "from upstox_client.feeder.proto import MarketDataFeedV3_pb2 as sdk\n"
            "assert ours.FeedResponse is sdk.FeedResponse\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
