"""Pure formatting of quotes and alerts for the page and the live stream.

The server renders the first view and the browser renders live updates from the same
dicts, so both show identical text. Times are shown in IST (UTC+05:30, no daylight saving).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from proto.display import IST, alert_path
from proto.events import Alert


@dataclass(frozen=True, slots=True)
class User:
    """The signed-in user as the web process needs it."""

    name: str
    admin: bool = False

    def can_see(self, alert_user: str) -> bool:
        """Users see their own alerts; an admin sees everyone's."""
        return self.admin or alert_user == self.name


def ist_time(epoch_ms: int) -> str:
    """``HH:MM:SS`` in IST."""
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).astimezone(IST).strftime("%H:%M:%S")


def ist_datetime(epoch_ms: int) -> str:
    """ISO-8601 with the IST offset, for ``<time datetime=...>``."""
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).astimezone(IST).isoformat(
        timespec="milliseconds")


def price(value: float) -> str:
    return f"{value:,.2f}"


def alert_view(entry_id: str, alert: Alert) -> dict[str, Any]:
    """One row of the alerts feed; ``id`` is the ``sa:alerts`` entry id."""
    return {
        "id": entry_id,
        "alert_id": alert.id,
        "href": alert_path(alert.id),
        "user": alert.user,
        "sym": alert.sym,
        "kind": alert.kind,
        "msg": alert.msg,
        "ltp": price(alert.ltp),
        "time": ist_time(alert.ts),
        "datetime": ist_datetime(alert.ts),
        "latency_ms": f"{alert.latency_us() / 1000:.2f}",
    }


def quote_view(sym: str, raw: str) -> dict[str, Any] | None:
    """One row of the prices table from a ``sa:quotes`` value; None when it is unreadable."""
    try:
        q = orjson.loads(raw)
        ltp, ts = float(q["ltp"]), int(q["ts"])
        vol = int(q.get("vol") or 0)
        chg = q.get("chg_pct")
        chg_pct = None if chg is None else float(chg)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    bar = q.get("bar")  # the open one-minute bar, for live candles and sparklines
    return {
        "bar": bar if isinstance(bar, list) and len(bar) == 6 else None,
        "sym": sym,
        "ltp": price(ltp),
        "chg_pct": "" if chg_pct is None else f"{chg_pct:+.2f}%",
        "dir": "" if not chg_pct else ("up" if chg_pct > 0 else "down"),
        "vol": f"{vol:,}",
        "time": ist_time(ts),
    }


def quote_views(quotes: dict[str, str]) -> list[dict[str, Any]]:
    """Readable rows sorted by symbol; unreadable values are left out."""
    rows = (quote_view(sym, raw) for sym, raw in sorted(quotes.items()))
    return [row for row in rows if row is not None]
