"""The NSE cash session in exchange time, for rules that watch market hours only.

Open 09:15 to 15:30 IST (close exclusive), Monday to Friday, except configured holidays.
Pure: a time in, a yes or no out; the answer is cached per minute, as it changes no faster.
"""

from __future__ import annotations

from datetime import date, datetime

from proto.display import IST

__all__ = ["IST", "Session"]
OPEN_MIN = 9 * 60 + 15
CLOSE_MIN = 15 * 60 + 30


class Session:
    def __init__(self, holidays: frozenset[date] = frozenset()) -> None:
        self.holidays = holidays
        self._minute = -1
        self._open = False

    def is_open(self, t_ms: int) -> bool:
        minute = t_ms // 60_000
        if minute != self._minute:
            self._minute = minute
            when = datetime.fromtimestamp(minute * 60, IST)
            self._open = (when.weekday() < 5 and when.date() not in self.holidays
                          and OPEN_MIN <= when.hour * 60 + when.minute < CLOSE_MIN)
        return self._open
