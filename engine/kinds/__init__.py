"""Every rule kind the engine can run: the built-ins, one module per family, and the plug-ins
``proto.rulekinds`` found. The rule book calls ``make_evaluator`` and ``describe``.

Built-ins go through the same interface and the same load-time check as plug-ins; their
params models live in ``proto.rulekinds.builtin`` (so web and the CLI validate without the
engine), and this module refuses to import if the two lists disagree.

Plug-in code is checked at call: a factory that raises, or a ``step`` that returns something
other than a flat dict of numbers, becomes an evaluator error, which disables that one rule.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from engine.kinds import averages, classic, classic_runs, levels, orb, volume
from engine.kinds.runs import Fail, Hits, Run
from proto.rulekinds import (
    BUILTIN_PARAMS,
    REGISTRY,
    Evaluator,
    Ref,
    RuleKind,
    RuleKindError,
    check_kind,
)

log = logging.getLogger(__name__)

__all__ = ["BUILTIN", "Evaluator", "Fail", "Hits", "Ref", "Run", "describe", "kind_of",
           "make_evaluator", "run_for"]


def _builtin_table(kinds: tuple[RuleKind[Any], ...]) -> dict[str, RuleKind[Any]]:
    table: dict[str, RuleKind[Any]] = {}
    for kind in kinds:
        check_kind(kind)
        if BUILTIN_PARAMS.get(kind.name) is not kind.params:
            raise RuleKindError(f"built-in kind {kind.name!r}: params model differs from "
                                "proto.rulekinds.builtin")
        table[kind.name] = kind
    missing = sorted(set(BUILTIN_PARAMS) - set(table))
    if missing:
        raise RuleKindError(f"built-in kinds without an evaluator: {', '.join(missing)}")
    return table


BUILTIN = _builtin_table(
    (*classic.KINDS, *levels.KINDS, *volume.KINDS, *averages.KINDS, *orb.KINDS))


# Built-in evaluator classes with a loop of their own; every other class (plug-ins, checked
# through a subclass, are never in it) goes through ``Run``, which calls ``step``.
RUNS: dict[type, Callable[[list[Any]], Run]] = {**classic_runs.RUNS, **levels.RUNS,
                                                **averages.RUNS}


def run_for(cls: type) -> Callable[[list[Any]], Run]:
    """How to evaluate armed rules whose evaluator is exactly of class ``cls``."""
    return RUNS.get(cls, Run)


def kind_of(name: str) -> RuleKind[Any]:
    kind = BUILTIN.get(name) or REGISTRY.plugins.get(name)
    if kind is None:
        raise RuleKindError(f"no rule kind {name!r} in this process (plug-in not installed?)")
    return kind


class Unbuildable:
    """Stands in for an evaluator that could not be built: it raises on its first tick, so
    the rule book disables the rule and counts the error, and arming itself never fails."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error  # text, so that the shard's checkpoint can hold it like any state

    def step(self, p: float, t: int, pc: float | None, vol: int) -> Ref | None:
        raise RuleKindError(self.error)

    def fired(self, p: float, t: int) -> None:
        raise RuleKindError(self.error)


def _is_ref(ref: object) -> bool:
    return type(ref) is dict and all(
        type(k) is str and type(v) in (float, int) for k, v in ref.items())


_CHECKED: dict[tuple[type, str], type] = {}


def _checked(kind: str, evaluator: Evaluator) -> Evaluator:
    """The plug-in's evaluator, its class swapped for a subclass whose ``step`` checks the
    result before it can travel in an alert. A subclass rather than a wrapper: the shard's
    checkpoint reads the evaluator's own slots."""
    cls = type(evaluator)
    checked = _CHECKED.get((cls, kind))
    if checked is None:
        inner_step = cls.step

        def step(self: Evaluator, p: float, t: int, pc: float | None, vol: int) -> Ref | None:
            ref = inner_step(self, p, t, pc, vol)
            if ref is None or _is_ref(ref):
                return ref
            raise RuleKindError(f"kind {kind!r}: step returned {ref!r}; expected None or a "
                                "dict of str to float")

        checked = type(cls.__name__, (cls,), {"__slots__": (), "step": step,
                                              "__module__": cls.__module__})
        _CHECKED[(cls, kind)] = checked
    evaluator.__class__ = checked
    return evaluator


def make_evaluator(kind: str, params: dict[str, Any]) -> Evaluator:
    """A fresh evaluator for a validated rule's kind and params."""
    try:
        spec = kind_of(kind)
        evaluator = spec.evaluator(spec.params.model_validate(params))
        if kind in BUILTIN:
            return evaluator
        if not (callable(getattr(evaluator, "step", None))
                and callable(getattr(evaluator, "fired", None))):
            raise RuleKindError("the evaluator has no step and fired methods")
        return _checked(kind, evaluator)
    except Exception as exc:  # the rule's own failure: reported on its first tick
        error = f"kind {kind!r} could not build an evaluator: {type(exc).__name__}: {exc}"
        log.error("%s", error)
        return Unbuildable(error)


def describe(kind: str, params: Any, symbol: str, p: float, ref: Ref) -> str:
    """The human sentence of a firing, from the kind's validated params model; a kind whose
    describe fails gets a plain sentence (the alert itself still goes out)."""
    try:
        text = kind_of(kind).describe(params, symbol, p, ref)
        if isinstance(text, str):
            return text
        log.error("describe of kind %r returned a %s, not a str", kind, type(text).__name__)
    except Exception:  # a per-firing boundary: log it, keep the alert
        log.exception("describe of kind %r failed; sending a plain message", kind)
    return f"{symbol} {kind} fired at {p:g}"
