"""The simulator's market (numpy state): rate, fairness, determinism, invariants, replay
trades, the Upstox-side quote view."""

from __future__ import annotations

import numpy as np
import pytest

from ingest.sim import kite_wire as wire
from ingest.sim import universe
from ingest.sim.market import NAMED_EVERY_STEPS, STEP_S, Market

NOW_S = 1_732_000_000


def market(symbols: int = 900, rate: float = 20_000, seed: int = 3) -> Market:
    return Market(universe.build(symbols, seed), rate, seed, NOW_S)


def test_each_step_trades_the_rate_in_distinct_instruments_and_all_equally() -> None:
    m = market(900, 20_000)  # 400 a step: the shuffled order wraps every few steps
    counts = np.zeros(900, int)
    steps = 900
    for s in range(steps):
        chosen = m.step(NOW_S + s)
        assert len(np.unique(chosen)) == len(chosen)
        counts[chosen] += 1
    assert abs(counts.sum() - 20_000 * STEP_S * steps) <= 4 * steps / NAMED_EVERY_STEPS + 1
    named = [i for i, inst in enumerate(m.instruments) if inst.symbol in universe.NAMED]
    others = np.delete(counts, named)
    assert others.max() - others.min() <= 1
    assert counts[named].min() >= steps // NAMED_EVERY_STEPS


def test_named_symbols_trade_every_half_second_even_at_a_tiny_rate() -> None:
    m = market(300, 1)
    named = {i for i, inst in enumerate(m.instruments) if inst.symbol in universe.NAMED}
    seen = [set(m.step(NOW_S).tolist()) for _ in range(2 * NAMED_EVERY_STEPS)]
    assert named <= seen[0] and named <= seen[NAMED_EVERY_STEPS]


def test_the_same_seed_walks_the_same_way() -> None:
    a, b, c = market(seed=9), market(seed=9), market(seed=10)
    for s in range(50):
        assert np.array_equal(a.step(NOW_S + s), b.step(NOW_S + s))
        c.step(NOW_S + s)
    assert np.array_equal(a.state, b.state)
    assert not np.array_equal(a.state[:, wire.LTP], c.state[:, wire.LTP])


def test_trades_keep_the_quote_consistent() -> None:
    m = market(600, 30_000)
    before = m.state.copy()
    for s in range(100):
        m.step(NOW_S + s)
    st = m.state
    assert (st[:, wire.LOW] <= st[:, wire.LTP]).all()
    assert (st[:, wire.LTP] <= st[:, wire.HIGH]).all()
    assert (st[:, wire.LTP] >= m.tick).all() and (st[:, wire.LTP] <= wire.U32_MAX).all()
    assert (st[:, wire.VOLUME] >= before[:, wire.VOLUME]).all()
    assert (st[:, wire.TOKEN] == before[:, wire.TOKEN]).all()
    stocks, indices = ~m.is_index, m.is_index
    assert (st[stocks, wire.VOLUME] > 0).all() and (st[indices, wire.VOLUME] == 0).all()
    traded = stocks & (st[:, wire.VOLUME] > 0)
    assert ((st[traded, wire.AVG_PRICE] >= st[traded, wire.LOW])
            & (st[traded, wire.AVG_PRICE] <= st[traded, wire.HIGH])).all()
    futures = np.array([i.instrument_type == "FUT" for i in m.instruments])
    assert st[futures, wire.OI].any() and not st[~futures, wire.OI].any()
    assert (st[futures, wire.OI_DAY_LOW] <= st[futures, wire.OI]).all()
    assert (st[futures, wire.OI] <= st[futures, wire.OI_DAY_HIGH]).all()
    assert (st[stocks, wire.LAST_TRADE_TIME] == NOW_S + 99).all()


def test_closed_instruments_do_not_trade() -> None:
    m = market(300, 10_000)
    m.closed = frozenset(range(0, 300, 2))
    for s in range(30):
        assert not (m.step(NOW_S + s) % 2 == 0).any()
    m.closed = frozenset()
    assert (m.step(NOW_S) % 2 == 0).any()


def test_replayed_trades_set_the_row_and_stale_the_book() -> None:
    m = market(300, 0)
    infy = next(i for i, inst in enumerate(m.instruments) if inst.symbol == "NSE:INFY")
    nifty = next(i for i, inst in enumerate(m.instruments) if inst.symbol == "NSE:NIFTY 50")
    old_bids = m.quotes[infy].bids
    m.set_trade(infy, 1570.55, 12_345, 1560.0, NOW_S + 5)
    q = m.quotes[infy]
    assert (q.ltp, q.close, q.volume, q.last_qty) == (157_055, 156_000, 12_345, 12_345)
    assert q.high >= 157_055 >= q.low and q.last_trade_time == q.exchange_ts == NOW_S + 5
    assert q.bids == old_bids  # the book is redrawn only when shown
    m.ensure_book(infy)
    q = m.quotes[infy]
    tick = int(m.tick[infy])
    assert [b.price for b in q.bids] == [157_055 - tick * (n + 1) for n in range(5)]
    assert [a.price for a in q.asks] == [157_055 + tick * n for n in range(5)]
    m.set_trade(nifty, 24_000.5, None, None, NOW_S + 6)
    q = m.quotes[nifty]
    assert (q.ltp, q.volume, q.bids, q.asks) == (2_400_050, 0, [], [])


def test_quote_view_is_a_sequence_of_copies() -> None:
    m = market(50, 0)
    assert len(m.quotes) == 50 and m.quotes[-1].token == m.instruments[-1].token
    assert [q.token for q in m.quotes] == [i.token for i in m.instruments]
    assert [q.token for q in m.quotes[2:4]] == [m.instruments[2].token, m.instruments[3].token]
    with pytest.raises(IndexError):
        m.quotes[50]
    q = m.quotes[5]
    q.ltp = 1
    assert m.quotes[5].ltp != 1
