"""The rule book of one shard: armed rules indexed by symbol, the options every kind shares
(frequency, cooldown, expiry), and the per-symbol facts rules need (previous close).

Pure: ticks in, firings out. The shard loop and replay both drive it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from engine.kinds import Evaluator, Ref, describe, make_evaluator
from engine.session import Session
from proto.rules import Rule

log = logging.getLogger(__name__)


class Armed:
    """A rule with its state. ``done`` once a once-rule fired or the rule expired."""

    __slots__ = ("cooldown_ms", "dirty", "done", "evaluator", "expires_at", "fingerprint",
                 "last_fire_t", "market_hours", "once", "params", "per_bar", "rule")

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.params: Any = None  # the validated params model, built on the first firing
        self.evaluator: Evaluator = make_evaluator(rule.kind, rule.params)
        self.cooldown_ms = rule.cooldown_s * 1000
        self.once = rule.frequency == "once"
        self.per_bar = rule.frequency == "once_per_bar"
        self.market_hours = rule.market_hours_only
        self.expires_at = rule.expires_at
        self.last_fire_t: int | None = None
        self.done = False
        self.dirty = False  # state changed since the last checkpoint
        self.fingerprint = ""  # of the rule's JSON, computed once by the checkpoint

    def on_tick(self, p: float, t: int, pc: float | None, vol: int) -> Ref | None:
        """The reference values of a firing at this tick, or None."""
        if self.expires_at is not None and t >= self.expires_at:
            self.done = True
            return None
        self.dirty = True
        ref = self.evaluator.step(p, t, pc, vol)
        if ref is None:
            return None
        last = self.last_fire_t
        if last is not None and (t < last + self.cooldown_ms or (
                self.per_bar and t // 60_000 == last // 60_000)):
            return None  # suppressed: changes no state
        self.evaluator.fired(p, t)
        self.last_fire_t = t
        if self.once:
            self.done = True
        return ref


@dataclass(slots=True)
class Firing:
    rule: Rule
    ref: Ref
    msg: str


class Book:
    """Armed rules by symbol; a tick costs only the rules of its symbol."""

    def __init__(self, session: Session | None = None) -> None:
        self.session = session or Session()
        self.by_symbol: dict[str, list[Armed]] = {}
        self.by_id: dict[str, Armed] = {}
        self.prev_close: dict[str, float] = {}
        self.errors = 0
        self.removed: set[str] = set()  # rule ids whose checkpointed state is now stale

    def __len__(self) -> int:
        return len(self.by_id)

    def put(self, rule: Rule) -> None:
        """Arm a new or changed rule (a changed rule starts over at i = 0)."""
        self.remove(rule.id)
        if not rule.active:
            return
        armed = Armed(rule)
        self.by_id[rule.id] = armed
        self.by_symbol.setdefault(rule.symbol, []).append(armed)

    def remove(self, rule_id: str) -> None:
        armed = self.by_id.pop(rule_id, None)
        if armed is None:
            return
        self.removed.add(rule_id)
        rules = self.by_symbol[armed.rule.symbol]
        rules.remove(armed)
        if not rules:
            del self.by_symbol[armed.rule.symbol]

    def on_tick(self, sym: str, p: float, t: int, pc: float | None,
                vol: int = 0) -> list[Firing]:
        """Firings of this tick in rule order; finished rules leave the book."""
        if pc:
            self.prev_close[sym] = pc
        rules = self.by_symbol.get(sym)
        if not rules:
            return []
        pc = self.prev_close.get(sym)
        firings: list[Firing] = []
        finished = False
        for armed in rules:
            if armed.market_hours and not self.session.is_open(t):
                continue  # outside the session the rule does not see the tick at all
            try:
                ref = armed.on_tick(p, t, pc, vol)
                if ref is not None and armed.params is None:
                    armed.params = armed.rule.typed_params()
            except Exception:  # a broken rule is disabled, the shard lives on
                log.exception("rule %s raised; disabling it", armed.rule.id)
                self.errors += 1
                armed.done = True
                ref = None
            if ref is not None:
                rule = armed.rule
                firings.append(Firing(rule, ref, describe(rule.kind, armed.params, sym, p, ref)))
            finished = finished or armed.done
        if finished:
            for armed in [a for a in rules if a.done]:
                self.remove(armed.rule.id)
        return firings
