"""Level kinds with memory: ``above`` / ``below`` (with a re-arm band) and ``channel``.

Semantics: docs/RULES.md. Evaluators follow the contract in ``proto.rulekinds.api``.
"""

from __future__ import annotations

from typing import Any

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
