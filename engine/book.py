"""The rule book of one shard: armed rules indexed by symbol, the options every kind shares
(frequency, cooldown, expiry), and the per-symbol facts rules need (previous close).

Pure: ticks in, firings out. The shard loop and replay both drive it.

``Armed.on_tick`` is the definition of one rule at one tick. The book gets the same firings,
in the order the rules were put, more cheaply: a symbol's rules are grouped into *runs*
(``engine.kinds.runs``: one loop per kind, a sorted index for ``above``/``below``, shared
deques for ``window_pct``), expiry and the session are checked once per symbol, and
cooldowns are applied to the few rules whose condition held. A tick reads the evaluators of
its symbol's rules and not the ``Armed`` objects (``Armed.dirty`` is derived from a run's
tick count), since with 100k rules nearly every object read is a cache miss.

Rule state stays in the evaluators' slots and ``Armed`` fields, where the checkpoint reads
and restores it. The runs are built from that state when a symbol ticks after a change to
its rules; whoever changes rule state from outside after the symbol ticked (a restore into
a running book) calls ``Book.invalidate``. ``tests/engine/test_book_runs.py`` checks the
book against the per-rule loop.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from engine.kinds import Evaluator, Ref, Run, describe, make_evaluator, run_for
from engine.kinds.runs import can_fire, quiet_from
from engine.session import Session
from proto.rules import Rule

log = logging.getLogger(__name__)


class Armed:
    """A rule with its state. ``done`` once a once-rule fired or the rule expired."""

    __slots__ = ("_dirty", "_seen", "cooldown_ms", "done", "evaluator", "expires_at",
                 "fingerprint", "last_fire_t", "market_hours", "once", "params", "per_bar",
                 "pos", "rule", "run", "seq")

    def __init__(self, rule: Rule, seq: int = 0) -> None:
        self.rule = rule
        self.seq = seq  # the order of arming: firings of one tick come in this order
        self.params: Any = None  # the validated params model, built on the first firing
        self.evaluator: Evaluator = make_evaluator(rule.kind, rule.params)
        self.cooldown_ms = rule.cooldown_s * 1000
        self.once = rule.frequency == "once"
        self.per_bar = rule.frequency == "once_per_bar"
        self.market_hours = rule.market_hours_only
        self.expires_at = rule.expires_at
        self.last_fire_t: int | None = None
        self.done = False
        self.run: Run | None = None  # the book's group this rule is evaluated in
        self.pos = 0  # its place in run.arms
        self._seen = 0  # the run's tick count when dirty was last cleared
        self._dirty = False
        self.fingerprint = ""  # of the rule's JSON, computed once by the checkpoint

    @property
    def dirty(self) -> bool:
        """State changed since the checkpoint last cleared this: a change marked on the rule,
        or a tick evaluated by its run since then. Runs of kinds whose state moves at every
        tick count their ticks rather than mark each rule, so that a tick need not touch the
        rule's ``Armed`` at all (with 100k rules each touch is a cache miss)."""
        run = self.run
        return self._dirty or (run is not None and run.ticks != self._seen)

    @dirty.setter
    def dirty(self, value: bool) -> None:
        self._dirty = value
        if not value and self.run is not None:
            self._seen = self.run.ticks

    def attach(self, run: Run | None, pos: int = 0) -> None:
        """Move to another run (or none, when the rule leaves the book), keeping ``dirty``."""
        self._dirty = self.dirty
        self.run, self.pos = run, pos
        self._seen = run.ticks if run is not None else 0

    def on_tick(self, p: float, t: int, pc: float | None, vol: int) -> Ref | None:
        """The reference values of a firing at this tick, or None. The per-rule definition:
        the book evaluates a symbol's rules in groups (``Book.on_tick``) with the same result."""
        if self.expires_at is not None and t >= self.expires_at:
            self.done = True
            return None
        self.dirty = True
        ref = self.evaluator.step(p, t, pc, vol)
        if ref is None:
            return None
        if not can_fire(self, t):
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


# A kind's own loop pays for its run (an object, its tuples, a call per tick) from this many
# rules of the kind on a symbol; fewer go to one plain run of the symbol, which calls ``step``
# for each (measured: 100k rules over 9000 symbols, every kind on every symbol).
MIN_RUN = 4


class Plan:
    """How one symbol's rules are evaluated: one run per evaluator class and market-hours flag
    with ``MIN_RUN`` rules or more, one plain run for the rest; built from the rules' state
    when the symbol next ticks after a change to its rules."""

    __slots__ = ("has_done", "next_expiry_ms", "runs")

    def __init__(self, rules: list[Armed]) -> None:
        groups: dict[tuple[type, bool], list[Armed]] = {}
        for armed in rules:
            groups.setdefault((type(armed.evaluator), armed.market_hours), []).append(armed)
        runs: list[Run] = []
        pooled: dict[bool, list[Armed]] = {}  # by market-hours flag
        for (cls, market_hours), arms in groups.items():
            make = run_for(cls)
            if make is Run or len(arms) < MIN_RUN:
                pooled.setdefault(market_hours, []).extend(arms)
            else:
                runs.append(make(arms))
        runs.extend(Run(arms) for arms in pooled.values())
        self.runs = tuple(runs)
        self.next_expiry_ms = min((a.expires_at for a in rules if a.expires_at is not None),
                                  default=math.inf)
        # A rule can only be done here if a checkpoint said so; it leaves at its next tick.
        self.has_done = any(a.done for a in rules)


def _seq(hit: tuple[Armed, Ref]) -> int:
    return hit[0].seq  # runs append hits in their own order; firings go in rule order


class Book:
    """Armed rules by symbol; a tick costs only the rules of its symbol, grouped by kind
    (``engine.kinds.runs``), with the same firings in the same order as ``Armed.on_tick``
    called for each of the symbol's rules in the order they were put."""

    def __init__(self, session: Session | None = None) -> None:
        self.session = session or Session()
        self.by_symbol: dict[str, list[Armed]] = {}
        self.by_id: dict[str, Armed] = {}
        self.prev_close: dict[str, float] = {}
        self.errors = 0
        self.removed: set[str] = set()  # rule ids whose checkpointed state is now stale
        self._plans: dict[str, Plan] = {}
        self._seq = 0
        self._finished: list[Armed] = []  # done during the current tick
        self._fail_rule = self._fail  # bound once: runs get it at every tick

    def __len__(self) -> int:
        return len(self.by_id)

    def put(self, rule: Rule) -> None:
        """Arm a new or changed rule (a changed rule starts over at i = 0)."""
        self.remove(rule.id)
        if not rule.active:
            return
        self._seq += 1
        armed = Armed(rule, self._seq)
        self.by_id[rule.id] = armed
        self.by_symbol.setdefault(rule.symbol, []).append(armed)
        self._plans.pop(rule.symbol, None)

    def remove(self, rule_id: str) -> None:
        armed = self.by_id.pop(rule_id, None)
        if armed is None:
            return
        self.removed.add(rule_id)
        armed.attach(None)
        sym = armed.rule.symbol
        self._plans.pop(sym, None)
        rules = self.by_symbol[sym]
        rules.remove(armed)
        if not rules:
            del self.by_symbol[sym]

    def invalidate(self) -> None:
        """Forget the per-symbol runs, so the next tick rebuilds them from the rules' state.
        Needed only when rule state was changed from outside (a checkpoint restored) after
        the rule's symbol ticked; ``put`` and ``remove`` do it for their symbol."""
        self._plans.clear()

    def on_tick(self, sym: str, p: float, t: int, pc: float | None,
                vol: int = 0) -> list[Firing]:
        """Firings of this tick in rule order; finished rules leave the book."""
        if pc:
            self.prev_close[sym] = pc
        else:
            pc = self.prev_close.get(sym)
        plan = self._plans.get(sym)
        if plan is None:
            if sym not in self.by_symbol:
                return []
            plan = self._plans[sym] = Plan(self.by_symbol[sym])
        is_open: bool | None = None
        if t >= plan.next_expiry_ms:
            is_open = self.session.is_open(t)
            if self._expire(self.by_symbol[sym], t, is_open):
                rules = self.by_symbol.get(sym)
                if not rules:
                    return []
                plan = self._plans[sym] = Plan(rules)
        hits: list[tuple[Armed, Ref]] = []
        settle: list[Run] | None = None
        for run in plan.runs:
            if run.market_hours:
                if is_open is None:
                    is_open = self.session.is_open(t)
                if not is_open:
                    continue  # outside the session the rule does not see the tick at all
            if run.run(p, t, pc, vol, hits, self._fail_rule):
                settle = [run] if settle is None else [*settle, run]
        if not hits:
            if plan.has_done or self._finished:
                self._leave(sym, t, plan)
            return []
        firings = self._commit(sym, p, t, hits)
        if settle is not None:
            for run in settle:
                run.settle()
        if plan.has_done or self._finished:
            self._leave(sym, t, plan)
        return firings

    def _leave(self, sym: str, t: int, plan: Plan) -> None:
        """Rules done at this tick (fired once, raised, or restored done) leave the book."""
        if plan.has_done:
            self._finished.extend(a for a in self.by_symbol[sym] if a.done and (
                not a.market_hours or self.session.is_open(t)))
        for armed in self._finished:
            self.remove(armed.rule.id)
        self._finished.clear()

    def _commit(self, sym: str, p: float, t: int, hits: list[tuple[Armed, Ref]]) -> list[Firing]:
        """Cooldown, frequency and ``fired`` for the rules whose condition held, in rule order."""
        if len(hits) > 1:
            hits.sort(key=_seq)
        firings: list[Firing] = []
        for armed, ref in hits:
            if not can_fire(armed, t):
                continue  # suppressed: changes no state
            try:
                armed.evaluator.fired(p, t)
                armed._dirty = True
                armed.last_fire_t = t
                run = armed.run
                if run is not None:
                    run.quiet[armed.pos] = quiet_from(armed)
                if armed.once:
                    armed.done = True
                    self._finished.append(armed)
                if armed.params is None:
                    armed.params = armed.rule.typed_params()
            except Exception:  # a broken rule is disabled, the shard lives on
                self._fail(armed)
                continue
            rule = armed.rule
            firings.append(Firing(rule, ref, describe(rule.kind, armed.params, sym, p, ref)))
        return firings

    def _expire(self, rules: list[Armed], t: int, is_open: bool) -> bool:
        """Rules that expired at this tick leave the book before it is evaluated (a
        market-hours rule only once it sees a tick, as in ``Armed.on_tick``)."""
        expired = [a for a in rules if a.expires_at is not None and t >= a.expires_at
                   and (is_open or not a.market_hours)]
        for armed in expired:
            armed.done = True
            self.remove(armed.rule.id)
        return bool(expired)

    def _fail(self, armed: Armed) -> None:
        """Called in an except block: disable the rule that raised, log why."""
        log.exception("rule %s raised; disabling it", armed.rule.id)
        self.errors += 1
        armed.done = True
        self._finished.append(armed)
