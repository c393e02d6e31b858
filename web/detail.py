"""One alert's page and its JSON: the alert, why it fired, and its delivery per channel.

Messages link here (``notify.render.alert_link``). The report comes from ``proto.delivery``,
the readers the ``stormalert alerts show`` command uses too. Channels are shown as
``scheme:channel-id`` (``proto.store.redact``), never their URL; delivery errors were
scrubbed of URL parts by the notifier before they were recorded. A user sees only their own
alerts: anybody else's is a 404, as if it did not exist; an admin sees every alert.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aredis
from litestar import MediaType, Request, get
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Template

from proto import delivery
from proto.display import alert_path, format_ist
from proto.events import Alert, CodecError
from web.settings import WebSettings
from web.views import User, ist_datetime, price

log = logging.getLogger("stormalert.web")

MAX_ALERT_ID_CHARS = 300


def _latency(value: Any) -> str:
    return "" if value is None else f"{float(value):,.1f} ms"


def delivery_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"channel": row["channel"], "tag": row["tag"], "status": row["status"],
             "attempts": row["attempts"], "error": row["error"],
             "latency": _latency(row["latency_ms"]),
             "at": format_ist(row["at"] // 1000) if row["at"] else ""}
            for row in report["deliveries"]]


def alert_part(fields: dict[str, str] | None, alert_id: str) -> dict[str, Any] | None:
    """What fired: the alert's own fields, formatted; None when the stream no longer has it
    (or the entry cannot be read, which is logged)."""
    if fields is None:
        return None
    try:
        alert = Alert.from_fields(fields)
    except CodecError as exc:
        log.warning("alert %s: unreadable entry: %s", alert_id, exc)
        return None
    return {
        "rule": alert.rule, "sym": alert.sym, "kind": alert.kind, "ltp": price(alert.ltp),
        "msg": alert.msg, "time": format_ist(alert.ts), "datetime": ist_datetime(alert.ts),
        "latency_ms": f"{alert.latency_us() / 1000:.2f}", "channels": alert.channels,
        "ref": [{"name": name, "value": f"{value:,.4g}" if abs(value) < 1000 else price(value)}
                for name, value in sorted(alert.ref.items())],
    }


def detail_view(report: dict[str, Any]) -> dict[str, Any]:
    """The page's (and the JSON answer's) view of a ``proto.delivery.alert_report``."""
    alert_id = report["id"]
    folded = report["folded_into"]
    items = report.get("digest_items")
    return {
        "id": alert_id,
        "href": alert_path(alert_id),
        "user": report["user"],
        "digest": items is not None,
        "alert": alert_part(report["alert"], alert_id),
        "deliveries": delivery_rows(report),
        "folded_into": None if not folded else {"id": folded, "href": alert_path(folded)},
        "digest_of": None if items is None else [
            {"id": item["id"], "href": alert_path(item["id"]), "sym": item["sym"],
             "kind": item["kind"], "ltp": price(item["ltp"]),
             "time": format_ist(item["ts"]) if item["ts"] else ""}
            for item in items],
    }


async def load_detail(ar: aredis.Redis, user: User, alert_id: str,
                      settings: WebSettings) -> dict[str, Any]:
    """The view of an alert this user may see; NotFoundException for anything else."""
    if not alert_id or len(alert_id) > MAX_ALERT_ID_CHARS:
        raise NotFoundException()
    try:
        report = await delivery.arun(ar, delivery.alert_report(alert_id,
                                                               scan=settings.history_scan))
    except delivery.NotFound:
        raise NotFoundException() from None
    owner = report["user"] or ""
    # An alert whose owner cannot be told (its entry trimmed away) is shown to admins only.
    if not (user.admin or (owner and user.can_see(owner))):
        raise NotFoundException()
    return detail_view(report)


@get("/alerts/{alert_id:str}")
async def alert_page(
    request: Request[User, Any, Any],
    alert_id: FromPath[str],
    ar: NamedDependency[aredis.Redis],
    settings: NamedDependency[WebSettings],
) -> Template:
    view = await load_detail(ar, request.user, alert_id, settings)
    return Template("alert.html", media_type=MediaType.HTML,
                    context={"user": request.user, "a": view})


@get("/api/alerts/{alert_id:str}")
async def api_alert(
    request: Request[User, Any, Any],
    alert_id: FromPath[str],
    ar: NamedDependency[aredis.Redis],
    settings: NamedDependency[WebSettings],
) -> dict[str, Any]:
    return await load_detail(ar, request.user, alert_id, settings)
