"""Which tokens each ticker connection subscribes, in which mode, and the messages that say so.

Modes come from configuration: ``kite_modes`` maps a symbol (``NSE:INFY``) or an exchange
(``NFO``) to ``ltp``, ``quote`` or ``full``; a symbol wins over its exchange, and anything
unmatched gets ``kite_mode``. On every (re)connect a connection sends, per mode group,
``subscribe`` then ``mode`` for the same tokens, as the official client's ``resubscribe`` does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import orjson

Mode = Literal["ltp", "quote", "full"]
Subscriptions = dict[int, str]  # token -> mode


def mode_for(symbol: str, modes: Mapping[str, str], default: str) -> str:
    return modes.get(symbol) or modes.get(symbol.split(":", 1)[0]) or default


def rebalance(current: Sequence[Mapping[int, str]], wanted: Mapping[int, str],
              per_connection: int, max_connections: int) -> tuple[list[Subscriptions], int]:
    """The subscriptions of each connection after the wanted set changed, and how many wanted
    tokens fit nowhere. Tokens stay on the connection they are on (their mode follows
    ``wanted``), tokens no longer wanted leave, and new ones fill free room in order, first on
    the existing connections, then on new ones up to ``max_connections``."""
    slots: list[Subscriptions] = [
        {tok: wanted[tok] for tok in subs if tok in wanted} for subs in current]
    placed = {tok for slot in slots for tok in slot}
    new = [tok for tok in wanted if tok not in placed]
    index, left = 0, 0
    for tok in new:
        while index < len(slots) and len(slots[index]) >= per_connection:
            index += 1
        if index == len(slots):
            if len(slots) >= max_connections:
                left += 1
                continue
            slots.append({})
        slots[index][tok] = wanted[tok]
    return slots, left


def by_mode(subs: Mapping[int, str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for tok, mode in subs.items():
        groups.setdefault(mode, []).append(tok)
    return groups


def subscribe_messages(subs: Mapping[int, str]) -> list[str]:
    """Per mode group: subscribe, then the mode for the same tokens."""
    out = []
    for mode, tokens in by_mode(subs).items():
        out.append(orjson.dumps({"a": "subscribe", "v": tokens}).decode())
        out.append(orjson.dumps({"a": "mode", "v": [mode, tokens]}).decode())
    return out


def unsubscribe_message(tokens: Iterable[int]) -> str:
    return orjson.dumps({"a": "unsubscribe", "v": list(tokens)}).decode()


def change_messages(old: Mapping[int, str], new: Mapping[int, str]) -> list[str]:
    """What a live connection sends to go from ``old`` to ``new``."""
    removed = [tok for tok in old if tok not in new]
    changed = {tok: mode for tok, mode in new.items() if old.get(tok) != mode}
    return ([unsubscribe_message(removed)] if removed else []) + subscribe_messages(changed)
