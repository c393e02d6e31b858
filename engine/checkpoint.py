"""Rule state as JSON, so a restarted shard continues where it stopped.

Evaluators are ``__slots__`` classes whose slots hold numbers, None, lists and deques: the
snapshot is read off the slots generically, so every kind (plug-ins included) checkpoints
without code of its own. A state is tagged with its rule's fingerprint and restored only
into the same rule: an edited rule starts over, as the semantics say.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections import deque
from typing import Any

import orjson

from engine.bars import Bar, BarBuilder
from engine.book import Armed

log = logging.getLogger(__name__)

BARS_FIELD = "__bars__"
_MISSING = object()
PREV_CLOSE_FIELD = "__pc__"


class CheckpointError(ValueError):
    pass


def fingerprint(armed: Armed) -> str:
    """Which version of the rule a state belongs to; computed once per armed rule (dumping a
    rule's JSON costs more than the rest of its snapshot)."""
    if not armed.fingerprint:
        armed.fingerprint = hashlib.sha1(armed.rule.to_json().encode()).hexdigest()[:16]
    return armed.fingerprint


@functools.cache
def _slots(cls: type) -> tuple[str, ...]:
    return tuple(name for c in cls.__mro__ for name in getattr(c, "__slots__", ()))


def _plain(value: Any) -> Any:
    return list(value) if type(value) is deque else value


def snapshot(armed: Armed) -> bytes:
    ev = armed.evaluator
    missing = _MISSING
    try:
        state = {}
        for name in _slots(type(ev)):
            value = getattr(ev, name, missing)
            if value is not missing:
                state[name] = _plain(value)
        return orjson.dumps({"fp": fingerprint(armed), "last_fire_t": armed.last_fire_t,
                             "done": armed.done, "ev": state})
    except TypeError as exc:
        raise CheckpointError(f"rule {armed.rule.id}: state is not JSON: {exc}") from exc


def restore(armed: Armed, raw: bytes | str) -> bool:
    """Put a snapshot back into a freshly armed rule; False when it belongs to another
    version of the rule or cannot be read (the rule then starts over)."""
    try:
        state = orjson.loads(raw)
        if state.get("fp") != fingerprint(armed):
            return False
        ev = armed.evaluator
        for name, value in state["ev"].items():
            current = getattr(ev, name, None)
            setattr(ev, name, deque(value) if isinstance(current, deque) else value)
        armed.last_fire_t = state["last_fire_t"]
        armed.done = bool(state["done"])
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        log.warning("rule %s: checkpoint unreadable (%s); it starts over", armed.rule.id, exc)
        return False
    return True


def snapshot_bars(bars: BarBuilder) -> bytes:
    return orjson.dumps({"open": {sym: bar.as_list() for sym, bar in bars.open.items()},
                         "vol": bars.last_vol})


def restore_bars(bars: BarBuilder, raw: bytes | str) -> None:
    state = orjson.loads(raw)
    bars.open = {sym: Bar(int(b[0]), b[1], b[2], b[3], b[4], int(b[5]))
                 for sym, b in state["open"].items()}
    bars.last_vol = {sym: int(v) for sym, v in state["vol"].items()}
