"""The rule-kind interface, version 1: what a kind is, for the built-in kinds and for plug-ins.

A kind is a name, a params model (pydantic, ``extra="forbid"``, frozen), an evaluator factory,
a ``describe`` function and the API version it was written for. ``proto`` validates params
with the model when a rule is stored; the engine builds one evaluator per armed rule and
calls it on every tick of the rule's symbol. An evaluator is pure: no I/O, no clock reads.

Evaluator contract (the engine relies on it):

- ``step(p, t, pc, vol)`` takes one tick: price, exchange time in epoch ms, the previous
  close (None until the symbol has one) and the cumulative day volume (0 when the feed sends
  none). It updates the state every tick updates and returns the reference values (a flat
  ``dict[str, float]``) when the rule's condition holds, else None.
- ``fired(p, t)`` applies the state change of a firing; it is not called for a firing that
  the rule's cooldown suppressed, so a suppressed firing changes no state.
- Anything either raises disables that one rule; the shard lives on.
- The whole state lives in ``__slots__`` holding JSON values (64-bit numbers, strings, None,
  lists, deques without maxlen): the shard checkpoints a rule by reading those slots, so
  state kept elsewhere is lost when a shard restarts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

API_VERSION = 1
"""Bumped when the shape of RuleKind or the evaluator contract changes incompatibly."""

KIND_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")

Ref = dict[str, float]


class Evaluator(Protocol):
    def step(self, p: float, t: int, pc: float | None, vol: int) -> Ref | None: ...

    def fired(self, p: float, t: int) -> None: ...


class Params(BaseModel):
    """Base for params models: unknown fields are rejected and values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


P = TypeVar("P", bound=BaseModel)


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleKind(Generic[P]):
    """One rule kind. ``api_version`` has no default: a plug-in states what it was built for."""

    name: str
    params: type[P]
    evaluator: Callable[[P], Evaluator]
    describe: Callable[[P, str, float, Ref], str]
    api_version: int


class RuleKindError(ValueError):
    """A kind that cannot be used: wrong API version, bad shape, name taken, failed import."""


def check_kind(kind: Any, *, expected_name: str | None = None) -> RuleKind[Any]:
    """The kind itself if it honours this interface; RuleKindError with the reason otherwise."""
    if not isinstance(kind, RuleKind):
        raise RuleKindError(f"is a {type(kind).__name__}, not a proto.rulekinds.RuleKind")
    if kind.api_version != API_VERSION:
        raise RuleKindError(f"targets rule API version {kind.api_version!r}; "
                            f"this StormAlert speaks version {API_VERSION}")
    if not isinstance(kind.name, str) or not KIND_NAME_RE.match(kind.name):
        raise RuleKindError(f"name {kind.name!r} must be 1-40 of a-z, 0-9, '_', "
                            "starting with a letter")
    if expected_name is not None and kind.name != expected_name:
        raise RuleKindError(f"entry point {expected_name!r} names a kind called {kind.name!r}")
    params = kind.params
    if not (isinstance(params, type) and issubclass(params, BaseModel)):
        raise RuleKindError("params must be a pydantic model class")
    config = params.model_config
    if config.get("extra") != "forbid" or not config.get("frozen"):
        raise RuleKindError("params model must set extra='forbid' and frozen=True "
                            "(subclass proto.rulekinds.Params)")
    if not callable(kind.evaluator) or not callable(kind.describe):
        raise RuleKindError("evaluator and describe must be callables")
    return kind
