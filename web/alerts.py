"""Reading ``sa:alerts`` for one user: recent history for the page and the live tail.

Every reader keeps a concrete stream id as its cursor (never ``$``), so an entry added
between two reads, or between the page render and the live stream, is never missed.
"""

from __future__ import annotations

import logging
import re
from typing import Any, cast

import redis.asyncio as aredis

from proto import bus, keys
from proto.events import Alert, CodecError, Fields
from web.views import User, alert_view

log = logging.getLogger("stormalert.web")

ENTRY_ID_RE = re.compile(r"\d{1,20}-\d{1,20}")
START_ID = "0-0"  # before every entry: the cursor of an empty stream
_CHUNK = 500

Entry = bus.Entry


def entry_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a pair of numbers, which compare as Redis orders entries."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def valid_entry_id(value: str | None) -> str | None:
    """A stream entry id from a client (header or query), or None when it is not one."""
    value = (value or "").strip()
    return value if ENTRY_ID_RE.fullmatch(value) else None


def visible_alert(user: User, entry_id: str, fields: Fields) -> Alert | None:
    """The alert of an entry this user may see; None for others' or unreadable ones."""
    if not user.can_see(fields.get("user", "")):
        return None
    try:
        return Alert.from_fields(fields)
    except CodecError as exc:
        log.warning("skipping unreadable alert entry %s: %s", entry_id, exc)
        return None


def visible_view(user: User, entry_id: str, fields: Fields) -> dict[str, Any] | None:
    """The feed row for an entry this user may see."""
    alert = visible_alert(user, entry_id, fields)
    return None if alert is None else alert_view(entry_id, alert)


async def latest_id(ar: aredis.Redis) -> str:
    """The id of the newest entry, or the start when the stream is empty."""
    newest = cast(list[Entry], await ar.xrevrange(keys.ALERTS, count=1))
    return newest[0][0] if newest else START_ID


async def recent_alerts(ar: aredis.Redis, user: User, *, limit: int,
                        scan: int) -> tuple[list[tuple[str, Alert]], str]:
    """Up to ``limit`` of the user's newest alerts (newest first), looking back at most
    ``scan`` entries, and the id of the stream's newest entry: the live cursor to go on from."""
    found: list[tuple[str, Alert]] = []
    cursor = START_ID
    upper = "+"
    scanned = 0
    while True:
        chunk = cast(list[Entry], await ar.xrevrange(
            keys.ALERTS, max=upper, min="-", count=max(1, min(_CHUNK, scan - scanned))))
        if not chunk:
            break
        if cursor == START_ID:
            cursor = chunk[0][0]
        for entry_id, fields in chunk:
            alert = visible_alert(user, entry_id, fields)
            if alert is not None and len(found) < limit:
                found.append((entry_id, alert))
        scanned += len(chunk)
        if len(found) >= limit or scanned >= scan:
            break
        upper = "(" + chunk[-1][0]
    return found, cursor


async def read_after(ar: aredis.Redis, cursor: str, *, block_ms: int | None,
                     count: int = 200) -> list[Entry]:
    """Entries after ``cursor``, waiting up to ``block_ms`` for the first one (None: not)."""
    reply: Any = await ar.xread({keys.ALERTS: cursor}, count=count, block=block_ms)
    return bus.flatten(reply)
