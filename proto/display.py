"""What every process shows a trader the same way: times in IST and the dashboard address
of an alert (messages link to the page the web process serves)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import quote

# India has had no daylight saving since 1945, so a fixed offset is exact and needs no tzdata.
IST = timezone(timedelta(hours=5, minutes=30), "IST")


def format_ist(epoch_ms: int) -> str:
    """``DD Mon YYYY HH:MM:SS.mmm IST``."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).astimezone(IST)
    return moment.strftime("%d %b %Y %H:%M:%S.") + f"{moment.microsecond // 1000:03d} IST"


def alert_path(alert_id: str) -> str:
    """The dashboard page of an alert, ``/alerts/{ID}``."""
    return f"/alerts/{quote(alert_id, safe=':')}"
