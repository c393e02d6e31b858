"""Helpers for the semantics tables: run one rule over ticks and list the indices that fire."""

from __future__ import annotations

from engine.book import Book
from proto.rules import parse_rule

S = "NSE:INFY"

# A tick: (t_ms, price), (t_ms, price, pc) or (t_ms, price, pc, cumulative volume).
Tick = tuple


def fire_indices(rule_json: dict, tick_list: list[Tick]) -> list[int]:
    book = Book()
    book.put(parse_rule({"symbol": S, **rule_json}))
    fired = []
    for i, tick in enumerate(tick_list):
        t, p = tick[0], tick[1]
        pc = tick[2] if len(tick) > 2 else None
        vol = tick[3] if len(tick) > 3 else 0
        if book.on_tick(S, p, t, pc, vol):
            fired.append(i)
    return fired


def firings(rule_json: dict, tick_list: list[Tick]) -> list:
    book = Book()
    book.put(parse_rule({"id": "r", "symbol": S, **rule_json}))
    out = []
    for tick in tick_list:
        t, p = tick[0], tick[1]
        vol = tick[3] if len(tick) > 3 else 0
        out.extend(book.on_tick(S, p, t, tick[2] if len(tick) > 2 else None, vol))
    return out


def ticks(*prices: float, step_ms: int = 1000) -> list[Tick]:
    return [(i * step_ms, p) for i, p in enumerate(prices)]
