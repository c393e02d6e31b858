"""Hypothesis: the rule book's grouped evaluation (engine.kinds.runs: one loop per kind, the
level index of above/below, expiry and market hours hoisted per symbol) fires exactly what
the per-rule definition fires: ``Armed.on_tick`` called for every rule of the symbol in the
order the rules were put, as the book did before it grouped rules. Same firings (rule, ref,
message) in the same order at every tick, same state in every evaluator's slots, same rules
left, and ``Armed.dirty`` set whenever a rule's checkpointed state changed."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

import engine.book
from engine.book import Armed, Book, Firing
from engine.kinds import describe
from engine.kinds.runs import can_fire, quiet_from
from proto.rules import Rule, parse_rule

SYMBOLS = ("NSE:A", "NSE:B")
IST_0914 = 1_700_106_240_000  # Thursday 2023-11-16 09:14:00 IST: the session opens in a minute


class ReferenceBook:
    """The per-rule loop, as written before the book grouped rules by kind."""

    def __init__(self, book: Book) -> None:
        self.session = book.session
        self.by_symbol: dict[str, list[Armed]] = {}
        self.by_id: dict[str, Armed] = {}
        self.prev_close: dict[str, float] = {}
        self.errors = 0

    def put(self, rule: Rule) -> None:
        self.remove(rule.id)
        if rule.active:
            armed = self.by_id[rule.id] = Armed(rule)
            self.by_symbol.setdefault(rule.symbol, []).append(armed)

    def remove(self, rule_id: str) -> None:
        armed = self.by_id.pop(rule_id, None)
        if armed is not None:
            rules = self.by_symbol[armed.rule.symbol]
            rules.remove(armed)
            if not rules:
                del self.by_symbol[armed.rule.symbol]

    def on_tick(self, sym: str, p: float, t: int, pc: float | None, vol: int) -> list[Firing]:
        if pc:
            self.prev_close[sym] = pc
        rules = self.by_symbol.get(sym)
        if not rules:
            return []
        pc = self.prev_close.get(sym)
        firings: list[Firing] = []
        for armed in rules:
            if armed.market_hours and not self.session.is_open(t):
                continue
            try:
                ref = armed.on_tick(p, t, pc, vol)
                if ref is not None and armed.params is None:
                    armed.params = armed.rule.typed_params()
            except Exception:
                self.errors += 1
                armed.done = True
                ref = None
            if ref is not None:
                rule = armed.rule
                firings.append(Firing(rule, ref, describe(rule.kind, armed.params, sym, p, ref)))
        for armed in [a for a in rules if a.done]:
            self.remove(armed.rule.id)
        return firings


LEVELS = st.sampled_from([99.0, 100.0, 100.5, 101.0, 102.5])
DIRECTION = st.sampled_from(["up", "down", "either"])
KINDS: dict[str, Any] = {
    "cross_above": st.fixed_dictionaries({"level": LEVELS}),
    "cross_below": st.fixed_dictionaries({"level": LEVELS}),
    "above": st.fixed_dictionaries({"level": LEVELS, "rearm_pct": st.sampled_from([0, 0.5, 1])}),
    "below": st.fixed_dictionaries({"level": LEVELS, "rearm_pct": st.sampled_from([0, 0.5, 1])}),
    "channel": st.fixed_dictionaries({"low": st.just(99.5), "high": st.just(101.0),
                                      "on": st.sampled_from(["enter", "exit", "both"])}),
    "change_pct": st.fixed_dictionaries({"pct": st.sampled_from([0.5, 1, 2]),
                                         "direction": DIRECTION}),
    "trailing_pct": st.fixed_dictionaries({"pct": st.sampled_from([0.5, 1, 2]),
                                           "direction": st.sampled_from(["up", "down"])}),
    "window_pct": st.fixed_dictionaries({"pct": st.sampled_from([0.5, 1]),
                                         "window_s": st.sampled_from([1, 5, 60]),
                                         "direction": DIRECTION}),
    "volume_spike": st.fixed_dictionaries({"window_s": st.just(1), "factor": st.just(1.5),
                                           "baseline_windows": st.just(2)}),
    "sma_cross": st.fixed_dictionaries({"fast": st.just(2), "slow": st.just(3)}),
    "ema_cross": st.fixed_dictionaries({"fast": st.just(2), "slow": st.just(3)}),
    "rsi": st.fixed_dictionaries({"period": st.just(2), "above": st.just(60.0),
                                  "below": st.just(40.0)}),
    "orb": st.fixed_dictionaries({"minutes": st.sampled_from([1, 3])}),
}


@st.composite
def rule_jsons(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(KINDS)))
    return {"id": f"r{draw(st.integers(0, 11))}", "symbol": draw(st.sampled_from(SYMBOLS)),
            "kind": kind, "params": draw(KINDS[kind]),
            "frequency": draw(st.sampled_from(["every", "every", "once", "once_per_bar"])),
            "cooldown_s": draw(st.sampled_from([0, 0, 1, 30])),
            "market_hours_only": draw(st.booleans()),
            "expires_at": draw(st.one_of(st.none(), st.none(), st.none(),
                                         st.integers(IST_0914, IST_0914 + 400_000)))}


TICK = st.tuples(st.sampled_from(SYMBOLS), st.integers(-3, 3),
                 st.sampled_from([0, 1, 500, 1000, 3000, 20_000, 61_000]),
                 st.sampled_from([None, None, 99.0, 101.0]), st.integers(0, 50))


@st.composite
def ops(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """Some rules, then mostly ticks, with rules put, changed and removed in between."""
    n_rules = draw(st.integers(1, 12))
    out: list[tuple[Any, ...]] = [("put", draw(rule_jsons())) for _ in range(n_rules)]
    for _ in range(draw(st.integers(5, 150))):
        what = draw(st.sampled_from(["tick"] * 12 + ["put", "remove", "checkpoint"]))
        if what == "tick":
            out.append(("tick", *draw(TICK)))
        elif what == "put":
            out.append(("put", draw(rule_jsons())))
        elif what == "remove":
            out.append(("remove", draw(st.integers(0, 11))))
        else:
            out.append(("checkpoint",))
    return out


def state(armed: Armed) -> dict[str, Any]:
    """What the checkpoint keeps of a rule: its evaluator's slots and two Armed fields."""
    ev = armed.evaluator
    slots = {name: getattr(ev, name) for c in type(ev).__mro__
             for name in getattr(c, "__slots__", ()) if hasattr(ev, name)}
    return {"ev": {k: list(v) if isinstance(v, deque) else v for k, v in slots.items()},
            "last_fire_t": armed.last_fire_t, "done": armed.done}


def check_dirty(book: Book, saved: dict[str, dict[str, Any]]) -> None:
    """A checkpoint: a rule not marked dirty must hold the state saved at the last one."""
    for rule_id, armed in book.by_id.items():
        if not armed.dirty and rule_id in saved:
            assert state(armed) == saved[rule_id], rule_id
        saved[rule_id] = state(armed)
        armed.dirty = False


def run_both(ops: list[tuple[Any, ...]], min_run: int = 1) -> None:
    """Both books through the same operations. ``min_run`` 1 gives every kind its own loop
    (and the level index) however few rules it has on a symbol; the default pools kinds with
    few rules into one plain run."""
    default, engine.book.MIN_RUN = engine.book.MIN_RUN, min_run
    try:
        _run_both(ops)
    finally:
        engine.book.MIN_RUN = default


def _run_both(ops: list[tuple[Any, ...]]) -> None:
    book = Book()
    ref = ReferenceBook(book)
    price = dict.fromkeys(SYMBOLS, 100.0)
    vol = dict.fromkeys(SYMBOLS, 0)
    t = IST_0914
    saved: dict[str, dict[str, Any]] = {}
    fired = 0
    for op in ops:
        if op[0] == "put":
            rule = parse_rule(op[1])
            book.put(rule)
            ref.put(rule)
            saved.pop(rule.id, None)  # a new rule: the shard drops its old state (removed)
        elif op[0] == "remove":
            saved.pop(f"r{op[1]}", None)
            book.remove(f"r{op[1]}")
            ref.remove(f"r{op[1]}")
        elif op[0] == "checkpoint":
            check_dirty(book, saved)
        else:
            _, sym, move, dt, pc, traded = op
            price[sym] = round(price[sym] + move * 0.25, 2)
            vol[sym] += traded
            t += dt
            got = book.on_tick(sym, price[sym], t, pc, vol[sym])
            want = ref.on_tick(sym, price[sym], t, pc, vol[sym])
            assert [(f.rule.id, f.ref, f.msg) for f in got] == \
                [(f.rule.id, f.ref, f.msg) for f in want]
            assert book.by_id.keys() == ref.by_id.keys()
            assert book.errors == ref.errors
            fired += len(got)
    for rule_id, armed in book.by_id.items():
        assert state(armed) == state(ref.by_id[rule_id]), rule_id
    assert [a.rule.id for rules in book.by_symbol.values() for a in rules] == \
        [a.rule.id for rules in ref.by_symbol.values() for a in rules]
    check_dirty(book, saved)
    event(f"firings: {min(fired, 10)}{'+' if fired >= 10 else ''}")


@pytest.mark.parametrize("min_run", [1, 4])
@settings(max_examples=400, deadline=None)
@given(ops=ops())
def test_grouped_evaluation_fires_as_the_per_rule_loop(min_run: int,
                                                       ops: list[tuple[Any, ...]]) -> None:
    run_both(ops, min_run)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["above", "below"]), LEVELS,
                          st.sampled_from([0, 0.5, 1]), st.sampled_from([0, 1, 30])),
                min_size=1, max_size=30),
       st.lists(st.tuples(st.integers(-4, 4), st.integers(0, 3000)), max_size=150))
def test_level_index_with_many_rules_on_one_symbol(levels, moves) -> None:
    """Many above/below rules on one symbol, so that the sorted lists hold ties and long
    prefixes; every tick is compared with the per-rule loop."""
    ops: list[tuple[Any, ...]] = [
        ("put", {"id": f"r{i}", "symbol": SYMBOLS[0], "kind": kind, "cooldown_s": cooldown_s,
                 "params": {"level": level, "rearm_pct": rearm_pct}})
        for i, (kind, level, rearm_pct, cooldown_s) in enumerate(levels)]
    ops += [("tick", SYMBOLS[0], move, dt, None, 0) for move, dt in moves]
    run_both(ops)


PCTS = st.sampled_from([0.25, 0.5, 0.5, 1, 2, 1e-300])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.tuples(st.just("change_pct"), st.fixed_dictionaries({"pct": PCTS, "direction": DIRECTION})),
    st.tuples(st.just("trailing_pct"), st.fixed_dictionaries(
        {"pct": PCTS, "direction": st.sampled_from(["up", "down"])})),
    st.tuples(st.just("window_pct"), st.fixed_dictionaries(
        {"pct": PCTS, "window_s": st.sampled_from([1, 5]), "direction": DIRECTION}))),
    min_size=1, max_size=30),
    st.lists(st.sampled_from([0, 1, 30]), min_size=30, max_size=30),
    st.lists(st.one_of(
        st.tuples(st.just("tick"), st.integers(-4, 4), st.sampled_from([0, 300, 1000, 2500]),
                  st.sampled_from([None, None, 99.0, 100.0, 101.0, -5.0])),
        st.tuples(st.just("put"), st.integers(0, 29)),
        st.tuples(st.just("remove"), st.integers(0, 29))), max_size=150))
@example(rules=[("change_pct", {"pct": 1e-300, "direction": "either"})] * 4,
         cooldowns=[0] * 30, steps=[("tick", 0, 0, 100.0), ("tick", 1, 0, None)])
def test_threshold_index_with_many_rules_on_one_symbol(rules, cooldowns, steps) -> None:
    """Many change_pct, trailing_pct and window_pct rules on one symbol, so that their runs'
    sorted thresholds hold ties, long prefixes, rules watching both ways (a tiny pct makes
    both thresholds the previous close) and extremes met at different times; every tick is
    compared with the per-rule loop."""
    def rule(n: int) -> dict[str, Any]:
        kind, params = rules[n % len(rules)]
        return {"id": f"r{n}", "symbol": SYMBOLS[0], "kind": kind, "params": params,
                "cooldown_s": cooldowns[n]}

    ops: list[tuple[Any, ...]] = [("put", rule(n)) for n in range(len(rules))]
    for step in steps:
        if step[0] == "tick":
            ops.append(("tick", SYMBOLS[0], step[1], step[2], step[3], 0))
        elif step[0] == "put":
            ops.append(("put", rule(step[1])))
        else:
            ops.append(("remove", step[1]))
    run_both(ops)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.none(), st.integers(0, 10**13)), st.integers(-10**6, 10**6),
       st.sampled_from([0, 0.001, 0.5, 1, 2.5, 59.999, 60, 61, 3600]), st.booleans())
def test_quiet_from_agrees_with_can_fire(last, dt, cooldown_s, per_bar) -> None:
    """The one number the runs test stands for the book's cooldown and once-per-bar test."""
    armed = Armed(parse_rule({"id": "q", "symbol": SYMBOLS[0], "kind": "cross_above",
                              "params": {"level": 100}, "cooldown_s": cooldown_s,
                              "frequency": "once_per_bar" if per_bar else "every"}))
    armed.last_fire_t = last
    for t in {(last or 0) + dt, (last or 0) + dt // 1000 * 1000, (last or 0) // 60_000 * 60_000,
              (last or 0) // 60_000 * 60_000 + 60_000, (last or 0) + int(cooldown_s * 1000)}:
        assert can_fire(armed, t) == (t >= quiet_from(armed)), t


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.tuples(st.just("put"), st.integers(0, 11), st.sampled_from([1, 2, 5]),
              st.sampled_from([0.2, 0.5]), DIRECTION, st.sampled_from([0, 1, 3, 30])),
    st.tuples(st.just("remove"), st.integers(0, 11)),
    *[st.tuples(st.just("tick"), st.integers(-3, 3), st.sampled_from([0, 300, 1000, 2500]))] * 6),
    min_size=1, max_size=200))
def test_window_rules_sharing_deques_fire_as_alone(steps) -> None:
    """Many window_pct rules on one symbol, armed at different times, share their deques
    whenever their windows hold the same ticks (checked every 3 ticks here); each fires
    exactly as it would alone, and a firing rule leaves the shared deques to the others."""
    from engine.kinds.classic_runs import WindowPctRun

    ops: list[tuple[Any, ...]] = []
    for step in steps:
        if step[0] == "put":
            _, n, window_s, pct, direction, cooldown_s = step
            ops.append(("put", {"id": f"r{n}", "symbol": SYMBOLS[0], "kind": "window_pct",
                                "cooldown_s": cooldown_s, "params": {
                                    "pct": pct, "window_s": window_s, "direction": direction}}))
        elif step[0] == "remove":
            ops.append(step)
        else:
            ops.append(("tick", SYMBOLS[0], step[1], step[2], None, 0))
    every = WindowPctRun.SHARE_EVERY
    WindowPctRun.SHARE_EVERY = 3
    try:
        run_both(ops)
    finally:
        WindowPctRun.SHARE_EVERY = every


def test_state_restored_into_a_running_book_counts_after_invalidate() -> None:
    """The runs are built from rule state when a symbol ticks; a restore after that (not what
    the shard does: it restores before its first tick) is seen once the book rebuilds them."""
    book = Book()
    for n in range(4):  # enough for the level index, whatever MIN_RUN is
        book.put(parse_rule({"id": f"a{n}", "symbol": SYMBOLS[0], "kind": "above",
                             "params": {"level": 100 + n}}))
    assert len(book.on_tick(SYMBOLS[0], 110, 0, None)) == 4  # all fire, none ready now
    assert book.on_tick(SYMBOLS[0], 111, 1, None) == []
    book.by_id["a0"].evaluator.ready = True  # as checkpoint.restore would set it
    book.invalidate()
    assert [f.rule.id for f in book.on_tick(SYMBOLS[0], 112, 2, None)] == ["a0"]
