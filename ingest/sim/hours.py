"""When the simulated market trades, how lively it is at each moment, and the simulator's clock.

``always`` (the demo default) trades around the clock. ``nse`` follows the exchange day in
IST, Monday to Friday: equities and indices (NSE, BSE) trade in the pre-open call auction
09:00-09:08 and the normal session 09:15-15:30 (both configurable); F&O 09:15-15:30;
currency (CDS, BCD) 09:00-17:00; commodities (MCX, NCO) 09:00-23:30. Nothing ticks outside.

Each exchange's session status, as the Upstox feed's ``market_info`` reports it per segment:
``PRE_OPEN_START`` in the pre-open window, ``PRE_OPEN_END`` between its end and the normal
open (the call auction's matching), ``NORMAL_OPEN`` in the normal session, ``NORMAL_CLOSE``
at any other time (the simulator models no closing session). Always-open mode: open.

Volatility is U-shaped over the normal session: lively at the open and the close, calm at
midday (multiplier 2.2 at the edges, 0.6 in the middle), 1.5 in the pre-open, 1 otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from datetime import time as time_of_day
from typing import Literal

from ingest.clock import IST

HoursMode = Literal["always", "nse"]
PRE_OPEN = "pre_open"
NORMAL = "normal"
SATURDAY = 5
VOL_EDGE, VOL_MIDDAY, VOL_PRE_OPEN = 2.2, 0.6, 1.5
# Session statuses, named as Upstox's MarketStatus enum names them.
PRE_OPEN_START, PRE_OPEN_END = "PRE_OPEN_START", "PRE_OPEN_END"
NORMAL_OPEN, NORMAL_CLOSE = "NORMAL_OPEN", "NORMAL_CLOSE"


@dataclass(frozen=True, slots=True)
class Window:
    phase: str
    start: time_of_day
    end: time_of_day  # exclusive

    def holds(self, at: time_of_day) -> bool:
        return self.start <= at < self.end


def parse_window(text: str, phase: str) -> Window:
    """``09:15-15:30`` as a window; ValueError naming the problem."""
    start_text, sep, end_text = text.partition("-")
    if not sep:
        raise ValueError(f"expected HH:MM-HH:MM, got {text!r}")
    start, end = time_of_day.fromisoformat(start_text.strip()), \
        time_of_day.fromisoformat(end_text.strip())
    if end <= start:
        raise ValueError(f"window {text!r} ends before it starts")
    return Window(phase, start, end)


def _t(text: str) -> time_of_day:
    return time_of_day.fromisoformat(text)


NSE_NORMAL = Window(NORMAL, _t("09:15"), _t("15:30"))
NSE_PRE_OPEN = Window(PRE_OPEN, _t("09:00"), _t("09:08"))


class MarketHours:
    def __init__(self, mode: HoursMode = "always", *, normal: Window = NSE_NORMAL,
                 pre_open: Window = NSE_PRE_OPEN) -> None:
        self.mode = mode
        self.normal = normal
        fno = (Window(NORMAL, _t("09:15"), _t("15:30")),)
        currency = (Window(NORMAL, _t("09:00"), _t("17:00")),)
        commodity = (Window(NORMAL, _t("09:00"), _t("23:30")),)
        equity = (pre_open, normal)
        self.schedules: dict[str, tuple[Window, ...]] = {
            "NSE": equity, "BSE": equity, "NFO": fno, "BFO": fno, "CDS": currency,
            "BCD": currency, "MCX": commodity, "NCO": commodity}

    def phase(self, exchange: str, now_s: float) -> str | None:
        """``pre_open`` or ``normal`` while the exchange trades, else None."""
        if self.mode == "always":
            return NORMAL
        now = datetime.fromtimestamp(now_s, IST)
        if now.weekday() >= SATURDAY:
            return None
        at = now.time()
        for window in self.schedules.get(exchange, self.schedules["NSE"]):
            if window.holds(at):
                return window.phase
        return None

    def status(self, exchange: str, now_s: float) -> str:
        """The exchange's session status now (see the module's docstring)."""
        phase = self.phase(exchange, now_s)
        if phase == NORMAL:
            return NORMAL_OPEN
        if phase == PRE_OPEN:
            return PRE_OPEN_START
        now = datetime.fromtimestamp(now_s, IST)
        windows = self.schedules.get(exchange, self.schedules["NSE"])
        at = now.time()
        if now.weekday() < SATURDAY and any(
                w.phase == PRE_OPEN and w.end <= at < n.start
                for w in windows for n in windows if n.phase == NORMAL):
            return PRE_OPEN_END
        return NORMAL_CLOSE

    def open_exchanges(self, exchanges: Iterable[str], now_s: float) -> frozenset[str] | None:
        """The exchanges trading now; None when all of them are (skip filtering)."""
        if self.mode == "always":
            return None
        return frozenset(e for e in exchanges if self.phase(e, now_s) is not None)

    def volatility(self, now_s: float) -> float:
        """The intraday multiplier of every instrument's volatility."""
        now = datetime.fromtimestamp(now_s, IST)
        at = now.time()
        if self.mode == "nse" and self.schedules["NSE"][0].holds(at):
            return VOL_PRE_OPEN
        if not self.normal.holds(at):
            return 1.0
        start = self.normal.start.hour * 3600 + self.normal.start.minute * 60
        end = self.normal.end.hour * 3600 + self.normal.end.minute * 60
        x = (at.hour * 3600 + at.minute * 60 + at.second - start) / (end - start)
        return VOL_MIDDAY + (VOL_EDGE - VOL_MIDDAY) * (2 * x - 1) ** 2


class SimClock:
    """Wall-clock time, or time running from a chosen start instant (tests, demos of the
    market day): ``SimClock(start_s)()`` is ``start_s`` plus the real time elapsed since."""

    def __init__(self, start_s: float | None = None) -> None:
        self._offset = 0.0 if start_s is None else start_s - time.time()

    def __call__(self) -> float:
        return time.time() + self._offset


class TradingGate:
    """Per market step: which instruments may trade now and the volatility multiplier."""

    def __init__(self, hours: MarketHours, exchanges: list[str]) -> None:
        self._hours = hours
        self._by_exchange: dict[str, frozenset[int]] = {
            exchange: frozenset(i for i, e in enumerate(exchanges) if e == exchange)
            for exchange in set(exchanges)}
        self._open: frozenset[str] | None = None
        self.closed: frozenset[int] = frozenset()

    def update(self, now_s: float) -> bool:
        """Recompute for this instant; True when the open set changed (``closed`` is new)."""
        open_now = self._hours.open_exchanges(self._by_exchange, now_s)
        if open_now == self._open:
            return False
        self._open = open_now
        self.closed = frozenset() if open_now is None else frozenset(
            i for e, members in self._by_exchange.items() if e not in open_now for i in members)
        return True

    def volatility(self, now_s: float) -> float:
        return self._hours.volatility(now_s)
