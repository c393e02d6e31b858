"""The documented rule semantics (ARCHITECTURE.md), pinned case by case.

Each case: a rule, a list of (t_ms, price[, pc]) ticks, and the indices of the ticks that fire.
"""

import pytest

from engine.book import Book
from proto.rules import parse_rule

S = "NSE:INFY"


def fire_indices(rule_json: dict, ticks: list[tuple]) -> list[int]:
    book = Book()
    book.put(parse_rule({"symbol": S, **rule_json}))
    fired = []
    for i, tick in enumerate(ticks):
        t, p = tick[0], tick[1]
        pc = tick[2] if len(tick) > 2 else None
        if book.on_tick(S, p, t, pc):
            fired.append(i)
    return fired


def ticks(*prices: float, step_ms: int = 1000) -> list[tuple]:
    return [(i * step_ms, p) for i, p in enumerate(prices)]


CASES = [
    # cross_above: p[i-1] < level <= p[i], never at i = 0
    ("cross_above basic", {"kind": "cross_above", "params": {"level": 100}},
     ticks(99, 100, 101, 99, 100.5), [1, 4]),
    ("cross_above not at i=0", {"kind": "cross_above", "params": {"level": 100}},
     ticks(101, 102), []),
    ("cross_above needs strictly below before", {"kind": "cross_above", "params": {"level": 100}},
     ticks(100, 101, 100, 100), []),
    ("cross_above touching level fires", {"kind": "cross_above", "params": {"level": 100}},
     ticks(99.99, 100), [1]),
    # cross_below: p[i-1] > level >= p[i]
    ("cross_below basic", {"kind": "cross_below", "params": {"level": 100}},
     ticks(101, 100, 99, 101, 99), [1, 4]),
    ("cross_below from level does not fire", {"kind": "cross_below", "params": {"level": 100}},
     ticks(100, 99), []),
    # change_pct versus previous close
    ("change_pct up", {"kind": "change_pct", "params": {"pct": 2, "direction": "up"}},
     [(0, 101, 100), (1000, 102, 100), (2000, 101.9, 100), (3000, 97, 100)], [1]),
    ("change_pct down", {"kind": "change_pct", "params": {"pct": 2, "direction": "down"}},
     [(0, 99, 100), (1000, 98, 100), (2000, 103, 100)], [1]),
    ("change_pct either", {"kind": "change_pct", "params": {"pct": 2, "direction": "either"}},
     [(0, 99, 100), (1000, 98, 100), (2000, 103, 100)], [1, 2]),
    ("change_pct without pc never fires", {"kind": "change_pct", "params": {"pct": 1}},
     ticks(50, 500), []),
    ("change_pct remembers last pc",
     {"kind": "change_pct", "params": {"pct": 1, "direction": "up"}},
     [(0, 100, 100), (1000, 102), (2000, 100.5)], [1]),
    ("change_pct float exactly as written",
     {"kind": "change_pct", "params": {"pct": 10, "direction": "up"}},
     [(0, 110.00000000000001, 100), (1000, 110, 100)], [0]),  # 100*(1+0.1) == 110.00000000000001
    # trailing_pct down: peak from p[0], fires at p <= peak*(1-pct/100), peak = p on firing
    ("trailing down", {"kind": "trailing_pct", "params": {"pct": 10}},
     ticks(100, 120, 109, 108, 100, 97.3, 97.1), [3, 6]),
    ("trailing down from p0", {"kind": "trailing_pct", "params": {"pct": 10}},
     ticks(100, 90), [1]),
    ("trailing up", {"kind": "trailing_pct", "params": {"pct": 10, "direction": "up"}},
     ticks(100, 80, 87, 88, 96, 97), [3, 5]),
    # window_pct
    ("window up within window", {"kind": "window_pct",
                                 "params": {"pct": 5, "window_s": 10, "direction": "up"}},
     ticks(100, 102, 104, 105), [3]),
    ("window up: low fell out of window",
     {"kind": "window_pct", "params": {"pct": 5, "window_s": 2, "direction": "up"}},
     ticks(100, 102, 103, 105), []),
    ("window boundary is inclusive",
     {"kind": "window_pct", "params": {"pct": 5, "window_s": 3, "direction": "up"}},
     ticks(100, 102, 103, 105), [3]),
    ("window resets at firing (r = i)",
     {"kind": "window_pct", "params": {"pct": 5, "window_s": 100, "direction": "up"}},
     ticks(100, 105, 106, 110, 110.26), [1, 4]),
    ("window down",
     {"kind": "window_pct", "params": {"pct": 5, "window_s": 10, "direction": "down"}},
     ticks(100, 98, 95, 94), [2]),
    ("window either",
     {"kind": "window_pct", "params": {"pct": 5, "window_s": 10, "direction": "either"}},
     ticks(100, 95, 100, 99.75), [1, 2]),
    # frequency once
    ("once", {"kind": "cross_above", "params": {"level": 100}, "frequency": "once"},
     ticks(99, 101, 99, 101), [1]),
    # cooldown: firings with t < t_k + cooldown suppressed
    ("cooldown", {"kind": "cross_above", "params": {"level": 100}, "cooldown_s": 3},
     ticks(99, 101, 99, 101, 99, 101), [1, 5]),
    ("cooldown boundary fires at exactly t_k + cooldown",
     {"kind": "cross_above", "params": {"level": 100}, "cooldown_s": 2},
     ticks(99, 101, 99, 101), [1, 3]),
    ("suppressed firing does not reset the peak",
     {"kind": "trailing_pct", "params": {"pct": 10}, "cooldown_s": 5},
     ticks(100, 90, 100, 89, 80.9, 80.1, 70), [1, 6]),
    ("suppressed firing does not reset the window",
     {"kind": "window_pct", "params": {"pct": 5, "window_s": 100, "direction": "up"},
      "cooldown_s": 2.5},
     ticks(100, 105, 110.3, 111, 110.5), [1, 4]),
    # expiry: compared with the tick's exchange time
    ("expires", {"kind": "cross_above", "params": {"level": 100}, "expires_at": 2500},
     ticks(99, 101, 99, 101), [1]),
]


@pytest.mark.parametrize(("name", "rule", "tick_list", "expected"), CASES,
                         ids=[c[0] for c in CASES])
def test_semantics(name, rule, tick_list, expected):
    assert fire_indices(rule, tick_list) == expected


def test_trailing_reference_values_are_reported():
    book = Book()
    book.put(parse_rule({"id": "t", "symbol": S, "kind": "trailing_pct", "params": {"pct": 10}}))
    for i, p in enumerate([100, 120, 108]):
        firings = book.on_tick(S, p, i * 1000, None)
    assert firings[0].ref == {"peak": 120}
    assert "peak 120" in firings[0].msg


def test_rules_of_other_symbols_cost_nothing_and_do_not_fire():
    book = Book()
    book.put(parse_rule({"symbol": S, "kind": "cross_above", "params": {"level": 1}}))
    assert book.on_tick("NSE:TCS", 5, 0, None) == []
    assert book.on_tick("NSE:TCS", 0.5, 1, None) == []
    assert "NSE:TCS" not in book.by_symbol


def test_changed_rule_starts_over_and_removed_rule_stops():
    book = Book()
    rule = parse_rule({"id": "x", "symbol": S, "kind": "cross_above", "params": {"level": 100}})
    book.put(rule)
    book.on_tick(S, 99, 0, None)
    book.put(rule.model_copy(update={"params": {"level": 100.0}}))
    assert book.on_tick(S, 101, 1, None) == []  # i = 0 again after the change
    book.remove("x")
    assert book.on_tick(S, 99, 2, None) == [] and book.on_tick(S, 101, 3, None) == []
    assert len(book) == 0


def test_once_rule_leaves_the_book_after_firing():
    book = Book()
    book.put(parse_rule({"id": "o", "symbol": S, "kind": "cross_above", "params": {"level": 100},
                         "frequency": "once"}))
    book.on_tick(S, 99, 0, None)
    assert [f.rule.id for f in book.on_tick(S, 101, 1, None)] == ["o"]
    assert len(book) == 0


def test_a_rule_that_raises_is_disabled_and_others_live_on():
    book = Book()
    for rule_id in ("bad", "ok"):
        book.put(parse_rule({"id": rule_id, "symbol": S, "kind": "cross_above",
                             "params": {"level": 100}}))

    class Broken:
        def step(self, *_args):
            raise ZeroDivisionError("boom")

    book.by_id["bad"].evaluator = Broken()
    book.on_tick(S, 99, 0, None)
    assert [f.rule.id for f in book.on_tick(S, 101, 1, None)] == ["ok"]
    assert "bad" not in book.by_id and book.errors == 1


# Options every kind shares (README "Rules"): once per one-minute bar, and market hours only.
IST_0915 = 1_700_106_300_000  # Thursday 2023-11-16 09:15:00 IST


def test_once_per_bar_suppresses_the_rest_of_the_minute_without_state_change():
    rule = {"kind": "trailing_pct", "params": {"pct": 10}, "frequency": "once_per_bar"}
    m = IST_0915
    ticks = [(m, 100), (m + 1_000, 90), (m + 2_000, 100), (m + 3_000, 89),
             (m + 60_000, 80.9), (m + 61_000, 80.1)]
    # 90 fires (peak 100 -> 90); 89 is in the same minute: suppressed, so the peak stays at 100
    # (a firing would have reset it to 89); 80.9 is a new minute: fires, as 80.9 <= 100*0.9.
    assert fire_indices(rule, ticks) == [1, 4]


@pytest.mark.parametrize(("t", "seen"), [
    (IST_0915 - 60_000, False),          # 09:14 IST: before the open
    (IST_0915, True),                    # 09:15: open
    (IST_0915 + 375 * 60_000 - 1, True),  # 15:29:59.999
    (IST_0915 + 375 * 60_000, False),    # 15:30: closed
    (IST_0915 + 2 * 86_400_000, False),  # Saturday
])
def test_market_hours_only_rules_do_not_see_ticks_outside_the_session(t, seen):
    rule = {"kind": "cross_above", "params": {"level": 100}, "market_hours_only": True}
    inside = IST_0915 + 60_000  # 09:16
    # The cross needs both ticks seen: one at 09:16, the other at t (in time order).
    ticks = [(inside, 99), (t, 101)] if t > inside else [(t, 99), (inside, 101)]
    assert (fire_indices(rule, ticks) == [1]) == seen


def test_holidays_close_the_session():
    from datetime import date

    from engine.session import Session

    session = Session(frozenset({date(2023, 11, 16)}))
    assert not session.is_open(IST_0915 + 60_000)
    assert Session().is_open(IST_0915 + 60_000)
