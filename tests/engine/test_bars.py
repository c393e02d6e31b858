from hypothesis import given
from hypothesis import strategies as st

from engine.bars import MINUTE_MS, Bar, BarBuilder

S = "NSE:INFY"


def test_a_bar_closes_when_a_later_minute_ticks():
    b = BarBuilder()
    assert b.on_tick(S, 100, 5_000, 1000) is None
    assert b.on_tick(S, 103, 20_000, 1010) is None
    assert b.on_tick(S, 99, 59_999, 1030) is None
    closed = b.on_tick(S, 101, 60_000, 1031)
    assert closed == Bar(0, 100, 103, 99, 99, 30)
    assert b.open[S] == Bar(60_000, 101, 101, 101, 101, 1)


def test_a_gap_of_minutes_closes_one_bar_and_a_volume_reset_is_a_new_day():
    b = BarBuilder()
    b.on_tick(S, 100, 0, 500)
    closed = b.on_tick(S, 100, 10 * MINUTE_MS + 1, 10)  # next day: cumulative volume fell
    assert closed == Bar(0, 100, 100, 100, 100, 0) and b.open[S].v == 0


@given(st.lists(st.tuples(st.integers(0, 400_000), st.floats(1, 1e5), st.integers(0, 50)),
                min_size=1, max_size=200))
def test_bars_match_a_naive_grouping(steps):
    ticks, t, vol = [], 0, 0
    for dt, p, dv in steps:
        t, vol = t + dt, vol + dv
        ticks.append((t, p, vol))
    b = BarBuilder()
    closed = [bar for t, p, v in ticks if (bar := b.on_tick(S, p, t, v)) is not None]
    bars = [*closed, b.open[S]]
    minutes = sorted({t - t % MINUTE_MS for t, _p, _v in ticks})
    assert [bar.start for bar in bars] == minutes
    for bar in bars:
        inside = [(p, i) for i, (t, p, _v) in enumerate(ticks)
                  if bar.start <= t < bar.start + MINUTE_MS]
        prices = [p for p, _i in inside]
        first = inside[0][1]
        assert (bar.o, bar.h, bar.l, bar.c) == (prices[0], max(prices), min(prices), prices[-1])
        previous_vol = ticks[first - 1][2] if first else ticks[0][2]
        assert bar.v == ticks[inside[-1][1]][2] - previous_vol
