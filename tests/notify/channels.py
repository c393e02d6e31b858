"""Shared by the channel tests: deliver alerts in-process (a real Deliverer, real Redis)
with a service's API pointed at a loopback ApiServer through ``notify_api_base``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import redis

from notify.deliver import Deliverer
from notify.settings import NotifySettings
from proto import keys
from proto.bus import aconnect
from proto.events import Alert
from proto.runtime import Stats


def settings(redis_url: str, api_base: dict[str, str], **over: Any) -> NotifySettings:
    base: dict[str, Any] = dict(
        redis_url=redis_url, notify_api_base=api_base, notify_backoff_base_s=0.05,
        notify_backoff_cap_s=0.1, notify_max_tries=4, notify_send_timeout_s=2.0,
        dashboard_url="https://dash.example")
    base.update(over)
    return NotifySettings(**base)


def deliver(s: NotifySettings, alerts: list[Alert], stats: Stats | None = None,
            stagger_s: float = 0.0) -> list[bool]:
    """Deliver ``alerts`` concurrently (each started ``stagger_s`` after the one before)."""

    async def main() -> list[bool]:
        r = aconnect(s.redis_url)
        deliverer = Deliverer(s, r, stats or Stats("t"))

        async def one(i: int, alert: Alert) -> bool:
            await asyncio.sleep(i * stagger_s)
            return await deliverer.deliver(alert)

        try:
            return list(await asyncio.gather(*(one(i, a) for i, a in enumerate(alerts))))
        finally:
            await deliverer.aclose()
            await r.aclose()

    return asyncio.run(main())


def record(r: redis.Redis, alert_id: str, cid: str) -> dict[str, object]:
    """The delivery record of one channel of an alert."""
    return json.loads(str(r.hget(keys.delivery(alert_id), cid)))
