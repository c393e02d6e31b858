"""Level kinds with memory: ``above`` / ``below`` (with a re-arm band) and ``channel``.

Semantics: docs/RULES.md. Evaluators follow the contract in ``proto.rulekinds.api``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from typing import Any

from engine.kinds.runs import Fail, Hits, Run, can_fire
from proto.rulekinds import API_VERSION, Ref, RuleKind
from proto.rulekinds.builtin import ChannelParams, LevelRearmParams


class Above:
    """Fires when ready and p >= level; a firing clears ready; p < rearm_at sets it again."""

    __slots__ = ("level", "ready", "rearm_at")

    def __init__(self, level: float, rearm_pct: float) -> None:
        self.level = level
        self.rearm_at = level * (1 - rearm_pct / 100)
        self.ready = True

    def step(self, p: float, t: int, pc: float | None, vol: int) -> Ref | None:
        if self.ready:
            if p >= self.level:
                return {"level": self.level, "rearm_at": self.rearm_at}
        elif p < self.rearm_at:
            self.ready = True
        return None

    def fired(self, p: float, t: int) -> None:
        self.ready = False


class Below(Above):
    """Fires when ready and p <= level; a firing clears ready; p > rearm_at sets it again."""

    __slots__ = ()

    def __init__(self, level: float, rearm_pct: float) -> None:
        self.level = level
        self.rearm_at = level * (1 + rearm_pct / 100)
        self.ready = True

    def step(self, p: float, t: int, pc: float | None, vol: int) -> Ref | None:
        if self.ready:
            if p <= self.level:
                return {"level": self.level, "rearm_at": self.rearm_at}
        elif p > self.rearm_at:
            self.ready = True
        return None


class Channel:
    """inside(p) = low <= p <= high; fires at i >= 1 when inside changes in a watched way."""

    __slots__ = ("enter", "exit", "high", "low", "prev")

    def __init__(self, low: float, high: float, on: str) -> None:
        self.low = low
        self.high = high
        self.enter = on in ("enter", "both")
        self.exit = on in ("exit", "both")
        self.prev: float | None = None

    def step(self, p: float, t: int, pc: float | None, vol: int) -> Ref | None:
        prev, self.prev = self.prev, p
        if prev is None:
            return None
        was = self.low <= prev <= self.high
        inside = self.low <= p <= self.high
        if (inside and not was and self.enter) or (was and not inside and self.exit):
            return {"low": self.low, "high": self.high, "prev": prev}
        return None

    def fired(self, p: float, t: int) -> None:
        pass


class ChannelRun(Run):
    """``Channel.step`` over one symbol's channel rules."""

    __slots__ = ()
    PARAMS = ("high", "low")

    def run(self, p: float, t: int, pc: float | None, vol: int, hits: Hits, fail: Fail) -> bool:
        self.ticks += 1
        quiet = self.quiet
        for i, ev in enumerate(self.evs):
            try:
                prev = ev.prev
                ev.prev = p
                if prev is None:
                    continue
                low, high = ev.low, ev.high
                was = low <= prev <= high
                inside = low <= p <= high
                if ((inside and not was and ev.enter) or (was and not inside and ev.exit)) \
                        and t >= quiet[i]:
                    hits.append((self.arms[i], {"low": low, "high": high, "prev": prev}))
            except Exception:
                fail(self.arms[i])
        return False


class LevelIndex(Run):
    """One symbol's ``above`` (sign 1) or ``below`` (sign -1) rules, indexed by level, so that a
    tick costs O(log n + the rules whose state changes or that fire), not O(n).

    In the key space ``x -> sign * x`` (negation is exact) both kinds read alike: a *ready*
    rule fires when ``key(level) <= key(p)``, a rule that is not ready re-arms when
    ``key(p) < key(rearm_at)``. So the ready rules sorted by ``key(level)`` fire as a prefix
    and the waiting ones sorted by ``key(rearm_at)`` re-arm as a suffix. The ``ready`` slot of
    each evaluator stays the truth the checkpoint reads; the index is built from it when the
    book (re)builds a symbol's runs, and follows it when ``fired`` clears it (``settle``).
    """

    __slots__ = ("fired_n", "ready", "ready_keys", "sign", "wait_keys", "waiting")

    def __init__(self, arms: list[Any], sign: float) -> None:
        super().__init__(arms)
        self.sign = sign
        ready = sorted((sign * a.evaluator.level, a.seq, a) for a in arms if a.evaluator.ready)
        waiting = sorted((sign * a.evaluator.rearm_at, a.seq, a)
                         for a in arms if not a.evaluator.ready)
        self.ready_keys = [key for key, _seq, _a in ready]
        self.ready = [a for _key, _seq, a in ready]
        self.wait_keys = [key for key, _seq, _a in waiting]
        self.waiting = [a for _key, _seq, a in waiting]
        self.fired_n = 0  # the ready prefix that hit at the last tick

    def run(self, p: float, t: int, pc: float | None, vol: int, hits: Hits, fail: Fail) -> bool:
        if p != p:  # NaN compares false with every level: nothing fires, nothing re-arms
            return False
        q = self.sign * p
        n = self.fired_n = bisect_right(self.ready_keys, q)
        for armed in self.ready[:n]:
            if can_fire(armed, t):
                ev = armed.evaluator
                hits.append((armed, {"level": ev.level, "rearm_at": ev.rearm_at}))
        wait_keys = self.wait_keys
        j = bisect_right(wait_keys, q)
        if j < len(wait_keys):  # re-armed rules: key(level) >= key(rearm_at) > q, not in the prefix
            sign, ready_keys, ready = self.sign, self.ready_keys, self.ready
            for armed in self.waiting[j:]:
                ev = armed.evaluator
                ev.ready = True
                armed.dirty = True
                key = sign * ev.level
                i = bisect_right(ready_keys, key)
                ready_keys.insert(i, key)
                ready.insert(i, armed)
            del wait_keys[j:], self.waiting[j:]
        return n > 0

    def settle(self) -> None:
        """Rules of the fired prefix whose ``fired`` cleared ``ready`` move to the waiting list
        (a suppressed firing changes no state: such a rule stays ready)."""
        n, self.fired_n = self.fired_n, 0
        prefix = self.ready[:n]
        keep = [a for a in prefix if a.evaluator.ready]
        if len(keep) == n:
            return
        self.ready[:n] = keep
        self.ready_keys[:n] = [self.sign * a.evaluator.level for a in keep]
        for armed in prefix:
            if not armed.evaluator.ready:
                key = self.sign * armed.evaluator.rearm_at
                i = bisect_right(self.wait_keys, key)
                self.wait_keys.insert(i, key)
                self.waiting.insert(i, armed)


def _above_index(arms: list[Any]) -> LevelIndex:
    return LevelIndex(arms, 1.0)


def _below_index(arms: list[Any]) -> LevelIndex:
    return LevelIndex(arms, -1.0)


RUNS: dict[type, Callable[[list[Any]], Run]] = {
    Above: _above_index, Below: _below_index, Channel: ChannelRun}


def _describe_above(params: LevelRearmParams, symbol: str, p: float, ref: Ref) -> str:
    return (f"{symbol} is at or above {params.level:g}: {p:g} "
            f"(alerts again after a dip below {ref['rearm_at']:g})")


def _describe_below(params: LevelRearmParams, symbol: str, p: float, ref: Ref) -> str:
    return (f"{symbol} is at or below {params.level:g}: {p:g} "
            f"(alerts again after a rise above {ref['rearm_at']:g})")


def _describe_channel(params: ChannelParams, symbol: str, p: float, ref: Ref) -> str:
    band = f"[{params.low:g}, {params.high:g}]"
    if params.low <= p <= params.high:
        return f"{symbol} entered the channel {band} at {p:g} (from {ref['prev']:g})"
    side = "upwards" if p > params.high else "downwards"
    return f"{symbol} left the channel {band} {side} at {p:g} (from {ref['prev']:g})"


KINDS: tuple[RuleKind[Any], ...] = (
    RuleKind(name="above", params=LevelRearmParams,
             evaluator=lambda p: Above(p.level, p.rearm_pct),
             describe=_describe_above, api_version=API_VERSION),
    RuleKind(name="below", params=LevelRearmParams,
             evaluator=lambda p: Below(p.level, p.rearm_pct),
             describe=_describe_below, api_version=API_VERSION),
    RuleKind(name="channel", params=ChannelParams,
             evaluator=lambda p: Channel(p.low, p.high, p.on),
             describe=_describe_channel, api_version=API_VERSION),
)
