"""The simulator's market: a seeded random walk per instrument, kept in Kite wire integers.

``Market.step(now_s)`` advances the instruments that trade in one scheduling interval and
returns their indices. The four named symbols trade at least once a second whatever the rate;
the rest of the budget (``rate`` ticks per second) is spread uniformly over the universe.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence

from ingest.sim.kite_wire import U32_MAX, Level, Quote
from ingest.sim.universe import NAMED, Instrument

STEP_S = 0.02  # short steps: trades arrive spread out, not in bursts a latency figure would see
NAMED_EVERY_STEPS = round(0.5 / STEP_S)  # named symbols trade every 0.5 s: at least once a second
_VOLATILITY = 0.0008  # per-trade standard deviation of the relative price move


class Market:
    def __init__(self, instruments: Sequence[Instrument], rate: float, seed: int,
                 now_s: int) -> None:
        self.instruments = list(instruments)
        self.rate = max(rate, 0.0)
        self._rng = random.Random(seed)
        self._named = [i for i, inst in enumerate(self.instruments) if inst.symbol in NAMED]
        self._budget = 0.0
        self._steps = 0
        self._stale_books: set[int] = set()
        # Per-instrument volatility, scaled by the intraday multiplier the server sets.
        self.volatility = [base_volatility(inst) for inst in self.instruments]
        self.vol_scale = 1.0
        self.closed: frozenset[int] = frozenset()  # instruments whose market is shut now
        self.quotes = [self._opening(inst, now_s) for inst in self.instruments]

    def _opening(self, inst: Instrument, now_s: int) -> Quote:
        close = _clamp(round(inst.price * inst.divisor))
        open_ = _clamp(round(close * self._rng.uniform(0.99, 1.01)))
        q = Quote(token=inst.token, ltp=open_, close=close, open=open_, high=open_, low=open_,
                  avg_price=open_, last_trade_time=now_s, exchange_ts=now_s)
        self._book(q, inst)
        return q

    def step(self, now_s: int) -> list[int]:
        """Trade one interval's worth of instruments; their indices, in trade order."""
        self._steps += 1
        chosen = list(self._named) if self._steps % NAMED_EVERY_STEPS == 1 else []
        self._budget += self.rate * STEP_S - len(chosen)
        extra = int(self._budget) if self._budget >= 1 else 0
        self._budget -= extra
        self._budget = max(self._budget, -self.rate)  # the named floor does not starve later
        if extra:
            chosen += self._rng.choices(range(len(self.instruments)), k=extra)
        if self.closed:
            chosen = [i for i in chosen if i not in self.closed]
        for index in chosen:
            self._trade(index, now_s)
        return chosen

    def _trade(self, index: int, now_s: int) -> None:
        inst, q, rng = self.instruments[index], self.quotes[index], self._rng
        tick = max(round(inst.tick_size * inst.divisor), 1)
        move = round(q.ltp * rng.gauss(0.0, self.volatility[index] * self.vol_scale)
                     / tick) * tick
        q.ltp = _clamp(max(q.ltp + move, tick))
        q.high, q.low = max(q.high, q.ltp), min(q.low, q.ltp)
        q.exchange_ts = now_s
        if inst.is_index:
            return
        draw = rng.random  # ~10x cheaper than randint(); this loop sets --rate's ceiling
        qty = 1 + int(draw() * 500)
        volume = min(q.volume + qty, U32_MAX)
        if volume > 0:
            q.avg_price = _clamp((q.avg_price * q.volume + q.ltp * qty) // volume)
        q.volume, q.last_qty, q.last_trade_time = volume, qty, now_s
        q.buy_qty = 1_000 + int(draw() * 499_000)
        q.sell_qty = 1_000 + int(draw() * 499_000)
        if inst.instrument_type == "FUT":
            q.oi = _clamp(max(q.oi + rng.randint(-50, 60), 0))
            q.oi_day_high = max(q.oi_day_high, q.oi)
            q.oi_day_low = q.oi if q.oi_day_low == 0 else min(q.oi_day_low, q.oi)
        self._stale_books.add(index)

    def set_trade(self, index: int, price: float, volume: int | None, close: float | None,
                  now_s: int) -> None:
        """A trade from outside the random walk (a replayed tick), prices in rupees."""
        inst, q = self.instruments[index], self.quotes[index]
        q.ltp = _clamp(round(price * inst.divisor))
        if close is not None:
            q.close = _clamp(round(close * inst.divisor))
        q.high, q.low = max(q.high, q.ltp), min(q.low, q.ltp)
        q.exchange_ts = now_s
        if inst.is_index:
            return
        if volume is not None:
            q.last_qty = max(volume - q.volume, 0)
            q.volume = _clamp(volume)
        q.last_trade_time = now_s
        self._stale_books.add(index)

    def ensure_book(self, index: int) -> None:
        """Refresh an instrument's depth before a full packet shows it. Lazy, because depth
        costs twice a trade and most trades are superseded within the step or sent in
        ltp/quote mode."""
        if index in self._stale_books:
            self._stale_books.discard(index)
            self._book(self.quotes[index], self.instruments[index])

    def _book(self, q: Quote, inst: Instrument) -> None:
        if inst.is_index:
            return
        tick = max(round(inst.tick_size * inst.divisor), 1)
        draw, ltp = self._rng.random, q.ltp
        q.bids = [Level(1 + int(draw() * 2000), max(ltp - tick * (n + 1), 0),
                        1 + int(draw() * 30)) for n in range(5)]
        q.asks = [Level(1 + int(draw() * 2000), min(ltp + tick * n, U32_MAX),
                        1 + int(draw() * 30)) for n in range(5)]


def base_volatility(inst: Instrument) -> float:
    """A stable per-instrument volatility: indices calmer than stocks, currencies calmest,
    each stock somewhere in 0.6x-1.6x of the base (from its token, so seeds keep their walk)."""
    if inst.is_index:
        return _VOLATILITY * 0.5
    if inst.exchange in ("CDS", "BCD"):
        return _VOLATILITY * 0.3
    return _VOLATILITY * (0.6 + (zlib.crc32(inst.token.to_bytes(8, "big")) % 1000) / 1000)


def _clamp(value: int) -> int:
    return min(max(int(value), 0), U32_MAX)
