"""Wall-clock helpers for the Indian market day: IST (a fixed +05:30, no daylight saving)
and the next instant a daily time of day comes round (token expiry, instrument refresh)."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

from proto.display import IST

__all__ = ["IST", "next_daily"]


def next_daily(now_s: float, at: time, tz: timezone = IST) -> float:
    """The first instant (epoch s) strictly after ``now_s`` when the clock in ``tz`` shows
    ``at``."""
    now = datetime.fromtimestamp(now_s, tz)
    candidate = now.replace(hour=at.hour, minute=at.minute, second=at.second,
                            microsecond=at.microsecond)
    if candidate.timestamp() <= now_s:
        candidate += timedelta(days=1)
    return candidate.timestamp()


def ist_text(epoch_s: float) -> str:
    """An instant as ``2024-01-05 06:00 IST`` for log lines and states."""
    return datetime.fromtimestamp(epoch_s, IST).strftime("%Y-%m-%d %H:%M IST")
