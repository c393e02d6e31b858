"""The simulator's market: a seeded random walk per instrument, kept in Kite wire integers.

The state is one numpy int64 row per instrument, columns in Kite full-packet order
(``kite_wire.TOKEN`` … ``EXCHANGE_TS``), so a step is a handful of vector operations and the
Kite frame builder encodes packets straight from it. ``Market.quotes[i]`` reads one row as a
``Quote`` (with its five-level book) for the Upstox side and tests: a copy, not a handle.

``Market.step(now_s)`` advances the instruments that trade in one scheduling interval and
returns their indices. The four named symbols trade at least once a second whatever the rate;
the rest of the budget (``rate`` ticks per second) is spread uniformly over the universe.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from typing import overload

import numpy as np
import numpy.typing as npt

from ingest.sim.kite_wire import (
    AVG_PRICE,
    BUY_QTY,
    CLOSE,
    COLUMNS,
    DEPTH_ORDERS_MAX,
    DEPTH_QTY_MAX,
    EXCHANGE_TS,
    HIGH,
    LAST_QTY,
    LAST_TRADE_TIME,
    LOW,
    LTP,
    OI,
    OI_DAY_HIGH,
    OI_DAY_LOW,
    OPEN,
    SELL_QTY,
    TOKEN,
    U32_MAX,
    VOLUME,
    IntArray,
    Level,
    Quote,
)
from ingest.sim.universe import NAMED, Instrument

STEP_S = 0.02  # short steps: trades arrive spread out, not in bursts a latency figure would see
NAMED_EVERY_STEPS = round(0.5 / STEP_S)  # named symbols trade every 0.5 s: at least once a second
_VOLATILITY = 0.0008  # per-trade standard deviation of the relative price move
_LEVELS = 5
_BOOK_QTY, _BOOK_ORDERS, _BOOK_LTP = slice(0, 10), slice(10, 20), 20

Indices = npt.NDArray[np.intp]

log = logging.getLogger("stormalert.sim")


class Market:
    def __init__(self, instruments: Sequence[Instrument], rate: float, seed: int,
                 now_s: int) -> None:
        self.instruments = list(instruments)
        n = len(self.instruments)
        self.rate = max(rate, 0.0)
        self._rng = np.random.default_rng(seed)
        self._named = np.array([i for i, inst in enumerate(self.instruments)
                                if inst.symbol in NAMED], np.intp)
        self._budget = 0.0
        self._steps = 0
        # Per-instrument volatility, scaled by the intraday multiplier the server sets.
        self.volatility = np.array([base_volatility(inst) for inst in self.instruments])
        self.vol_scale = 1.0
        self._closed: frozenset[int] = frozenset()
        self._closed_mask = np.zeros(n, bool)
        self.tick = np.array([tick_of(inst) for inst in self.instruments], np.int64)
        self.is_index = np.array([inst.is_index for inst in self.instruments], bool)
        self._is_future = np.array([inst.instrument_type == "FUT" for inst in self.instruments],
                                   bool)
        self._order = self._rng.permutation(n)
        self._cursor = 0
        if self.rate * STEP_S > n:
            log.warning("--rate %.0f is more than %d instruments can show at one update per "
                        "%.0f ms step: capped at %.0f ticks/s", self.rate, n, STEP_S * 1000,
                        n / STEP_S)
        self.state: IntArray = self._opening(now_s)
        # The book the Upstox side shows, a row per instrument: quantities and orders of the
        # ten levels (bids, then asks), then the last price it was drawn around. Redrawn
        # lazily (``ensure_book``): most trades never show it.
        self._book = np.zeros((n, _BOOK_LTP + 1), np.int64)
        self._stale_books = ~self.is_index
        # plain lists for the one-instrument reads of ``quote`` (numpy scalars are slower)
        self._index_flags: list[bool] = self.is_index.tolist()
        self._ticks: list[int] = self.tick.tolist()
        self._refresh_books(np.flatnonzero(self._stale_books))
        self.quotes = QuoteView(self)

    def _opening(self, now_s: int) -> IntArray:
        state = np.zeros((len(self.instruments), COLUMNS), np.int64)
        close = np.array([_clamp(round(inst.price * inst.divisor))
                          for inst in self.instruments], np.int64)
        opening = np.clip(np.rint(close * self._rng.uniform(0.99, 1.01, len(close))),
                          0, U32_MAX).astype(np.int64)
        state[:, TOKEN] = [inst.token for inst in self.instruments]
        state[:, CLOSE] = close
        for column in (LTP, OPEN, HIGH, LOW, AVG_PRICE):
            state[:, column] = opening
        state[:, LAST_TRADE_TIME] = state[:, EXCHANGE_TS] = now_s
        return state

    @property
    def closed(self) -> frozenset[int]:
        """Instruments whose market is shut now: they do not trade."""
        return self._closed

    @closed.setter
    def closed(self, indices: frozenset[int]) -> None:
        self._closed = frozenset(indices)
        self._closed_mask[:] = False
        self._closed_mask[list(self._closed)] = True

    def step(self, now_s: int) -> Indices:
        """Trade one interval's worth of instruments; their indices, ascending, each at most
        once (a client sees one update per instrument per step: that is a tick)."""
        self._steps += 1
        n = len(self.instruments)
        named = self._named if self._steps % NAMED_EVERY_STEPS == 1 else self._named[:0]
        self._budget += self.rate * STEP_S - len(named)
        extra = min(int(self._budget), n) if self._budget >= 1 else 0
        self._budget -= extra
        # the named floor does not starve later; a rate above symbols / STEP_S is capped
        self._budget = min(max(self._budget, -self.rate), float(n))
        chosen = np.zeros(n, bool)
        chosen[named] = True
        if extra:
            chosen[self._pick(extra)] = True
        chosen &= ~self._closed_mask
        indices = np.flatnonzero(chosen)
        if len(indices):
            self._trade(indices, now_s)
        return indices

    def _pick(self, k: int) -> Indices:
        """The next ``k`` instruments of a shuffled order, reshuffled after each pass: every
        instrument trades equally often without a draw per trade."""
        at = self._cursor
        picked = self._order[at:at + k].copy()
        if len(picked) < k:
            # The new pass puts the old pass's tail last, so the step's picks stay distinct
            # (a collision would silently cut the rate: 3% at 200k ticks/s over 9000 symbols).
            order = self._rng.permutation(len(self._order))
            recent = np.zeros(len(order), bool)
            recent[picked] = True
            late = recent[order]
            self._order = np.concatenate([order[~late], order[late]])
            at = k - len(picked)
            picked = np.concatenate([picked, self._order[:at]])
        else:
            at += k
        self._cursor = at
        return picked

    def _trade(self, indices: Indices, now_s: int) -> None:
        """One trade for each instrument: indices move their value only, the rest trade."""
        index_rows = self.is_index[indices]
        if index_rows.any():
            idx = indices[index_rows]
            rows = self.state[idx]
            rows[:, LTP] = self._walk(idx, rows[:, LTP])
            rows[:, HIGH] = np.maximum(rows[:, HIGH], rows[:, LTP])
            rows[:, LOW] = np.minimum(rows[:, LOW], rows[:, LTP])
            rows[:, EXCHANGE_TS] = now_s
            self.state[idx] = rows
            indices = indices[~index_rows]
        if len(indices):
            self._trade_stocks(indices, now_s)

    def _trade_stocks(self, idx: Indices, now_s: int) -> None:
        k, draw = len(idx), self._rng.integers
        rows = self.state[idx]
        ltp = self._walk(idx, rows[:, LTP])
        qty = draw(1, 501, k)
        volume = rows[:, VOLUME]
        new_volume = np.minimum(volume + qty, U32_MAX)
        # < 2^63: the average and the volume are each below 2^31
        rows[:, AVG_PRICE] = np.minimum((rows[:, AVG_PRICE] * volume + ltp * qty) // new_volume,
                                        U32_MAX)
        rows[:, LTP], rows[:, VOLUME], rows[:, LAST_QTY] = ltp, new_volume, qty
        rows[:, BUY_QTY] = draw(1_000, 500_000, k)
        rows[:, SELL_QTY] = draw(1_000, 500_000, k)
        rows[:, HIGH] = np.maximum(rows[:, HIGH], ltp)
        rows[:, LOW] = np.minimum(rows[:, LOW], ltp)
        rows[:, LAST_TRADE_TIME] = rows[:, EXCHANGE_TS] = now_s
        futures = self._is_future[idx]
        if futures.any():
            oi = np.clip(rows[futures, OI] + draw(-50, 61, int(futures.sum())), 0, U32_MAX)
            rows[futures, OI] = oi
            rows[futures, OI_DAY_HIGH] = np.maximum(rows[futures, OI_DAY_HIGH], oi)
            low = rows[futures, OI_DAY_LOW]
            rows[futures, OI_DAY_LOW] = np.where((low == 0) | (oi < low), oi, low)
        self.state[idx] = rows
        self._stale_books[idx] = True

    def _walk(self, idx: Indices, ltp: IntArray) -> IntArray:
        """The next prices: a relative Gaussian move, whole ticks, at least one tick."""
        tick = self.tick[idx]
        sigma = self.volatility[idx] * self.vol_scale
        moves = np.rint(ltp * self._rng.standard_normal(len(idx)) * sigma / tick)
        return np.clip(ltp + moves.astype(np.int64) * tick, tick, U32_MAX)

    def set_trade(self, index: int, price: float, volume: int | None, close: float | None,
                  now_s: int) -> None:
        """A trade from outside the random walk (a replayed tick), prices in rupees."""
        inst, row = self.instruments[index], self.state[index]
        ltp = row[LTP] = _clamp(round(price * inst.divisor))
        if close is not None:
            row[CLOSE] = _clamp(round(close * inst.divisor))
        row[HIGH], row[LOW] = max(row[HIGH], ltp), min(row[LOW], ltp)
        row[EXCHANGE_TS] = now_s
        if inst.is_index:
            return
        if volume is not None:
            row[LAST_QTY] = max(volume - int(row[VOLUME]), 0)
            row[VOLUME] = _clamp(volume)
        row[LAST_TRADE_TIME] = now_s
        self._stale_books[index] = True

    def ensure_book(self, index: int) -> None:
        """Refresh an instrument's depth before a full packet shows it. Lazy, because most
        trades are superseded within the step or sent without depth."""
        if self._stale_books[index]:
            self._refresh_books(np.array([index], np.intp))

    def _refresh_books(self, idx: Indices) -> None:
        shape = (len(idx), 2 * _LEVELS)
        self._book[idx, _BOOK_QTY] = self._rng.integers(1, DEPTH_QTY_MAX + 1, shape)
        self._book[idx, _BOOK_ORDERS] = self._rng.integers(1, DEPTH_ORDERS_MAX + 1, shape)
        self._book[idx, _BOOK_LTP] = self.state[idx, LTP]
        self._stale_books[idx] = False

    def quote(self, index: int) -> Quote:
        """One instrument as a ``Quote`` (a copy): its row and, for a stock, its book."""
        (token, ltp, last_qty, avg_price, volume, buy_qty, sell_qty, open_, high, low, close,
         last_trade_time, oi, oi_day_high, oi_day_low, exchange_ts) = self.state[index].tolist()
        bids: list[Level] = []
        asks: list[Level] = []
        if not self._index_flags[index]:
            book, tick = self._book[index].tolist(), self._ticks[index]
            at = book[_BOOK_LTP]
            bids = [Level(book[n], max(at - tick * (n + 1), 0), book[2 * _LEVELS + n])
                    for n in range(_LEVELS)]
            asks = [Level(book[_LEVELS + n], min(at + tick * n, U32_MAX),
                          book[3 * _LEVELS + n]) for n in range(_LEVELS)]
        return Quote(token, ltp, close, open_, high, low, last_qty, avg_price, volume, buy_qty,
                     sell_qty, last_trade_time, oi, oi_day_high, oi_day_low, exchange_ts,
                     bids, asks)


class QuoteView(Sequence[Quote]):
    """``market.quotes[i]``: the i-th instrument as a fresh ``Quote`` read from the arrays."""

    def __init__(self, market: Market) -> None:
        self._market = market

    def __len__(self) -> int:
        return len(self._market.instruments)

    @overload
    def __getitem__(self, index: int) -> Quote: ...
    @overload
    def __getitem__(self, index: slice) -> list[Quote]: ...

    def __getitem__(self, index: int | slice) -> Quote | list[Quote]:
        if isinstance(index, slice):
            return [self._market.quote(i) for i in range(len(self))[index]]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return self._market.quote(index % len(self))


def tick_of(inst: Instrument) -> int:
    """The instrument's tick size in wire integers (at least 1)."""
    return max(round(inst.tick_size * inst.divisor), 1)


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
