"""The upstox-python-sdk's own parsing as a test oracle: ``FeedResponse.FromString`` then
``MessageToDict`` (what ``MarketDataStreamerV3.handle_message`` does), mapped to tick fields
by the rules of ``ingest.upstox`` but from the dict, independently of our field reads."""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict
from upstox_client.feeder.proto import MarketDataFeedV3_pb2 as sdk


def sdk_dict(frame: bytes) -> dict[str, Any]:
    return MessageToDict(sdk.FeedResponse.FromString(frame))


def _opt(value: Any) -> float | None:
    return float(value) if value else None


def _day(ohlc: dict[str, Any]) -> tuple[float | None, float | None, float | None]:
    for bar in ohlc.get("ohlc", []):
        if bar.get("interval") == "1d":
            return bar.get("open", 0.0), bar.get("high", 0.0), bar.get("low", 0.0)
    return None, None, None


def oracle_ticks(frame: bytes, recv_us: int, symbols: dict[str, str]) -> list[dict[str, Any]]:
    """The tick dicts (``Tick.to_dict`` shape) the SDK's parse implies."""
    d = sdk_dict(frame)
    if d.get("type") == "market_info":
        return []
    fallback = int(d.get("currentTs", 0)) or recv_us // 1000
    out = []
    for key, feed in d.get("feeds", {}).items():
        if "ltpc" in feed:
            body, ltpc, extra = feed, feed["ltpc"], {}
        elif "fullFeed" in feed and "marketFF" in feed["fullFeed"]:
            body = feed["fullFeed"]["marketFF"]
            ltpc = body.get("ltpc", {})
            best = body.get("marketLevel", {}).get("bidAskQuote", [{}])[0]
            o, h, lo = _day(body.get("marketOHLC", {}))
            extra = {"vol": int(body.get("vtt", 0)), "oi": _opt(body.get("oi")),
                     "bid": _opt(best.get("bidP")), "ask": _opt(best.get("askP")),
                     "o": o, "h": h, "l": lo}
        elif "fullFeed" in feed:
            body = feed["fullFeed"].get("indexFF", {})
            ltpc = body.get("ltpc", {})
            o, h, lo = _day(body.get("marketOHLC", {}))
            extra = {"o": o, "h": h, "l": lo}
        elif "firstLevelWithGreeks" in feed:
            body = feed["firstLevelWithGreeks"]
            ltpc, depth = body.get("ltpc", {}), body.get("firstDepth", {})
            extra = {"vol": int(body.get("vtt", 0)), "oi": _opt(body.get("oi")),
                     "bid": _opt(depth.get("bidP")), "ask": _opt(depth.get("askP"))}
        else:
            continue
        tick = {"sym": symbols.get(key, f"UPSTOX:{key}"), "tok": key, "src": "upstox",
                "ltp": float(ltpc.get("ltp", 0.0)), "vol": 0,
                "ts": int(ltpc.get("ltt", 0)) or fallback, "rx": recv_us,
                "pc": _opt(ltpc.get("cp")), **extra}
        out.append({k: v for k, v in tick.items() if v is not None})
    return out
