"""One-minute OHLCV bars built from ticks, per symbol. Pure: ticks in, closed bars out.

A bar covers ``[m, m + 60000)`` in exchange time. It closes when a tick of a later minute
arrives (a quiet symbol's last bar stays open until its next tick). Volume is the rise of
the cumulative day volume within the minute; a fall means a new day and counts from zero.
"""

from __future__ import annotations

from dataclasses import dataclass

from proto.bars import MINUTE_MS, bar_fields

__all__ = ["MINUTE_MS", "Bar", "BarBuilder"]


@dataclass(slots=True)
class Bar:
    start: int  # epoch ms, a multiple of 60000
    o: float
    h: float
    l: float  # noqa: E741 - OHLC's own name
    c: float
    v: int

    def to_fields(self) -> dict[str, str]:
        return bar_fields(self.o, self.h, self.l, self.c, self.v)

    def as_list(self) -> list[float]:
        return [self.start, self.o, self.h, self.l, self.c, self.v]


class BarBuilder:
    def __init__(self) -> None:
        self.open: dict[str, Bar] = {}
        self.last_vol: dict[str, int] = {}

    def on_tick(self, sym: str, p: float, t: int, vol: int) -> Bar | None:
        """Update the symbol's open bar; the bar this tick closed, if any."""
        last_vol = self.last_vol.get(sym)
        self.last_vol[sym] = vol
        traded = vol - last_vol if last_vol is not None and vol >= last_vol else 0
        start = t - t % MINUTE_MS
        bar = self.open.get(sym)
        if bar is not None and start <= bar.start:  # same minute (or a late tick): extend
            if p > bar.h:
                bar.h = p
            elif p < bar.l:
                bar.l = p
            bar.c = p
            bar.v += traded
            return None
        self.open[sym] = Bar(start, p, p, p, p, traded)
        return bar
