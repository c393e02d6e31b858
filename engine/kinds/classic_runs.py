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


_NONE: list[int] = []  # no rule fires (shared: never appended to)


class _Bands:
    """Rules of a run (positions in it) that fire up when ``p >= up_base * (1 + pct/100)``
    and down when ``p <= down_base * (1 - pct/100)``: change_pct (both bases the previous
    close) and window_pct (the window's low and high). Each side is held by pct with its
    thresholds at the base they were computed for (again only when the base moves), so the
    rules whose condition holds are a prefix of each side, found by bisection. A base that
    is not a finite positive number leaves the thresholds unordered: then rule by rule."""

    __slots__ = ("arms", "down", "down_base", "either", "evs", "members", "quiet", "thr_down",
                 "thr_up", "up", "up_base")

    def __init__(self, run: Run, members: list[int]) -> None:
        """``members``: positions in ``run``, whose rules, evaluators and quiet times (kept
        by the book in place) it reads; a run that reorders its rules makes new ones."""
        evs = self.evs = run.evs
        self.arms, self.quiet = run.arms, run.quiet
        self.members = members
        self.up = _by_pct(evs, [i for i in members if evs[i].up])
        self.down = _by_pct(evs, [i for i in members if evs[i].down])
        self.either = any(evs[i].up and evs[i].down for i in members)
        self.up_base: Any = None
        self.down_base: Any = None
        self.thr_up: list[float] = []
        self.thr_down: list[float] = []  # negated: ascending, like the rules' order

    def firing(self, p: float, t: int, up_base: Any, down_base: Any, fail: Fail) -> list[int]:
        """Positions of the rules whose condition holds at ``p`` and whose cooldown allows a
        firing at ``t``; each once, even when both its thresholds hold."""
        if up_base != self.up_base:
            if not _positive(up_base):
                return self._each(p, t, up_base, down_base, fail)
            self.thr_up = [up_base * (1 + self.evs[i].pct / 100) for i in self.up]
            self.up_base = up_base
        if down_base != self.down_base:
            if not _positive(down_base):
                return self._each(p, t, up_base, down_base, fail)
            self.thr_down = [-(down_base * (1 - self.evs[i].pct / 100)) for i in self.down]
            self.down_base = down_base
        if p != p:  # NaN: no condition holds
            return _NONE
        n_up = bisect_right(self.thr_up, p)
        n_down = bisect_right(self.thr_down, -p)
        if not (n_up or n_down):
            return _NONE
        up, down = self.up[:n_up], self.down[:n_down]
        if up and down and self.either:
            held = set(up)
            down = [i for i in down if i not in held]
        quiet = self.quiet
        return [i for i in up + down if t >= quiet[i]]

    def _each(self, p: float, t: int, up_base: Any, down_base: Any, fail: Fail) -> list[int]:
        """The evaluators' condition rule by rule, for bases the index cannot order."""
        evs, quiet = self.evs, self.quiet
        fired = []
        for i in self.members:
            ev = evs[i]
            try:
                if ((ev.up and p >= up_base * (1 + ev.pct / 100)) or (
                        ev.down and p <= down_base * (1 - ev.pct / 100))) and t >= quiet[i]:
                    fired.append(i)
            except Exception:  # e.g. a state restored from a damaged checkpoint
                fail(self.arms[i])
        return fired


class ChangePctRun(Run):
    """The rules' thresholds ``pc * (1 ± pct/100)`` held sorted for the symbol's previous
    close (``_Bands``; it changes once a day): a tick costs two bisections and its firings.
    No state changes at a tick (only a firing's, which the book marks), so no dirty."""

    __slots__ = ("_bands",)
    PARAMS = ("pct",)

    def __init__(self, arms: list[Any]) -> None:
        super().__init__(arms)
        self._bands = _Bands(self, list(range(len(self.evs))))

    def run(self, p: float, t: int, pc: float | None, vol: int, hits: Hits, fail: Fail) -> bool:
        if not pc:
            return False
        fired = self._bands.firing(p, t, pc, pc, fail)
        if fired:
            ref = {"pc": pc, "change_pct": (p / pc - 1) * 100}
            arms = self.arms
            hits.extend((arms[i], dict(ref)) for i in fired)
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
    """Window rules holding the same deques, and their thresholds (``_Bands``: up at the
    window's low, down at its high)."""

    __slots__ = ("bands", "highs", "lows", "span_ms")

    def __init__(self, run: Run, members: list[int]) -> None:
        lead = run.evs[members[0]]
        self.lows, self.highs, self.span_ms = lead.lows, lead.highs, lead.span_ms
        self.bands = _Bands(run, members)


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
    ``high * (1 - pct/100)`` are kept sorted (``_Bands``), so a tick costs the deque update
    and two bisections per group, and its firings.
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
        self._groups = [_Window(self, group) for group in members.values()]

    def run(self, p: float, t: int, pc: float | None, vol: int, hits: Hits, fail: Fail) -> bool:
        self.ticks += 1
        if self.ticks % self.SHARE_EVERY == 0 and len(self.evs) > 1:
            self.share()
        tick = (t, p)
        arms = self.arms
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
                for i in g.bands.members:
                    fail(arms[i])
                continue
            fired = g.bands.firing(p, t, low, high, fail)
            if fired:
                ref = {"window_low": low, "window_high": high}
                hits.extend((arms[i], dict(ref)) for i in fired)
        return len(hits) > n_hits

    def settle(self) -> None:
        if len(self.evs) > 1:
            self.share()
        else:
            self._groups = [_Window(self, [0])]


RUNS: dict[type, Callable[[list[Any]], Run]] = {
    CrossAbove: CrossAboveRun, CrossBelow: CrossBelowRun, ChangePct: ChangePctRun,
    TrailingDown: TrailingDownRun, TrailingUp: TrailingUpRun, WindowPct: WindowPctRun}
