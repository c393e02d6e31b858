"""Storm control and quiet hours, the pure part: which digest window an alert may be folded
into, when a digest is due, and what a digest says. No clock reads, no I/O.

A user's alerts are counted per minute of their emit time (``Alert.at``), not of the moment
the notifier reads them, so a redelivered or late alert lands in the same minute; quiet hours
are judged on the same time. Window ids: ``m{epoch minute}`` for a storm, ``q{epoch minute of
the quiet period's start}`` for quiet hours. A digest's alert id is ``digest:USER:WINDOW``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from notify.render import format_price
from proto.delivery import digest_id
from proto.display import IST
from proto.events import Alert

MINUTE_MS = 60_000
DAY_MS = 24 * 60 * MINUTE_MS
IST_OFFSET_MS = (5 * 60 + 30) * MINUTE_MS
DIGEST_KIND = "digest"
DIGEST_REF = "Digest id: "  # the last line of a digest's text


@dataclass(frozen=True, slots=True)
class Window:
    id: str
    closes_ms: int  # epoch ms when no more alerts of the window can be folded by time


def minute_of(alert: Alert) -> int:
    """The epoch minute of the alert's emit time: the minute it is counted in."""
    return alert.at // 1000 // MINUTE_MS


def storm_window(alert: Alert) -> Window:
    minute = minute_of(alert)
    return Window(f"m{minute}", (minute + 1) * MINUTE_MS)


def quiet_window(alert: Alert, quiet: tuple[int, int] | None) -> Window | None:
    """The quiet period holding the alert's emit time, or None when it is outside quiet hours."""
    if quiet is None:
        return None
    period = quiet_period(alert.at // 1000, quiet)
    if period is None:
        return None
    start_ms, end_ms = period
    return Window(f"q{start_ms // MINUTE_MS}", end_ms)


def quiet_period(at_ms: int, quiet: tuple[int, int]) -> tuple[int, int] | None:
    """(start, end) epoch ms of the quiet period containing ``at_ms``, or None. ``quiet`` is
    (start, end) minutes of the IST day; start > end wraps midnight (22:00-08:00)."""
    local_ms = at_ms + IST_OFFSET_MS
    midnight = local_ms - local_ms % DAY_MS
    of_day = local_ms - midnight
    start, end = quiet[0] * MINUTE_MS, quiet[1] * MINUTE_MS
    if start < end:
        if not start <= of_day < end:
            return None
        begin, finish = midnight + start, midnight + end
    elif of_day >= start:
        begin, finish = midnight + start, midnight + DAY_MS + end
    elif of_day < end:
        begin, finish = midnight - DAY_MS + start, midnight + end
    else:
        return None
    return begin - IST_OFFSET_MS, finish - IST_OFFSET_MS


def due_ms(window: Window, now_ms: int, grace_s: float) -> int:
    """When a digest may go out: its window closed and nothing was folded for ``grace_s``."""
    return max(window.closes_ms, now_ms) + int(grace_s * 1000)


# What a digest holds and says ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Item:
    """One folded alert as the digest keeps it."""

    id: str
    sym: str
    kind: str
    ltp: float
    ts: int  # exchange time of the firing tick, epoch ms
    channels: tuple[str, ...]

    @classmethod
    def of(cls, alert: Alert) -> Item:
        return cls(alert.id, alert.sym, alert.kind, alert.ltp, alert.ts, tuple(alert.channels))

    def to_json(self) -> str:
        return orjson.dumps({"id": self.id, "sym": self.sym, "kind": self.kind,
                             "ltp": self.ltp, "ts": self.ts, "ch": list(self.channels)}).decode()

    @classmethod
    def from_json(cls, raw: str | bytes) -> Item:
        d: dict[str, Any] = orjson.loads(raw)
        return cls(str(d["id"]), str(d["sym"]), str(d["kind"]), float(d["ltp"]), int(d["ts"]),
                   tuple(str(c) for c in d.get("ch", ["default"])))


def reason_of(window: str) -> str:
    return "held during your quiet hours" if window.startswith("q") else (
        "beyond your limit per minute")


def _clock(epoch_ms: int, with_date: bool = False) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).astimezone(IST)
    return moment.strftime("%d %b %H:%M:%S IST" if with_date else "%H:%M:%S")


def digest_text(items: list[Item], window: str, max_chars: int) -> str:
    """The digest's message: count, why, first and last, alerts per symbol, then one line per
    alert while they fit in ``max_chars`` (the count of the rest at the end)."""
    first, last = min(i.ts for i in items), max(i.ts for i in items)
    per_symbol = Counter(i.sym for i in items).most_common()
    head = [
        f"{len(items)} alerts {reason_of(window)}.",
        f"First {_clock(first, True)}, last {_clock(last, True)}.",
        "By symbol: " + ", ".join(f"{sym} {n}" for sym, n in per_symbol),
    ]
    text = "\n".join(head)
    if len(text) > max_chars:
        return _cut(text, max_chars)
    lines = [f"{_clock(i.ts)} {i.sym} {i.kind} {format_price(i.ltp)}"
             for i in sorted(items, key=lambda i: (i.ts, i.id))]
    for shown, line in enumerate(lines):
        rest = len(lines) - shown - 1
        tail = f"\n… and {rest} more" if rest else ""
        if len(text) + 1 + len(line) + len(tail) > max_chars:
            return _cut(text + f"\n… and {len(lines) - shown} more", max_chars)
        text += "\n" + line
    return text


def _cut(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def digest_alert(user: str, window: str, items: list[Item], closed_at_us: int,
                 max_chars: int) -> Alert:
    """The synthetic alert a digest is delivered as: same id, same text on every try."""
    symbols = list(dict.fromkeys(i.sym for i in items))
    shown = symbols[0] if len(symbols) == 1 else f"{symbols[0]} +{len(symbols) - 1}"
    tags = sorted({tag for i in items for tag in i.channels})
    last = max(items, key=lambda i: (i.ts, i.id))
    alert_id = digest_id(user, window)
    # The id names the digest for `stormalert alerts show` (a digest has no dashboard page).
    ref = f"{DIGEST_REF}{alert_id}"
    text = digest_text(items, window, max_chars - len(ref) - 1)
    return Alert(id=alert_id, rule=DIGEST_KIND, user=user,
                 sym=f"{len(items)} alerts ({shown})", kind=DIGEST_KIND, ltp=last.ltp,
                 ts=closed_at_us // 1000, rx=0, at=closed_at_us, msg=f"{text}\n{ref}",
                 channels=tags or ["default"])
