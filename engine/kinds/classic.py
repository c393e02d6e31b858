"""The first five kinds (ARCHITECTURE.md, "Rules: kinds and exact semantics"): level crosses,
change versus the previous close, trailing stops and moves within a time window.

Evaluators follow the contract in ``proto.rulekinds.api``; arithmetic is float64 as written.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from proto.rulekinds import API_VERSION, Ref, RuleKind
from proto.rulekinds.builtin import (
    ChangePctParams,
    LevelParams,
    TrailingPctParams,
    WindowPctParams,
)


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
        # New deques, not cleared ones: rules of a symbol may share theirs (WindowPctRun).
        self.lows = deque([(t, p)])
        self.highs = deque([(t, p)])


def _trailing(p: TrailingPctParams) -> TrailingDown | TrailingUp:
    return TrailingUp(p.pct) if p.direction == "up" else TrailingDown(p.pct)


def _describe_cross_above(params: LevelParams, symbol: str, p: float, ref: Ref) -> str:
    return f"{symbol} crossed above {ref['level']:g} (from {ref['prev']:g} to {p:g})"


def _describe_cross_below(params: LevelParams, symbol: str, p: float, ref: Ref) -> str:
    return f"{symbol} crossed below {ref['level']:g} (from {ref['prev']:g} to {p:g})"


def _describe_change(params: ChangePctParams, symbol: str, p: float, ref: Ref) -> str:
    return (f"{symbol} is {ref['change_pct']:+.2f}% on the day at {p:g} "
            f"(previous close {ref['pc']:g}, threshold {params.pct:g}%)")


def _describe_trailing(params: TrailingPctParams, symbol: str, p: float, ref: Ref) -> str:
    if "peak" in ref:
        return f"{symbol} fell {params.pct:g}% from its peak {ref['peak']:g} to {p:g}"
    return f"{symbol} rose {params.pct:g}% from its low {ref['trough']:g} to {p:g}"


def _describe_window(params: WindowPctParams, symbol: str, p: float, ref: Ref) -> str:
    return (f"{symbol} moved {params.pct:g}% within {params.window_s:g}s: now {p:g}, "
            f"window low {ref['window_low']:g}, high {ref['window_high']:g}")


KINDS: tuple[RuleKind[Any], ...] = (
    RuleKind(name="cross_above", params=LevelParams, evaluator=lambda p: CrossAbove(p.level),
             describe=_describe_cross_above, api_version=API_VERSION),
    RuleKind(name="cross_below", params=LevelParams, evaluator=lambda p: CrossBelow(p.level),
             describe=_describe_cross_below, api_version=API_VERSION),
    RuleKind(name="change_pct", params=ChangePctParams,
             evaluator=lambda p: ChangePct(p.pct, p.direction),
             describe=_describe_change, api_version=API_VERSION),
    RuleKind(name="trailing_pct", params=TrailingPctParams, evaluator=_trailing,
             describe=_describe_trailing, api_version=API_VERSION),
    RuleKind(name="window_pct", params=WindowPctParams,
             evaluator=lambda p: WindowPct(p.pct, p.window_s, p.direction),
             describe=_describe_window, api_version=API_VERSION),
)
