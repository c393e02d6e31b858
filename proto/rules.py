"""The Rule type: what a user stores, validated when it is stored, never on the first tick.

Semantics of each kind are written in ARCHITECTURE.md ("Rules: kinds and exact semantics")
and docs/RULES.md; the engine implements them, this module only says what a valid rule looks
like. Which kinds exist, plug-ins included, is the business of ``proto.rulekinds``.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from proto.rulekinds import REGISTRY

SYMBOL_RE = re.compile(r"^[A-Z][A-Z0-9_]*:[^\s:][^:]*$")
RULE_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class RuleError(ValueError):
    """A rule that cannot be stored; the message names the field and the reason, and
    ``fields`` maps each bad field (``symbol``, ``params.pct``, ...) to its reason."""

    def __init__(self, message: str, fields: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.fields: dict[str, str] = dict(fields or {})


class _ParamsByKind(Mapping[str, type[BaseModel]]):
    """Kind name -> params model, built-in and plug-in alike (a live view of the registry)."""

    def __getitem__(self, kind: str) -> type[BaseModel]:
        model = REGISTRY.params_model(kind)
        if model is None:
            raise KeyError(kind)
        return model

    def __iter__(self) -> Iterator[str]:
        return iter(REGISTRY.names())

    def __len__(self) -> int:
        return len(REGISTRY.names())


PARAMS_BY_KIND: Mapping[str, type[BaseModel]] = _ParamsByKind()


class Rule(BaseModel):
    """A stored alert rule. ``params`` is validated against the kind's own model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=lambda: "r" + secrets.token_hex(4))
    user: str = ""
    symbol: str
    kind: str
    params: dict[str, Any] = Field(default_factory=dict)
    frequency: Literal["once", "every", "once_per_bar"] = "every"
    cooldown_s: float = 0.0
    market_hours_only: bool = False
    expires_at: int | None = None  # epoch ms; ISO-8601 accepted on input
    channels: list[str] = Field(default_factory=lambda: ["default"])
    active: bool = True

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not RULE_ID_RE.match(v):
            raise ValueError("id must be 1-64 letters, digits, '_', '.' or '-'")
        return v

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, v: str) -> str:
        if not SYMBOL_RE.match(v):
            raise ValueError("symbol must look like EXCHANGE:TRADINGSYMBOL, e.g. NSE:INFY")
        return v

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if REGISTRY.params_model(v) is None:
            raise ValueError(f"unknown kind {v!r}; known: {', '.join(REGISTRY.names())}")
        return v

    @field_validator("cooldown_s")
    @classmethod
    def _cooldown(cls, v: float) -> float:
        if not math.isfinite(v) or v < 0:
            raise ValueError("cooldown_s must be a finite number >= 0")
        return v

    @field_validator("channels")
    @classmethod
    def _channels(cls, v: list[str]) -> list[str]:
        if not v or any(not c or "," in c for c in v):
            raise ValueError("channels must be a non-empty list of tag names without commas")
        return v

    @field_validator("expires_at", mode="before")
    @classmethod
    def _expires(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                when = datetime.fromisoformat(v)
            except ValueError as exc:
                raise ValueError("expires_at must be epoch ms or ISO-8601 with an offset") from exc
            if when.tzinfo is None:
                raise ValueError("expires_at must carry a UTC offset, e.g. +05:30")
            return int(when.timestamp() * 1000)
        return v

    @model_validator(mode="after")
    def _params(self) -> Rule:
        model = PARAMS_BY_KIND[self.kind]
        try:
            normalised = model.model_validate(self.params).model_dump(mode="json")
        except ValidationError as exc:
            raise ValueError(describe_validation_error(exc, prefix="params")) from None
        object.__setattr__(self, "params", normalised)
        return self

    def typed_params(self) -> Any:
        return PARAMS_BY_KIND[self.kind].model_validate(self.params)

    def to_json(self) -> str:
        return self.model_dump_json()


def parse_rule(data: str | bytes | dict[str, Any], **overrides: Any) -> Rule:
    """A validated Rule from JSON text or a dict; RuleError names every bad field."""
    if isinstance(data, str | bytes):
        try:
            data = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise RuleError(f"rule is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise RuleError("rule must be a JSON object")
    data = {**data, **overrides}
    try:
        return Rule.model_validate(data)
    except ValidationError as exc:
        raise RuleError(describe_validation_error(exc), field_errors(exc, data)) from None


def field_errors(exc: ValidationError, data: Mapping[str, Any]) -> dict[str, str]:
    """Each bad field of the rule ``data`` and why, by dotted path (``params.window_s``), for
    forms that show an error beside its field. The params are checked against their kind's
    model even when other fields failed (the rule's own check of them runs only when every
    other field is valid), so every problem shows at once; a problem of the params as a whole
    (two params that do not fit together) is under ``params``."""
    errors: dict[str, list[str]] = {}
    for err in exc.errors():
        if err["loc"]:  # loc () is the params check, redone field by field below
            _note(errors, ("", *err["loc"]), err["msg"])
    model = REGISTRY.params_model(data["kind"]) if isinstance(data.get("kind"), str) else None
    params = data.get("params", {})
    if model is not None and isinstance(params, dict):
        try:
            model.model_validate(params)
        except ValidationError as params_exc:
            for err in params_exc.errors():
                _note(errors, ("params", *err["loc"]), err["msg"])
    if not errors:  # no field to blame: the message as a whole
        errors[""] = [describe_validation_error(exc)]
    return {where: "; ".join(msgs) for where, msgs in errors.items()}


def _note(errors: dict[str, list[str]], loc: tuple[Any, ...], msg: str) -> None:
    where = ".".join(str(p) for p in loc if p != "")
    errors.setdefault(where, []).append(msg.removeprefix("Value error, "))


def describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line: 'field: reason; field: reason', each field under ``prefix`` when given."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)
