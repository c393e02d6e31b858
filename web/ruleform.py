"""The rule form, pure: its fields for each kind (read from the kind's params model, so a
plug-in kind gets a form too), the form's values to and from a rule, and a rule's row in
the list. Validation is not here: a rule is checked by ``proto.rules.parse_rule`` and stored
by ``proto.store``, exactly as the ``stormalert rule add`` command does it."""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Union, get_args, get_origin

from pydantic.fields import FieldInfo

from proto.display import IST, format_ist
from proto.rulekinds import REGISTRY
from proto.rules import Rule, RuleError
from proto.store import StoreError

PARAM_PREFIX = "params."
FREQUENCIES = {
    "every": "every time it fires",
    "once": "once, then pause",
    "once_per_bar": "at most once per one-minute bar",
}
# What each built-in kind watches (the README's table); a plug-in kind shows its params
# model's own docstring. Exact semantics: docs/RULES.md.
KIND_HELP = {
    "cross_above": "the price crosses up through the level between two ticks",
    "cross_below": "the price crosses down through the level between two ticks",
    "change_pct": "the price is pct% away from the previous close",
    "trailing_pct": "the price falls pct% from its peak since armed (or rises from its trough)",
    "window_pct": "the price moves pct% against the low/high of the last window_s seconds",
    "above": "the price is at or above the level; again only after it fell back rearm_pct%",
    "below": "the price is at or below the level; again only after it rose back rearm_pct%",
    "channel": "the price enters or leaves [low, high]",
    "volume_spike": "the volume of the last window_s seconds is factor times the average "
                    "of the baseline windows before it",
    "sma_cross": "the fast simple moving average of 1-minute closes crosses the slow one",
    "ema_cross": "the fast exponential moving average of 1-minute closes crosses the slow one",
    "rsi": "Wilder's RSI of 1-minute closes crosses a threshold",
    "orb": "the price breaks the range of the session's first minutes (from 09:15 IST), "
           "once a day",
}
# What a <input type="datetime-local"> sends: a wall-clock time, taken as IST.
_LOCAL_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?$")

FormData = Mapping[str, str | list[str]]


@dataclass(frozen=True, slots=True)
class ParamField:
    """One input of a kind's params."""

    name: str  # the params key; the form field is ``params.<name>``
    widget: Literal["number", "select", "checkbox", "text"]
    required: bool
    default: str  # shown as the placeholder; "" when there is none
    step: str = "any"
    choices: tuple[str, ...] = ()

    @property
    def input_name(self) -> str:
        return PARAM_PREFIX + self.name


def _plain(annotation: Any) -> tuple[Any, bool]:
    """The annotation without ``None`` and whether ``None`` was allowed."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def param_field(name: str, info: FieldInfo) -> ParamField:
    annotation, optional = _plain(info.annotation)
    required = info.is_required()
    default = "" if required or info.default is None else str(info.default)
    if get_origin(annotation) is Literal:
        return ParamField(name, "select", required, default,
                          choices=tuple(str(c) for c in get_args(annotation)))
    if annotation is bool:
        return ParamField(name, "checkbox", False, default)
    if annotation is int:
        return ParamField(name, "number", required and not optional, default, step="1")
    if annotation is float:
        return ParamField(name, "number", required and not optional, default)
    return ParamField(name, "text", required and not optional, default)


def param_fields(kind: str) -> list[ParamField]:
    """The inputs of ``kind``'s params, in the model's order; none for an unknown kind."""
    model = REGISTRY.params_model(kind)
    if model is None:
        return []
    return [param_field(name, info) for name, info in model.model_fields.items()]


def kind_help(kind: str) -> str:
    if kind in KIND_HELP:
        return KIND_HELP[kind]
    model = REGISTRY.params_model(kind)
    doc = model.__dict__.get("__doc__") if model is not None else None
    return " ".join(doc.split()) if isinstance(doc, str) else ""


def kinds() -> list[dict[str, str]]:
    return [{"name": name, "help": kind_help(name)} for name in REGISTRY.names()]


def _one(form: FormData, name: str) -> str:
    value = form.get(name, "")
    if isinstance(value, list):
        value = value[-1] if value else ""
    return value.strip()


def _many(form: FormData, name: str) -> list[str]:
    value = form.get(name, [])
    values = value if isinstance(value, list) else [value]
    return [v.strip() for v in values if v.strip()]


def local_time_to_iso(value: str) -> str:
    """A ``datetime-local`` value (IST wall clock) as ISO-8601 with the IST offset; any
    other text is passed on as it is, for the rule's own check to judge."""
    return value + "+05:30" if _LOCAL_TIME_RE.match(value) else value


def rule_data(form: FormData) -> dict[str, Any]:
    """The rule the submitted form describes, as the dict ``parse_rule`` takes. Empty inputs
    are left out, so the rule's defaults apply and a missing required value is reported."""
    kind = _one(form, "kind")
    data: dict[str, Any] = {"symbol": _one(form, "symbol").upper(), "kind": kind}
    params: dict[str, Any] = {}
    for field in param_fields(kind):
        value = _one(form, field.input_name)
        if field.widget == "checkbox":
            params[field.name] = bool(value)
        elif value:
            params[field.name] = value
    data["params"] = params
    for name in ("frequency", "cooldown_s"):
        if value := _one(form, name):
            data[name] = value
    expires = _one(form, "expires_at")
    data["expires_at"] = local_time_to_iso(expires) if expires else None
    data["market_hours_only"] = bool(_one(form, "market_hours_only"))
    data["channels"] = _many(form, "channels")
    return data


def local_time(epoch_ms: int) -> str:
    """Epoch ms as a ``datetime-local`` value in IST."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC).astimezone(IST)
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "on" if value else ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def form_values(rule: Rule) -> dict[str, Any]:
    """A stored rule as the form's values (what ``rule_data`` reads back)."""
    values: dict[str, Any] = {
        "symbol": rule.symbol, "kind": rule.kind, "frequency": rule.frequency,
        "cooldown_s": _text(rule.cooldown_s) if rule.cooldown_s else "",
        "expires_at": local_time(rule.expires_at) if rule.expires_at is not None else "",
        "market_hours_only": "on" if rule.market_hours_only else "",
        "channels": list(rule.channels),
    }
    for name, value in rule.params.items():
        values[PARAM_PREFIX + name] = _text(value)
    return values


def submitted_values(form: FormData) -> dict[str, Any]:
    """What the user typed, to show the form again as it was sent."""
    values: dict[str, Any] = {name: _one(form, name) for name in form if name != "channels"}
    values["channels"] = _many(form, "channels")
    return values


def channel_tags(own: list[dict[str, str]], chosen: list[str]) -> list[str]:
    """The tags to offer: ``default``, the user's channels' tags and any the rule names."""
    return sorted({"default", *(c["tag"] for c in own), *chosen})


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def rule_row(rule: Rule, last: tuple[int, str] | None) -> dict[str, Any]:
    """One row of the rules list; ``last`` is (epoch ms, alert id) of its newest alert."""
    options = [FREQUENCIES.get(rule.frequency, rule.frequency)]
    if rule.cooldown_s:
        options.append(f"cooldown {_number(rule.cooldown_s)} s")
    if rule.market_hours_only:
        options.append("market hours only")
    if rule.expires_at is not None:
        options.append(f"expires {format_ist(rule.expires_at)}")
    return {
        "id": rule.id, "symbol": rule.symbol, "kind": rule.kind, "active": rule.active,
        "params": ", ".join(f"{k} {_number(v)}" for k, v in rule.params.items() if v is not None),
        "options": options, "channels": ", ".join(rule.channels),
        "last_fired": None if last is None else {"time": format_ist(last[0]), "id": last[1]},
    }


def errors_of(exc: RuleError | StoreError) -> dict[str, str]:
    """Field (``symbol``, ``params.pct``, ...) -> message; ``""`` for the rule as a whole."""
    if isinstance(exc, RuleError):
        return exc.fields or {"": str(exc)}
    return {exc.field or "": str(exc)}


def errors_detail(errors: dict[str, str]) -> str:
    """``field: message; ...`` in one line (the rule as a whole without a field)."""
    return "; ".join(f"{k}: {v}" if k else v for k, v in errors.items())
