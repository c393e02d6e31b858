"""The official Kite parser as a test oracle, and a field-by-field comparison with ours."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kiteconnect import KiteTicker

from proto.events import Tick

_TICKER = KiteTicker("k", "t")  # never connected: only its parser is used


def official(frame: bytes) -> list[dict[str, Any]]:
    return _TICKER._parse_binary(frame)


def _epoch_s(value: datetime | None) -> int:
    return int(value.timestamp()) if value is not None else 0


def assert_same(ticks: list[Tick], expected: list[dict[str, Any]], recv_us: int,
                symbols: dict[int, str] | None = None) -> None:
    """Our ticks equal the official parse of the same frame, field by field."""
    assert len(ticks) == len(expected)
    symbols = symbols or {}
    for tick, exp in zip(ticks, expected, strict=True):
        token = exp["instrument_token"]
        assert tick.tok == str(token)
        assert tick.sym == symbols.get(token, f"KITE:{token}")
        assert tick.src == "kite"
        assert tick.rx == recv_us
        assert tick.ltp == exp["last_price"]
        assert tick.vol == exp.get("volume_traded", 0)
        ohlc = exp.get("ohlc")
        if ohlc is None:
            assert (tick.pc, tick.o, tick.h, tick.l) == (None, None, None, None)
        else:
            assert (tick.pc, tick.o, tick.h, tick.l) == (
                ohlc["close"], ohlc["open"], ohlc["high"], ohlc["low"])
        exchange_s = _epoch_s(exp.get("exchange_timestamp"))
        trade_s = _epoch_s(exp.get("last_trade_time"))
        assert tick.ts == (exchange_s or trade_s) * 1000 or (
            not exchange_s and not trade_s and tick.ts == recv_us // 1000)
        depth = exp.get("depth")
        if depth is None:
            assert (tick.oi, tick.bid, tick.ask) == (None, None, None)
        else:
            assert tick.oi == exp["oi"]
            assert tick.bid == (depth["buy"][0]["price"] or None)
            assert tick.ask == (depth["sell"][0]["price"] or None)
