"""Runs (``engine.kinds.runs``) of the first five kinds: each loop does to every rule of a
symbol exactly what its class's ``step`` in ``engine.kinds.classic`` does, in the same float64
operations, and tests a rule's cooldown only when its condition holds.
"""

from __future__ import annotations

import math
from bisect import bisect_right
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


def _by_pct(evs: tuple[Any, ...], members: list[int]) -> list[int]:
    """Positions ordered by ``pct``: thresholds ``x * (1 ± pct/100)`` of a positive ``x``
    computed in this order are monotonic (each float operation rounds monotonically), so the
    rules whose condition holds at a tick are a prefix, found by bisection."""
    return sorted(members, key=lambda i: evs[i].pct)


def _positive(value: Any) -> bool:
    """A finite positive int or float: a base whose thresholds the pct order keeps sorted."""
    return (type(value) is float or type(value) is int) and 0 < value < math.inf


class ChangePctRun(Run):
    """Thresholds ``pc * (1 ± pct/100)`` held sorted for the symbol's previous close (it
    changes once a day): a tick costs two bisections and its firings, not a test per rule.
    No state changes at a tick (only a firing's, which the book marks), so no dirty."""

    __slots__ = ("_down", "_either", "_pc", "_thr_down", "_thr_up", "_up")
    PARAMS = ("pct",)

    def __init__(self, arms: list[Any]) -> None:
        super().__init__(arms)
        evs = self.evs
        self._up = _by_pct(evs, [i for i, ev in enumerate(evs) if ev.up])
        self._down = _by_pct(evs, [i for i, ev in enumerate(evs) if ev.down])
        self._either = any(ev.up and ev.down for ev in evs)
        self._pc: float | None = None
        self._thr_up: list[float] = []
        self._thr_down: list[float] = []  # negated: ascending, like the rules' order

    def run(self, p: float, t: int, pc: float | None, vol: int, hits: Hits, fail: Fail) -> bool:
        if not pc:
            return False
        if pc != self._pc:
            if not _positive(pc):  # NaN, infinite or not positive: thresholds unordered
                return self._each(p, t, pc, hits, fail)
            evs = self.evs
            self._thr_up = [pc * (1 + evs[i].pct / 100) for i in self._up]
            self._thr_down = [-(pc * (1 - evs[i].pct / 100)) for i in self._down]
            self._pc = pc
        if p != p:  # NaN: no condition holds
            return False
        n_up = bisect_right(self._thr_up, p)
        n_down = bisect_right(self._thr_down, -p)
        if not (n_up or n_down):
            return False
        quiet, arms = self.quiet, self.arms
        up = self._up[:n_up]
        for i in up:
            if t >= quiet[i]:
                hits.append((arms[i], {"pc": pc, "change_pct": (p / pc - 1) * 100}))
        # A rule watching both ways whose up threshold held is not tested again (one hit).
        skip = set(up) if n_up and n_down and self._either else ()
        for i in self._down[:n_down]:
            if t >= quiet[i] and i not in skip:
                hits.append((arms[i], {"pc": pc, "change_pct": (p / pc - 1) * 100}))
        return False

    def _each(self, p: float, t: int, pc: float, hits: Hits, fail: Fail) -> bool:
        """``ChangePct.step`` rule by rule, for a previous close the index cannot order."""
        self._pc = None
        quiet = self.quiet
        for i, ev in enumerate(self.evs):
            try:
                if ((ev.up and p >= pc * (1 + ev.pct / 100)) or (
                        ev.down and p <= pc * (1 - ev.pct / 100))) and t >= quiet[i]:
                    hits.append((self.arms[i], {"pc": pc, "change_pct": (p / pc - 1) * 100}))
            except Exception:
                fail(self.arms[i])
        return False


class _Extreme:
    """Trailing rules of a symbol whose peak (or trough) is the same number: ``ext`` is it,
    ``members`` their positions by pct, ``thr`` their thresholds at ``ext`` (None: stale)."""

    __slots__ = ("ext", "members", "thr")

    def __init__(self, ext: float | None, members: list[int]) -> None:
        self.ext = ext
        self.members = members
        self.thr: list[float] | None = None


class _TrailingRun(Run):
    """Trailing rules grouped by their extreme. Rules armed at different times have different
    peaks only until the price passes them all; from then on one group holds every rule, and
    a tick costs one comparison and a bisection of its thresholds (computed again only when
    the extreme moves, when the group's slots are written too). A firing sets the rule's
    extreme to the price, so firings regroup (``settle``). Extremes that are not positive
    finite numbers (thresholds unordered) and such a price take the rule-by-rule path."""

    __slots__ = ("_groups", "_odd")
    PARAMS = ("pct",)
    SLOT = "peak"
    DOWN = True  # peak, p <= peak*(1-pct/100); else trough, p >= trough*(1+pct/100)

    def __init__(self, arms: list[Any]) -> None:
        super().__init__(arms)
        self.settle()

    def settle(self) -> None:
        by_ext: dict[Any, list[int]] = {}
        odd: list[int] = []
        slot = self.SLOT
        for i, ev in enumerate(self.evs):
            ext = getattr(ev, slot)
            if ext is None:
                by_ext.setdefault(None, []).append(i)
            elif _positive(ext):
                # The type and sign take part: 100 and 100.0 print differently in a ref.
                by_ext.setdefault((type(ext), ext), []).append(i)
            else:
                odd.append(i)
        self._groups = [_Extreme(None if key is None else key[1], _by_pct(self.evs, members))
                        for key, members in by_ext.items()]
        self._odd = odd

    def run(self, p: float, t: int, pc: float | None, vol: int, hits: Hits, fail: Fail) -> bool:
        self.ticks += 1
        if not _positive(p):
            return self._each(range(len(self.evs)), p, t, hits, fail)
        n_hits = len(hits)
        groups, evs, slot, down = self._groups, self.evs, self.SLOT, self.DOWN
        moved = 0
        for g in groups:
            ext = g.ext
            if ext is None or (p > ext if down else p < ext):
                g.ext, g.thr = p, None
                moved += 1
                for i in g.members:
                    setattr(evs[i], slot, p)
        if moved > 1:  # groups the price passed now hold the same extreme: one group
            self.settle()
            groups = self._groups
        quiet, arms = self.quiet, self.arms
        for g in groups:
            ext, thr = g.ext, g.thr  # ext is a number now: the loop above set every None
            if thr is None:
                if down:
                    thr = g.thr = [-(ext * (1 - evs[i].pct / 100)) for i in g.members]
                else:
                    thr = g.thr = [ext * (1 + evs[i].pct / 100) for i in g.members]
            n = bisect_right(thr, -p if down else p)
            if n:
                members = g.members
                for k in range(n):
                    i = members[k]
                    if t >= quiet[i]:
                        hits.append((arms[i], {slot: ext}))  # type: ignore[dict-item]
        if self._odd:
            self._each(self._odd, p, t, hits, fail)
        return len(hits) > n_hits

    def _each(self, members: Any, p: float, t: int, hits: Hits, fail: Fail) -> bool:
        """The evaluator's ``step`` arithmetic, rule by rule (a firing regroups)."""
        n_hits = len(hits)
        quiet, slot, down = self.quiet, self.SLOT, self.DOWN
        for i in members:
            ev = self.evs[i]
            try:
                ext = getattr(ev, slot)
                if ext is None or (p > ext if down else p < ext):
                    setattr(ev, slot, p)
                    ext = p
                if (p <= ext * (1 - ev.pct / 100) if down else
                        p >= ext * (1 + ev.pct / 100)) and t >= quiet[i]:
                    hits.append((self.arms[i], {slot: ext}))
            except Exception:
                fail(self.arms[i])
        if members is not self._odd:
            self.settle()  # the extremes moved rule by rule
        return len(hits) > n_hits


class TrailingDownRun(_TrailingRun):
    __slots__ = ()


class TrailingUpRun(_TrailingRun):
    __slots__ = ()
    SLOT = "trough"
    DOWN = False


class _Window:
    """Window rules holding the same deques: positions by pct, up and down, and the
    thresholds at the window low and high they were computed for."""

    __slots__ = ("down", "high", "highs", "low", "lows", "members", "span_ms", "thr_down",
                 "thr_up", "up")

    def __init__(self, evs: tuple[Any, ...], members: list[int]) -> None:
        lead = evs[members[0]]
        self.lows, self.highs, self.span_ms = lead.lows, lead.highs, lead.span_ms
        self.members = members
        self.up = _by_pct(evs, [i for i in members if evs[i].up])
        self.down = _by_pct(evs, [i for i in members if evs[i].down])
        self.low: Any = None
        self.high: Any = None
        self.thr_up: list[float] = []
        self.thr_down: list[float] = []  # negated


class WindowPctRun(Run):
    """``WindowPct.step`` over one symbol's window rules, with their deques shared.

    Rules of one window length whose deques hold the same ticks have the same deques from
    then on, until one of them fires (``WindowPct.fired`` gives that one new deques). So
    ``share`` makes them hold the very same deque objects (equal contents: each rule's state,
    as the checkpoint reads it, is unchanged), and a tick updates each deque once, not once
    per rule: with many window rules on a symbol, most of a tick's memory traffic goes. It
    runs when the run is built, after firings, and every ``SHARE_EVERY`` ticks (rules armed
    at different times hold the same ticks once their window has moved past the later one).

    The rules sharing deques form a group whose thresholds ``low * (1 + pct/100)`` and
    ``high * (1 - pct/100)`` are kept sorted (computed again when the window's low or high
    moves), so a tick costs the deque update and two bisections per group, and its firings.
    A window low or high or a price that is not a finite positive number takes the
    rule-by-rule test for that group.
    """

    __slots__ = ("_groups",)
    PARAMS = ("pct", "span_ms")
    SHARE_EVERY = 64

    def __init__(self, arms: list[Any]) -> None:
        super().__init__(arms)
        self.share()

    def share(self) -> None:
        """Make rules with equal windows hold the same deques; order rules by shared deques;
        group them."""
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
        members: dict[tuple[int, int], list[int]] = {}
        for i, ev in enumerate(self.evs):
            members.setdefault((id(ev.lows), id(ev.highs)), []).append(i)
        self._groups = [_Window(self.evs, group) for group in members.values()]

    def run(self, p: float, t: int, pc: float | None, vol: int, hits: Hits, fail: Fail) -> bool:
        self.ticks += 1
        if self.ticks % self.SHARE_EVERY == 0 and len(self.evs) > 1:
            self.share()
        tick = (t, p)
        quiet, arms, evs = self.quiet, self.arms, self.evs
        n_hits = len(hits)
        for g in self._groups:
            try:
                lows, highs = g.lows, g.highs
                oldest = t - g.span_ms
                while lows and lows[-1][1] >= p:
                    lows.pop()
                lows.append(tick)
                while lows[0][0] < oldest:
                    lows.popleft()
                while highs and highs[-1][1] <= p:
                    highs.pop()
                highs.append(tick)
                while highs[0][0] < oldest:
                    highs.popleft()
                low, high = lows[0][1], highs[0][1]
            except Exception:  # a damaged deque (restored state): its rules are disabled
                for i in g.members:
                    fail(arms[i])
                continue
            if not (_positive(p) and _positive(low) and _positive(high)):
                self._each(g, p, t, low, high, hits, fail)
                continue
            up, down = g.up, g.down
            n_up = n_down = 0
            if up:
                if low != g.low:
                    g.thr_up = [low * (1 + evs[i].pct / 100) for i in up]
                    g.low = low
                n_up = bisect_right(g.thr_up, p)
            if down:
                if high != g.high:
                    g.thr_down = [-(high * (1 - evs[i].pct / 100)) for i in down]
                    g.high = high
                n_down = bisect_right(g.thr_down, -p)
            if n_up:
                for i in up[:n_up]:
                    if t >= quiet[i]:
                        hits.append((arms[i], {"window_low": low, "window_high": high}))
            if n_down:
                skip = set(up[:n_up]) if n_up else ()
                for i in down[:n_down]:
                    if t >= quiet[i] and i not in skip:
                        hits.append((arms[i], {"window_low": low, "window_high": high}))
        return len(hits) > n_hits

    def _each(self, g: _Window, p: float, t: int, low: Any, high: Any, hits: Hits,
              fail: Fail) -> None:
        """The condition of ``WindowPct.step`` rule by rule, for a group the index cannot
        order (its deques already updated)."""
        quiet, arms = self.quiet, self.arms
        for i in g.members:
            ev = self.evs[i]
            try:
                if ((ev.up and p >= low * (1 + ev.pct / 100)) or (
                        ev.down and p <= high * (1 - ev.pct / 100))) and t >= quiet[i]:
                    hits.append((arms[i], {"window_low": low, "window_high": high}))
            except Exception:
                fail(arms[i])

    def settle(self) -> None:
        if len(self.evs) > 1:
            self.share()
        else:
            self._groups = [_Window(self.evs, [0])]


RUNS: dict[type, Callable[[list[Any]], Run]] = {
    CrossAbove: CrossAboveRun, CrossBelow: CrossBelowRun, ChangePct: ChangePctRun,
    TrailingDown: TrailingDownRun, TrailingUp: TrailingUpRun, WindowPct: WindowPctRun}
