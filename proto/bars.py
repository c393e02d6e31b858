"""The one-minute bars the engine keeps in ``keys.bars(sym)`` (entry id = the bar's start in
epoch ms, fields ``o h l c v``): their record format (written by the engine) and reading
them (the web and the backtest worker)."""

from __future__ import annotations

from typing import Any, NamedTuple

import redis.asyncio as aredis

from proto import keys

MINUTE_MS = 60_000


class Bar(NamedTuple):
    start: int  # epoch ms, a multiple of 60000
    o: float
    h: float
    l: float  # noqa: E741 - OHLC's own name
    c: float
    v: int


def bar_fields(o: float, h: float, low: float, c: float, v: int) -> dict[str, str]:
    """The fields of one stored bar (its entry id is its start: ``{start}-0``)."""
    return {"o": repr(o), "h": repr(h), "l": repr(low), "c": repr(c), "v": str(v)}


def decode_bar(entry_id: str, fields: dict[str, str]) -> Bar | None:
    """One stored bar; None when the entry cannot be read."""
    try:
        return Bar(int(entry_id.partition("-")[0]), float(fields["o"]), float(fields["h"]),
                   float(fields["l"]), float(fields["c"]), int(fields.get("v") or 0))
    except (KeyError, ValueError, TypeError):
        return None


def open_bar(value: Any) -> Bar | None:
    """The open bar a quote carries (``proto.events.quote_json``: ``[start, o, h, l, c, v]``)."""
    try:
        start, o, h, low, c, v = value
        return Bar(int(start), float(o), float(h), float(low), float(c), int(v))
    except (TypeError, ValueError):
        return None


async def recent_bars(ar: aredis.Redis, sym: str, minutes: int) -> list[Bar]:
    """The symbol's closed bars of the last ``minutes`` stored minutes, oldest first."""
    if minutes <= 0:
        return []
    entries: Any = await ar.xrevrange(keys.bars(sym), count=minutes)
    bars = (decode_bar(entry_id, fields) for entry_id, fields in reversed(entries))
    return [bar for bar in bars if bar is not None]


async def recent_bars_many(ar: aredis.Redis, syms: list[str], minutes: int) -> dict[str, list[Bar]]:
    """``recent_bars`` of several symbols in one round trip (a pipeline without MULTI: each
    symbol's stream has its own hash tag)."""
    if minutes <= 0 or not syms:
        return {sym: [] for sym in syms}
    async with ar.pipeline(transaction=False) as pipe:
        for sym in syms:
            pipe.xrevrange(keys.bars(sym), count=minutes)
        replies: list[Any] = await pipe.execute()
    out = {}
    for sym, entries in zip(syms, replies, strict=True):
        bars = (decode_bar(entry_id, fields) for entry_id, fields in reversed(entries))
        out[sym] = [bar for bar in bars if bar is not None]
    return out
