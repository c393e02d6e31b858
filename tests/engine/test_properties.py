"""Hypothesis: the O(1) evaluators agree with naive readings of the written definitions."""

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.book import Book
from proto.rules import parse_rule

S = "NSE:X"

prices = st.floats(min_value=1, max_value=1000, allow_nan=False).map(lambda x: round(x, 2))
tick_lists = st.lists(st.tuples(st.integers(0, 3000), prices), min_size=1, max_size=80).map(
    lambda steps: [(sum(d for d, _ in steps[: i + 1]), p) for i, (_, p) in enumerate(steps)])


def engine_fires(rule: dict, ticks: list) -> list[int]:
    book = Book()
    book.put(parse_rule({"symbol": S, **rule}))
    return [i for i, (t, p) in enumerate(ticks) if book.on_tick(S, p, t, None)]


def naive_window(pct, window_s, direction, cooldown_s, ticks) -> list[int]:
    r, last, fired = 0, None, []
    for i, (t, p) in enumerate(ticks):
        window = [q for j, (tj, q) in enumerate(ticks[: i + 1])
                  if tj >= t - window_s * 1000 and j >= r]
        up = direction in ("up", "either") and p >= min(window) * (1 + pct / 100)
        down = direction in ("down", "either") and p <= max(window) * (1 - pct / 100)
        if (up or down) and (last is None or t >= last + cooldown_s * 1000):
            fired.append(i)
            r, last = i, t
    return fired


def naive_trailing_down(pct, cooldown_s, ticks) -> list[int]:
    peak, last, fired = None, None, []
    for i, (t, p) in enumerate(ticks):
        peak = p if peak is None else max(peak, p)
        if p <= peak * (1 - pct / 100) and (last is None or t >= last + cooldown_s * 1000):
            fired.append(i)
            peak, last = p, t
    return fired


@settings(max_examples=300, deadline=None)
@given(tick_lists, st.floats(0.1, 20), st.floats(0.5, 10),
       st.sampled_from(["up", "down", "either"]), st.sampled_from([0, 1, 2.5]))
def test_window_pct_matches_the_definition(ticks, pct, window_s, direction, cooldown_s):
    rule = {"kind": "window_pct", "cooldown_s": cooldown_s,
            "params": {"pct": pct, "window_s": window_s, "direction": direction}}
    assert engine_fires(rule, ticks) == naive_window(pct, window_s, direction, cooldown_s, ticks)


@settings(max_examples=300, deadline=None)
@given(tick_lists, st.floats(0.1, 50), st.sampled_from([0, 1, 2.5]))
def test_trailing_pct_matches_the_definition(ticks, pct, cooldown_s):
    rule = {"kind": "trailing_pct", "cooldown_s": cooldown_s, "params": {"pct": pct}}
    assert engine_fires(rule, ticks) == naive_trailing_down(pct, cooldown_s, ticks)
