"""One evaluator per rule kind, implementing ARCHITECTURE.md's semantics exactly.

An evaluator is pure: ``step(p, t, pc, vol)`` takes one tick of its symbol (price, exchange
time in ms, previous close or None, cumulative day volume), updates the state every tick
updates, and returns the reference values when the rule's condition holds (None otherwise).
``fired(p, t)`` applies the state change of a firing that was not suppressed. Arithmetic is
float64 as written.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

Ref = dict[str, float]


class Evaluator(Protocol):
    def step(self, p: float, t: int, pc: float | None, vol: int) -> Ref | None: ...

    def fired(self, p: float, t: int) -> None: ...


class CrossAbove:
    """Fires at i >= 1 when p[i-1] < level <= p[i]."""

    __slots__ = ("level", "prev")

    def __init__(self, level: float) -> None:
        self.level = level
        self.prev: float | None = None

    def step(self, p: float, t: int, pc: float | None, vol: int) -> Ref | None:
        prev, self.prev = self.prev, p
        if prev is not None and prev < self.level <= p:
            return {"level": self.level, "prev": prev}
        return None

    def fired(self, p: float, t: int) -> None:
        pass


class CrossBelow(CrossAbove):
    """Fires at i >= 1 when p[i-1] > level >= p[i]."""

    __slots__ = ()

    def step(self, p: float, t: int, pc: float | None, vol: int) -> Ref | None:
        prev, self.prev = self.prev, p
        if prev is not None and prev > self.level >= p:
            return {"level": self.level, "prev": prev}
        return None


class ChangePct:
    """Versus the previous close: up when p >= pc*(1+pct/100), down when p <= pc*(1-pct/100)."""

    __slots__ = ("down", "pct", "up")

    def __init__(self, pct: float, direction: str) -> None:
        self.pct = pct
        self.up = direction in ("up", "either")
        self.down = direction in ("down", "either")

    def step(self, p: float, t: int, pc: float | None, vol: int) -> Ref | None:
        if not pc:
            return None
        if (self.up and p >= pc * (1 + self.pct / 100)) or (
                self.down and p <= pc * (1 - self.pct / 100)):
            return {"pc": pc, "change_pct": (p / pc - 1) * 100}
        return None

    def fired(self, p: float, t: int) -> None:
        pass


class TrailingDown:
    """peak = max(peak, p) from p[0]; fires when p <= peak*(1-pct/100); a firing sets peak = p."""

    __slots__ = ("pct", "peak")

    def __init__(self, pct: float) -> None:
        self.pct = pct
        self.peak: float | None = None

    def step(self, p: float, t: int, pc: float | None, vol: int) -> Ref | None:
        peak = p if self.peak is None or p > self.peak else self.peak
        self.peak = peak
        if p <= peak * (1 - self.pct / 100):
            return {"peak": peak}
        return None

    def fired(self, p: float, t: int) -> None:
        self.peak = p


class TrailingUp:
    """trough = min(trough, p) from p[0]; fires when p >= trough*(1+pct/100);
    a firing sets trough = p."""

    __slots__ = ("pct", "trough")

    def __init__(self, pct: float) -> None:
        self.pct = pct
        self.trough: float | None = None

    def step(self, p: float, t: int, pc: float | None, vol: int) -> Ref | None:
        trough = p if self.trough is None or p < self.trough else self.trough
        self.trough = trough
        if p >= trough * (1 + self.pct / 100):
            return {"trough": trough}
        return None

    def fired(self, p: float, t: int) -> None:
        self.trough = p


class WindowPct:
    """The window holds ticks j with t[j] >= t[i] - window_s*1000 and j >= r (the last firing).

    Two monotonic deques of (t, p) give the window's min and max in O(1) amortised per tick.
    """

    __slots__ = ("down", "highs", "lows", "pct", "span_ms", "up")

    def __init__(self, pct: float, window_s: float, direction: str) -> None:
        self.pct = pct
        self.span_ms = window_s * 1000
        self.up = direction in ("up", "either")
        self.down = direction in ("down", "either")
        self.lows: deque[tuple[int, float]] = deque()  # prices increasing: front is the min
        self.highs: deque[tuple[int, float]] = deque()  # prices decreasing: front is the max

    def step(self, p: float, t: int, pc: float | None, vol: int) -> Ref | None:
        lows, highs = self.lows, self.highs
        while lows and lows[-1][1] >= p:
            lows.pop()
        lows.append((t, p))
        while highs and highs[-1][1] <= p:
            highs.pop()
        highs.append((t, p))
        oldest = t - self.span_ms
        while lows[0][0] < oldest:
            lows.popleft()
        while highs[0][0] < oldest:
            highs.popleft()
        low, high = lows[0][1], highs[0][1]
        if (self.up and p >= low * (1 + self.pct / 100)) or (
                self.down and p <= high * (1 - self.pct / 100)):
            return {"window_low": low, "window_high": high}
        return None

    def fired(self, p: float, t: int) -> None:
        self.lows.clear()
        self.highs.clear()
        self.lows.append((t, p))
        self.highs.append((t, p))


def make_evaluator(kind: str, params: dict[str, Any]) -> Evaluator:
    """A fresh evaluator for a validated rule's kind and params."""
    if kind == "cross_above":
        return CrossAbove(params["level"])
    if kind == "cross_below":
        return CrossBelow(params["level"])
    if kind == "change_pct":
        return ChangePct(params["pct"], params["direction"])
    if kind == "trailing_pct":
        if params["direction"] == "up":
            return TrailingUp(params["pct"])
        return TrailingDown(params["pct"])
    if kind == "window_pct":
        return WindowPct(params["pct"], params["window_s"], params["direction"])
    raise ValueError(f"no evaluator for kind {kind!r}")


def describe(kind: str, params: dict[str, Any], symbol: str, p: float, ref: Ref) -> str:
    """The human sentence of a firing: what happened and the reference values behind it."""
    if kind == "cross_above":
        return f"{symbol} crossed above {ref['level']:g} (from {ref['prev']:g} to {p:g})"
    if kind == "cross_below":
        return f"{symbol} crossed below {ref['level']:g} (from {ref['prev']:g} to {p:g})"
    if kind == "change_pct":
        return (f"{symbol} is {ref['change_pct']:+.2f}% on the day at {p:g} "
                f"(previous close {ref['pc']:g}, threshold {params['pct']:g}%)")
    if kind == "trailing_pct":
        if "peak" in ref:
            return (f"{symbol} fell {params['pct']:g}% from its peak {ref['peak']:g} "
                    f"to {p:g}")
        return f"{symbol} rose {params['pct']:g}% from its low {ref['trough']:g} to {p:g}"
    if kind == "window_pct":
        return (f"{symbol} moved {params['pct']:g}% within {params['window_s']:g}s: now {p:g}, "
                f"window low {ref['window_low']:g}, high {ref['window_high']:g}")
    return f"{symbol} {kind} fired at {p:g}"
