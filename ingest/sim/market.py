"""The simulator's market: a seeded random walk per instrument, kept in Kite wire integers.

``Market.step(now_s)`` advances the instruments that trade in one scheduling interval and
returns their indices. The four named symbols trade at least once a second whatever the rate;
the rest of the budget (``rate`` ticks per second) is spread uniformly over the universe.
"""

from __future__ import annotations

import logging
import random
import zlib
from collections.abc import Sequence
from itertools import compress, filterfalse, repeat
from operator import add, floordiv, itemgetter, mul, not_, truediv
from typing import TypeVar

from ingest.sim.kite_wire import U32_MAX, Level, Quote
from ingest.sim.universe import NAMED, Instrument

STEP_S = 0.02  # short steps: trades arrive spread out, not in bursts a latency figure would see
NAMED_EVERY_STEPS = round(0.5 / STEP_S)  # named symbols trade every 0.5 s: at least once a second
_VOLATILITY = 0.0008  # per-trade standard deviation of the relative price move
_POOL = 1 << 16  # precomputed random draws per kind, read from a random start each step
_T = TypeVar("_T")

log = logging.getLogger("stormalert.sim")


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
        self._tick = [max(round(inst.tick_size * inst.divisor), 1) for inst in self.instruments]
        self._is_index = [inst.is_index for inst in self.instruments]
        self._is_future = [inst.instrument_type == "FUT" for inst in self.instruments]
        self._order = list(range(len(self.instruments)))
        self._rng.shuffle(self._order)
        self._cursor = 0
        draw = self._rng
        self._gauss = [draw.gauss(0.0, 1.0) for _ in range(_POOL)]
        self._qty = [1 + int(draw.random() * 500) for _ in range(_POOL)]
        self._book_qty = [1_000 + int(draw.random() * 499_000) for _ in range(_POOL)]
        self._oi_move = [draw.randint(-50, 60) for _ in range(_POOL)]
        if self.rate * STEP_S > len(self.instruments):
            log.warning("--rate %.0f is more than %d instruments can show at one update per "
                        "%.0f ms step: capped at %.0f ticks/s", self.rate,
                        len(self.instruments), STEP_S * 1000, len(self.instruments) / STEP_S)
        self.quotes = [self._opening(inst, now_s) for inst in self.instruments]

    def _opening(self, inst: Instrument, now_s: int) -> Quote:
        close = _clamp(round(inst.price * inst.divisor))
        open_ = _clamp(round(close * self._rng.uniform(0.99, 1.01)))
        q = Quote(token=inst.token, ltp=open_, close=close, open=open_, high=open_, low=open_,
                  avg_price=open_, last_trade_time=now_s, exchange_ts=now_s)
        self._book(q, inst)
        return q

    def step(self, now_s: int) -> list[int]:
        """Trade one interval's worth of instruments; their indices, in trade order, each
        at most once (a client sees one update per instrument per step: that is a tick)."""
        self._steps += 1
        n = len(self.instruments)
        chosen = list(self._named) if self._steps % NAMED_EVERY_STEPS == 1 else []
        self._budget += self.rate * STEP_S - len(chosen)
        extra = min(int(self._budget), n) if self._budget >= 1 else 0
        self._budget -= extra
        # the named floor does not starve later; a rate above symbols / STEP_S is capped
        self._budget = min(max(self._budget, -self.rate), float(n))
        if extra:
            chosen = list(dict.fromkeys(chosen + self._pick(extra)))
        if self.closed:
            chosen = list(filterfalse(self.closed.__contains__, chosen))
        if chosen:
            self._trade_many(chosen, now_s)
        return chosen

    def _pick(self, k: int) -> list[int]:
        """The next ``k`` instruments of a shuffled order, reshuffled after each pass: every
        instrument trades equally often, distinct within a step, without a draw per trade."""
        order, at = self._order, self._cursor
        picked = order[at:at + k]
        if len(picked) < k:
            self._rng.shuffle(order)
            at = k - len(picked)
            picked += order[:at]
        else:
            at += k
        self._cursor = at
        return picked

    def _trade(self, index: int, now_s: int) -> None:
        self._trade_many([index], now_s)

    def _trade_many(self, chosen: list[int], now_s: int) -> None:
        """One trade for each chosen instrument, computed column by column: ``map`` over
        the instruments' fields with operator functions and precomputed random draws runs
        in C, where a Python statement per trade set --rate's ceiling (~12 µs a trade)."""
        index_flags = itemgetter(*chosen)(self._is_index) if len(chosen) > 1 else (
            self._is_index[chosen[0]],)
        if any(index_flags):
            for index in compress(chosen, index_flags):
                self._trade_index(index, now_s)
            chosen = list(compress(chosen, map(not_, index_flags)))
            if not chosen:
                return
        k = len(chosen)
        get = itemgetter(*chosen) if k > 1 else lambda seq: (seq[chosen[0]],)
        qs = get(self.quotes)
        # Attribute reads and writes stay in Python loops: the interpreter's specialised slot
        # access beats operator.attrgetter/setattr (generic lookups) several times over.
        ltp = [q.ltp for q in qs]
        volume = [q.volume for q in qs]
        ticks = get(self._tick)
        scale = map(mul, get(self.volatility), repeat(self.vol_scale))
        moves = map(round, map(truediv, map(mul, ltp, map(mul, self._draw(self._gauss, k),
                                                           scale)), ticks))
        new_ltp = list(map(min, map(max, map(add, ltp, map(mul, moves, ticks)), ticks),
                           repeat(U32_MAX)))
        qty = self._draw(self._qty, k)
        new_volume = list(map(min, map(add, volume, qty), repeat(U32_MAX)))
        new_avg = map(min, map(floordiv, map(add, map(mul, [q.avg_price for q in qs], volume),
                                             map(mul, new_ltp, qty)), new_volume),
                      repeat(U32_MAX))
        for q, p, v, a, n, b, s in zip(qs, new_ltp, new_volume, new_avg, qty,
                                       self._draw(self._book_qty, k),
                                       self._draw(self._book_qty, k), strict=False):
            q.ltp, q.volume, q.avg_price, q.last_qty, q.buy_qty, q.sell_qty = p, v, a, n, b, s
            if p > q.high:
                q.high = p
            elif p < q.low:
                q.low = p
            q.last_trade_time = q.exchange_ts = now_s
        futures = list(compress(qs, get(self._is_future)))
        if futures:
            self._move_oi(futures)
        self._stale_books.update(chosen)

    def _move_oi(self, futures: list[Quote]) -> None:
        for q, move in zip(futures, self._draw(self._oi_move, len(futures)), strict=False):
            oi = q.oi = min(max(q.oi + move, 0), U32_MAX)
            if oi > q.oi_day_high:
                q.oi_day_high = oi
            if oi < q.oi_day_low or q.oi_day_low == 0:
                q.oi_day_low = oi

    def _trade_index(self, index: int, now_s: int) -> None:
        q, tick = self.quotes[index], self._tick[index]
        move = round(q.ltp * self._rng.gauss(0.0, self.volatility[index] * self.vol_scale)
                     / tick) * tick
        q.ltp = _clamp(max(q.ltp + move, tick))
        q.high, q.low = max(q.high, q.ltp), min(q.low, q.ltp)
        q.exchange_ts = now_s

    def _draw(self, pool: list[_T], k: int) -> list[_T]:
        """``k`` consecutive values of a precomputed random pool from a random start."""
        at = self._rng.randrange(len(pool))
        out = pool[at:at + k]
        while len(out) < k:
            out += pool[:k - len(out)]
        return out

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
