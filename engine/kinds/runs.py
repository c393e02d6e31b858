"""How the rule book evaluates a symbol's rules: in *runs*, one tight loop over a group of
rules instead of a chain of method calls per rule. With 100k rules a tick's cost is the
interpreter's call overhead and the cache misses of every object it reads, not arithmetic.

A run holds armed rules (``engine.book.Armed``) of one symbol with one market-hours flag and
evaluates them at a tick: it does to each rule's state what ``Evaluator.step`` does (the
state stays in the evaluator's slots, where the checkpoint reads it), counts the tick (from
which ``Armed.dirty`` follows) and appends ``(armed, ref)`` for every rule whose condition
holds and whose cooldown allows a firing. The book then applies cooldown, frequency and
``fired`` to those hits in rule order, exactly as ``Armed.on_tick`` does for one rule, and
calls ``settle`` on runs whose structure follows the rules' state.

``Run`` itself calls ``step``: it serves plug-ins, kinds without a loop of their own, and
kinds with few rules on the symbol (``engine.book.MIN_RUN``), in one run per symbol. Kinds
with a loop of their own register it in their module's ``RUNS`` under their exact evaluator
class (a plug-in's checked subclass is never there), gathered in ``engine.kinds.RUNS``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from proto.rulekinds import Ref

Hits = list[tuple[Any, Ref]]
Fail = Callable[[Any], None]  # called inside the except block: disables the rule, logs why


def can_fire(armed: Any, t: int) -> bool:
    """Whether a firing of this rule at ``t`` is not suppressed (cooldown, once per bar).
    The book asks for every hit; runs ask (or test ``quiet_from``'s number) before they build
    one, as a condition held under cooldown is common (a stock up 3% stays up for hours)."""
    last = armed.last_fire_t
    return last is None or not (t < last + armed.cooldown_ms or (
        armed.per_bar and t // 60_000 == last // 60_000))


def quiet_from(armed: Any) -> float:
    """The time from which ``can_fire`` holds: ``can_fire(armed, t) == (t >= quiet_from(armed))``
    for every t. As ``cooldown_ms >= 0``, a t before the last firing is in the cooldown, so
    "same minute as the last firing" reduces to "before the next minute starts"; and
    ``last + cooldown_ms`` is the very float ``can_fire`` compares with."""
    last = armed.last_fire_t
    if last is None:
        return -math.inf
    until: float = last + armed.cooldown_ms
    if armed.per_bar:
        until = max(until, (last // 60_000 + 1) * 60_000)
    return until


class Run:
    """The base run: armed rules and their evaluators (in parallel, so that a loop needs no
    attribute read to find the evaluator), evaluated through the evaluator's ``step``."""

    __slots__ = ("arms", "evs", "market_hours", "quiet", "ticks")
    # Slots of the evaluator class that hold parameters (never changed by step or fired):
    # equal values are made one object across the run's rules, so that a tick reads one
    # float object for all of them instead of one per rule (each one a likely cache miss).
    PARAMS: tuple[str, ...] = ()

    def __init__(self, arms: list[Any]) -> None:
        # Tuples: the pointers sit in the object itself, one memory read fewer than a list
        # (a book of 100k rules is far larger than the CPU's caches; each read is a miss).
        # Loops walk ``evs`` and index ``arms`` only for a hit: iterating the rules themselves
        # would write to each one's reference count, which is a miss of its own.
        self.arms = tuple(arms)
        self.evs = tuple(armed.evaluator for armed in arms)
        self.market_hours: bool = arms[0].market_hours
        self.ticks = 0  # ticks evaluated: ``Armed.dirty`` compares it with its own mark
        # quiet[i]: from when rule i may fire again (cooldown, once per bar), kept by the
        # book at each firing (``Armed.pos`` is i), so a run tests one number per hit.
        self.quiet = [quiet_from(armed) for armed in arms]
        for pos, armed in enumerate(arms):
            armed.attach(self, pos)
        for name in self.PARAMS:
            one: dict[Any, Any] = {}
            for ev in self.evs:
                value = getattr(ev, name)
                setattr(ev, name, one.setdefault((type(value), value), value))

    def run(self, p: float, t: int, pc: float | None, vol: int, hits: Hits, fail: Fail) -> bool:
        """Evaluate every rule at this tick; True when ``settle`` must follow the firings."""
        self.ticks += 1
        quiet = self.quiet
        for i, ev in enumerate(self.evs):
            try:
                ref = ev.step(p, t, pc, vol)
            except Exception:  # a rule's own failure: it is disabled, the others carry on
                fail(self.arms[i])
                continue
            if ref is not None and t >= quiet[i]:
                hits.append((self.arms[i], ref))
        return False

    def settle(self) -> None:
        """After the book applied ``fired`` to this tick's firings: follow their new state."""

