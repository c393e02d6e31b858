"""``python -m ingest.decode --feed upstox`` on raw and base64 protobuf captures."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson

from proto import MarketDataFeedV3_pb2 as pb
from tests.ingest.test_decode_cli import run_decode


def capture() -> bytes:
    msg = pb.FeedResponse(type=pb.live_feed, currentTs=1_732_000_000_500)
    ff = msg.feeds["NSE_EQ|INE009A01021"].fullFeed.marketFF
    ff.ltpc.ltp, ff.ltpc.ltt, ff.ltpc.cp, ff.vtt = 1573.7, 1_732_000_000_000, 1567.8, 42
    return msg.SerializeToString()


def test_raw_and_base64_files(tmp_path: Path) -> None:
    raw = tmp_path / "frame.bin"
    raw.write_bytes(capture())
    text = tmp_path / "frames.b64"
    info = pb.FeedResponse(type=pb.market_info)
    info.marketInfo.segmentStatus["NSE_EQ"] = pb.NORMAL_OPEN
    text.write_text("\n".join(base64.b64encode(f).decode()
                              for f in (info.SerializeToString(), capture(), capture())))
    proc = run_decode("--feed", "upstox", raw, text)
    assert proc.returncode == 0, proc.stderr
    ticks = [orjson.loads(line) for line in proc.stdout.splitlines()]
    assert len(ticks) == 3
    assert ticks[0] == {**ticks[0], "sym": "UPSTOX:NSE_EQ|INE009A01021",
                        "tok": "NSE_EQ|INE009A01021", "src": "upstox", "ltp": 1573.7,
                        "vol": 42, "ts": 1_732_000_000_000, "pc": 1567.8}


def test_garbage_is_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x0a\xff\xff\xff")
    proc = run_decode("--feed", "upstox", bad)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "upstox" in lines[0]
