"""Delivery records (the idempotency log) and the dead-letter stream: the writing side.

The record format and its readers are ``proto.delivery`` (the admin command and the dashboard
read them too). Every write goes through one script that never downgrades ``sent`` and never
takes a channel another live notifier is sending on (its ``pending`` lease has not run out),
so two notifiers holding the same alert id send it once.
"""

from __future__ import annotations

import time

import redis.asyncio as aredis

from proto import keys
from proto.delivery import Record, delivery_log
from proto.events import Alert, Fields

# KEYS[1] delivery hash; ARGV: channel id, new record JSON, owner, now ms, ttl s.
# Returns {1, ""} when written, {0, current JSON} when refused.
_WRITE_RECORD = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local ok, rec = pcall(cjson.decode, current)
  if ok and type(rec) == 'table' then
    if rec.status == 'sent' then return {0, current} end
    if rec.status == 'pending' and rec.owner ~= ARGV[3]
        and (tonumber(rec.lease_until_ms) or 0) > tonumber(ARGV[4]) then
      return {0, current}
    end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {1, ''}
"""

DEAD_MAX_AGE_MS = keys.ALERTS_MAX_AGE_DAYS * 24 * 3600 * 1000


def now_us() -> int:
    return time.time_ns() // 1000


class Records:
    """Reads and conditional writes of one process's delivery records."""

    def __init__(self, r: aredis.Redis, owner: str) -> None:
        self._r = r
        self._owner = owner
        self._write = r.register_script(_WRITE_RECORD)

    async def read(self, alert_id: str) -> dict[str, Record]:
        raw: dict[str, str] = await self._r.hgetall(keys.delivery(alert_id))  # type: ignore[assignment]
        return delivery_log(raw)[1]

    async def write(self, alert_id: str, cid: str, record: Record) -> Record | None:
        """Write ``record`` unless refused; returns the record that won when refused."""
        record = Record(record.status, record.attempts, record.error, record.latency_ms,
                        record.at or now_us(), self._owner, record.lease_until_ms)
        written, current = await self._write(
            keys=[keys.delivery(alert_id)],
            args=[cid, record.to_json(), self._owner, time.time_ns() // 1_000_000,
                  keys.DELIVERY_TTL_S])
        return None if int(written) else Record.from_json(current)


def dead_fields(base: Fields, reason: str, **extra: str) -> Fields:
    return {**base, **extra, "reason": reason, "dead_at": str(now_us())}


async def dead_letter(r: aredis.Redis, fields: Fields) -> None:
    """Append to ``sa:alerts:dead``; history like the alerts, trimmed by age only."""
    min_id = max(time.time_ns() // 1_000_000 - DEAD_MAX_AGE_MS, 0)
    await r.xadd(keys.ALERTS_DEAD, fields, minid=str(min_id), approximate=True)  # type: ignore[arg-type]


def alert_dead_fields(alert: Alert, cid: str, reason: str, attempts: int) -> Fields:
    return dead_fields(alert.to_fields(), reason, channel=cid, attempts=str(attempts))
