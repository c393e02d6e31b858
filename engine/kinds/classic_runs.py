"""Runs (``engine.kinds.runs``) of the first five kinds: each loop does to every rule of a
symbol exactly what its class's ``step`` in ``engine.kinds.classic`` does, in the same float64
operations, and tests a rule's cooldown only when its condition holds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.kinds.classic import (
    ChangePct,
    CrossAbove,
    CrossBelow,
    TrailingDown,
    TrailingUp,
    WindowPct,
)
from engine.kinds.runs import Fail, Hits, Run


class CrossAboveRun(Run):
    __slots__ = ()
    PARAMS = ("level",)

    def run(self, p: float, t: int, pc: float | None, vol: int, hits: Hits, fail: Fail) -> bool:
        self.ticks += 1
        quiet = self.quiet
        for i, ev in enumerate(self.evs):
            try:
                prev = ev.prev
                ev.prev = p
                if prev is not None and prev < ev.level <= p and t >= quiet[i]:
                    hits.append((self.arms[i], {"level": ev.level, "prev": prev}))
            except Exception:  # e.g. a state restored from a damaged checkpoint
                fail(self.arms[i])
        return False


class CrossBelowRun(Run):
    __slots__ = ()
    PARAMS = ("level",)

    def run(self, p: float, t: int, pc: float | None, vol: int, hits: Hits, fail: Fail) -> bool:
        self.ticks += 1
        quiet = self.quiet
        for i, ev in enumerate(self.evs):
            try:
                prev = ev.prev
                ev.prev = p
                if prev is not None and prev > ev.level >= p and t >= quiet[i]:
                    hits.append((self.arms[i], {"level": ev.level, "prev": prev}))
            except Exception:
                fail(self.arms[i])
        return False


class ChangePctRun(Run):
    """No state changes at a tick (only a firing's, which the book marks), so no dirty."""

    __slots__ = ()
    PARAMS = ("pct",)

    def run(self, p: float, t: int, pc: float | None, vol: int, hits: Hits, fail: Fail) -> bool:
        if not pc:
            return False
        quiet = self.quiet
        for i, ev in enumerate(self.evs):
            try:
                if ((ev.up and p >= pc * (1 + ev.pct / 100)) or (
                        ev.down and p <= pc * (1 - ev.pct / 100))) and t >= quiet[i]:
                    hits.append((self.arms[i], {"pc": pc, "change_pct": (p / pc - 1) * 100}))
            except Exception:
                fail(self.arms[i])
        return False


class TrailingDownRun(Run):
    __slots__ = ()
    PARAMS = ("pct",)

    def run(self, p: float, t: int, pc: float | None, vol: int, hits: Hits, fail: Fail) -> bool:
        self.ticks += 1
        quiet = self.quiet
        for i, ev in enumerate(self.evs):
            try:
                peak = ev.peak
                if peak is None or p > peak:
                    ev.peak = peak = p
                if p <= peak * (1 - ev.pct / 100) and t >= quiet[i]:
                    hits.append((self.arms[i], {"peak": peak}))
            except Exception:
                fail(self.arms[i])
        return False


class TrailingUpRun(Run):
    __slots__ = ()
    PARAMS = ("pct",)

    def run(self, p: float, t: int, pc: float | None, vol: int, hits: Hits, fail: Fail) -> bool:
        self.ticks += 1
        quiet = self.quiet
        for i, ev in enumerate(self.evs):
            try:
                trough = ev.trough
                if trough is None or p < trough:
                    ev.trough = trough = p
                if p >= trough * (1 + ev.pct / 100) and t >= quiet[i]:
                    hits.append((self.arms[i], {"trough": trough}))
            except Exception:
                fail(self.arms[i])
        return False


class WindowPctRun(Run):
    """``WindowPct.step`` over one symbol's window rules, with their deques shared.

    Rules of one window length whose deques hold the same ticks have the same deques from
    then on, until one of them fires (``WindowPct.fired`` gives that one new deques). So
    ``share`` makes them hold the very same deque objects (equal contents: each rule's state,
    as the checkpoint reads it, is unchanged), and a tick updates each deque once, not once
    per rule: with many window rules on a symbol, most of a tick's memory traffic goes. It
    runs when the run is built, after firings, and every ``SHARE_EVERY`` ticks (rules armed
    at different times hold the same ticks once their window has moved past the later one).

    The update of a monotonic deque by a tick is idempotent (the tick's own entry is popped
    and appended again), so a deque met twice in a tick stays right; rules that share are
    kept next to each other only so that the update can be skipped. The tick's ``(t, p)`` is
    one tuple for all the rules.
    """

    __slots__ = ()
    PARAMS = ("pct", "span_ms")
    SHARE_EVERY = 64

    def __init__(self, arms: list[Any]) -> None:
        super().__init__(arms)
        self.share()

    def share(self) -> None:
        """Make rules with equal windows hold the same deques; order rules by shared deques."""
        lead_of: dict[tuple[Any, ...], Any] = {}
        lead_by_deques: dict[tuple[int, int], Any] = {}  # rules already sharing: no key
        rank: dict[int, int] = {}  # id of a lead evaluator -> its group's place
        ranks = []
        for ev in self.evs:
            lead = lead_by_deques.get((id(ev.lows), id(ev.highs)))
            if lead is None:
                try:
                    key = (ev.span_ms, tuple(ev.lows), tuple(ev.highs))
                    lead = lead_of.setdefault(key, ev)
                except TypeError:  # entries restored as lists are not hashable: not shared
                    lead = ev
                lead_by_deques[id(ev.lows), id(ev.highs)] = lead
            if lead is not ev:
                ev.lows, ev.highs = lead.lows, lead.highs
            ranks.append(rank.setdefault(id(lead), len(rank)))
        order = sorted(range(len(ranks)), key=ranks.__getitem__)
        if order != list(range(len(order))):
            self.arms = tuple(self.arms[i] for i in order)
            self.evs = tuple(self.evs[i] for i in order)
            self.quiet = [self.quiet[i] for i in order]
            for pos, armed in enumerate(self.arms):
                armed.pos = pos

    def run(self, p: float, t: int, pc: float | None, vol: int, hits: Hits, fail: Fail) -> bool:
        self.ticks += 1
        if self.ticks % self.SHARE_EVERY == 0 and len(self.evs) > 1:
            self.share()
        tick = (t, p)
        quiet = self.quiet
        done_lows = done_highs = None
        n_hits = len(hits)
        for i, ev in enumerate(self.evs):
            try:
                lows, highs = ev.lows, ev.highs
                if lows is not done_lows or highs is not done_highs:
                    oldest = t - ev.span_ms
                    if lows is not done_lows:
                        while lows and lows[-1][1] >= p:
                            lows.pop()
                        lows.append(tick)
                        while lows[0][0] < oldest:
                            lows.popleft()
                        done_lows = lows
                    if highs is not done_highs:
                        while highs and highs[-1][1] <= p:
                            highs.pop()
                        highs.append(tick)
                        while highs[0][0] < oldest:
                            highs.popleft()
                        done_highs = highs
                low, high = lows[0][1], highs[0][1]
                if ((ev.up and p >= low * (1 + ev.pct / 100)) or (
                        ev.down and p <= high * (1 - ev.pct / 100))) and t >= quiet[i]:
                    hits.append((self.arms[i], {"window_low": low, "window_high": high}))
            except Exception:
                fail(self.arms[i])
        return len(hits) > n_hits

    def settle(self) -> None:
        if len(self.evs) > 1:
            self.share()


RUNS: dict[type, Callable[[list[Any]], Run]] = {
    CrossAbove: CrossAboveRun, CrossBelow: CrossBelowRun, ChangePct: ChangePctRun,
    TrailingDown: TrailingDownRun, TrailingUp: TrailingUpRun, WindowPct: WindowPctRun}
