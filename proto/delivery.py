"""The delivery log: the format of the notifier's delivery records and the readers of it.

The notifier writes the records (``notify.records``); its admin command (``stormalert alerts
show``) and the dashboard read them, so the format and the readers live here, in one place.

``keys.delivery(alert_id)`` is a hash: channel id -> JSON
``{status: pending|sent|failed, attempts, error, latency_ms, at, owner, lease_until_ms}``
(``at``: epoch µs of the last update, like the alert's own ``at``; ``latency_ms``: from the
alert's ``at`` to the moment the channel accepted it). An alert storm control or quiet hours
folded into a digest has the field ``folded`` -> the digest's alert id instead. A digest's
alert id is ``digest:USER:WINDOW``; the alerts folded into it are listed, as JSON summaries
``{id, sym, kind, ltp, ts, ch}``, in ``keys.user_digest_items(USER, WINDOW)``.

The readers are written once for both kinds of client: each is a generator that yields the
Redis calls it needs (``Call``) and gets their replies back; ``run`` drives one with a
blocking client, ``arun`` with an asyncio one.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import redis
import redis.asyncio as aredis

from proto import keys, store

FOLDED_FIELD = "folded"  # not a channel id: those are 12 hex digits
DIGEST_PREFIX = "digest:"
SCAN_PAGE = 1000
# An engine alert id is RULE:TICK_ENTRY_ID:INDEX; the alert was appended after its tick was,
# by the same Redis clock, so its own entry id is not older than the tick's.
_TICK_ENTRY_RE = re.compile(r":(\d{1,20})-\d{1,20}:\d{1,9}$")

T = TypeVar("T")
Call = tuple[str, tuple[Any, ...]]  # a Redis client method name and its arguments
Reader = Generator[Call, Any, T]


class NotFound(store.StoreError):
    """Nothing stored under the name asked for."""


@dataclass(frozen=True, slots=True)
class Record:
    """One channel's delivery record."""

    status: str
    attempts: int = 0
    error: str = ""
    latency_ms: float | None = None
    at: int = 0
    owner: str = ""
    lease_until_ms: int = 0

    def to_json(self) -> str:
        return orjson.dumps({
            "status": self.status, "attempts": self.attempts, "error": self.error,
            "latency_ms": self.latency_ms, "at": self.at, "owner": self.owner,
            "lease_until_ms": self.lease_until_ms,
        }).decode()

    @classmethod
    def from_json(cls, raw: str) -> Record:
        try:
            d: dict[str, Any] = orjson.loads(raw)
            return cls(status=str(d.get("status", "")), attempts=int(d.get("attempts", 0)),
                       error=str(d.get("error", "")), latency_ms=d.get("latency_ms"),
                       at=int(d.get("at", 0)), owner=str(d.get("owner", "")),
                       lease_until_ms=int(d.get("lease_until_ms", 0)))
        except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
            return cls(status="unreadable")


def delivery_log(raw: dict[str, str]) -> tuple[str, dict[str, Record]]:
    """The ``keys.delivery`` hash as (digest id the alert was folded into or '', channel id
    -> Record)."""
    folded = raw.get(FOLDED_FIELD, "")
    return folded, {cid: Record.from_json(value) for cid, value in raw.items()
                    if cid != FOLDED_FIELD}


def digest_id(user: str, window: str) -> str:
    return f"{DIGEST_PREFIX}{user}:{window}"


def parse_digest_id(member: str) -> tuple[str, str]:
    """(user, window) of ``digest:USER:WINDOW``; ValueError when it is not one."""
    prefix, _, rest = member.partition(DIGEST_PREFIX)
    user, sep, window = rest.partition(":")
    if prefix or not sep or not user or not window:
        raise ValueError(f"not a digest id: {member!r}")
    return user, window


# Driving a reader ------------------------------------------------------------------------


def run(r: redis.Redis, reader: Reader[T]) -> T:
    """The result of ``reader``, its calls made with a blocking client."""
    try:
        name, args = next(reader)
        while True:
            name, args = reader.send(getattr(r, name)(*args))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def arun(ar: aredis.Redis, reader: Reader[T]) -> T:
    """The result of ``reader``, its calls made with an asyncio client."""
    try:
        name, args = next(reader)
        while True:
            name, args = reader.send(await getattr(ar, name)(*args))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


# The readers -----------------------------------------------------------------------------


def find_alert(alert_id: str, *, scan: int | None = None) -> Reader[dict[str, str] | None]:
    """The ``sa:alerts`` fields of the alert with this id, or None. Looks from its tick's
    time onwards when the id names one, then newest first; each way reads at most ``scan``
    entries (None: the whole stream). A digest is never in the stream."""
    if alert_id.startswith(DIGEST_PREFIX):
        return None
    hint = _TICK_ENTRY_RE.search(alert_id)
    if hint is not None:
        found = yield from _scan(alert_id, "xrange", f"{hint.group(1)}-0", scan)
        if found is not None:
            return found
    return (yield from _scan(alert_id, "xrevrange", "+", scan))


def _scan(alert_id: str, command: str, start: str,
          scan: int | None) -> Reader[dict[str, str] | None]:
    read = 0
    while scan is None or read < scan:
        count = SCAN_PAGE if scan is None else min(SCAN_PAGE, scan - read)
        # xrange(name, min, max, count) and xrevrange(name, max, min, count)
        bounds = (start, "+") if command == "xrange" else (start, "-")
        page: list[tuple[str, dict[str, str]]] = yield (command, (keys.ALERTS, *bounds, count))
        for _eid, fields in page:
            if fields and fields.get("id") == alert_id:
                return dict(fields)
        read += len(page)
        if len(page) < count:
            return None
        start = "(" + page[-1][0]
    return None


def newest_alerts(user: str | None, last: int) -> Reader[list[dict[str, str]]]:
    """The fields of the ``last`` newest alerts (of ``user``, or of everyone), newest first."""
    found: list[dict[str, str]] = []
    upper = "+"
    while len(found) < last:
        page: list[tuple[str, dict[str, str]]] = yield (
            "xrevrange", (keys.ALERTS, upper, "-", SCAN_PAGE))
        found.extend(dict(fields) for _eid, fields in page
                     if fields and (user is None or fields.get("user") == user))
        if len(page) < SCAN_PAGE:
            break
        upper = "(" + page[-1][0]
    return found[:last]


def read_delivery(alert_id: str, user: str) -> Reader[dict[str, Any]]:
    """What the notifier recorded for one alert of ``user``: ``folded_into`` (a digest id or
    None), ``deliveries`` (one row per channel, shown as ``scheme:channel-id``, never its URL)
    and, for a digest, ``digest_of`` (the folded alert ids) and ``digest_items``."""
    raw: dict[str, str] = yield ("hgetall", (keys.delivery(alert_id),))
    folded, records = delivery_log(raw)
    raw_channels: dict[str, str] = {}
    if user:
        raw_channels = yield ("hgetall", (keys.user_channels(user),))
    rows = delivery_rows(records, raw_channels)
    out: dict[str, Any] = {"id": alert_id, "folded_into": folded or None, "deliveries": rows}
    try:
        digest_user, window = parse_digest_id(alert_id)
    except ValueError:
        return out
    raw_items: list[str] = yield ("lrange", (keys.user_digest_items(digest_user, window), 0, -1))
    items = [item for item in map(_digest_item, raw_items) if item is not None]
    out["digest_of"] = [item["id"] for item in items]
    out["digest_items"] = items
    return out


def delivery_rows(records: dict[str, Record],
                  raw_channels: dict[str, str]) -> list[dict[str, Any]]:
    """One row per channel of a delivery log (``delivery_log``), by channel id; the channel
    shown as ``scheme:channel-id`` from the owner's ``keys.user_channels`` hash, never its URL."""
    channels = {c["id"]: c for c in store.decode_channels(raw_channels)[0]}
    rows = []
    for cid, rec in sorted(records.items()):
        known = channels.get(cid)
        rows.append({"channel": store.redact(known["url"]) if known else f"?:{cid}",
                     "tag": known["tag"] if known else "", "status": rec.status,
                     "attempts": rec.attempts, "error": rec.error,
                     "latency_ms": rec.latency_ms, "at": rec.at})
    return rows


def _digest_item(raw: str) -> dict[str, Any] | None:
    try:
        d = orjson.loads(raw)
        return {"id": str(d["id"]), "sym": str(d.get("sym", "")), "kind": str(d.get("kind", "")),
                "ltp": float(d.get("ltp", 0.0)), "ts": int(d.get("ts", 0))}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None


def owner_of(alert_id: str, fields: dict[str, str] | None) -> str:
    """The user an alert belongs to: from its stream entry, or a digest's id; '' if unknown."""
    if fields and fields.get("user"):
        return fields["user"]
    try:
        return parse_digest_id(alert_id)[0]
    except ValueError:
        return ""


def alert_report(alert_id: str, *, scan: int | None = None) -> Reader[dict[str, Any]]:
    """The alert (its ``sa:alerts`` fields, or None when not found), its owner (``user``) and
    its delivery log (``read_delivery``); NotFound when nothing at all is stored for it."""
    fields = yield from find_alert(alert_id, scan=scan)
    user = owner_of(alert_id, fields)
    report = {"alert": fields, "user": user or None, **(yield from read_delivery(alert_id, user))}
    if fields is None and not report["deliveries"] and not report["folded_into"] \
            and not report.get("digest_of"):
        raise NotFound(f"no alert {alert_id!r} (nothing in {keys.ALERTS} nor a delivery record)")
    return report
