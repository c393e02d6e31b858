"""The small Redis-Streams bus every process uses: connect, publish in batches,
consumer-group read, ack, and claim of entries a dead consumer left pending.

Sync functions serve the hot loops (the sync client costs less CPU per call); the ``a``-prefixed
ones serve asyncio processes. Values come back as ``str`` (``decode_responses=True``).
"""

from __future__ import annotations

from collections.abc import Iterable

import redis
import redis.asyncio as aredis
from redis.commands.core import Script

from proto import keys
from proto.events import Fields

Entry = tuple[str, Fields]


class RedisUnavailable(RuntimeError):
    """Redis did not answer; the message says where we tried."""


def connect(url: str, *, blocking: bool = False) -> redis.Redis:
    """A sync client. ``blocking`` readers get no socket timeout (XREADGROUP BLOCK)."""
    return redis.Redis.from_url(
        url, decode_responses=True, socket_timeout=None if blocking else 5.0,
        socket_connect_timeout=5.0, health_check_interval=30,
    )


ASYNC_MAX_CONNECTIONS = 100
ASYNC_POOL_WAIT_S = 30.0


def aconnect(url: str, *, max_connections: int = ASYNC_MAX_CONNECTIONS) -> aredis.Redis:
    """An asyncio client; no socket timeout, so cancellation of blocked reads is prompt.

    The pool waits for a free connection (up to ``ASYNC_POOL_WAIT_S``) instead of refusing
    the call: redis-py's default pool raises "Too many connections" past its limit, which
    turned a burst of concurrent deliveries into failed writes and resends."""
    pool = aredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=ASYNC_POOL_WAIT_S,
        decode_responses=True, socket_timeout=None, socket_connect_timeout=5.0,
        health_check_interval=30,
    )
    return aredis.Redis.from_pool(pool)  # the client owns (and closes) its pool


def check(r: redis.Redis, url: str) -> None:
    """Raise RedisUnavailable with a one-line reason when Redis does not answer."""
    try:
        r.ping()
    except redis.RedisError as exc:
        raise RedisUnavailable(f"cannot reach Redis at {redact_url(url)}: {exc}") from None


def redact_url(url: str) -> str:
    """A Redis URL without its password, for messages and logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


def ensure_group(r: redis.Redis, stream: str, group: str, start: str = "0") -> None:
    try:
        r.xgroup_create(stream, group, id=start, mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def aensure_group(r: aredis.Redis, stream: str, group: str, start: str = "0") -> None:
    try:
        await r.xgroup_create(stream, group, id=start, mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def publish(pipe: redis.client.Pipeline, stream: str, entries: Iterable[Fields],
            maxlen: int | None = None) -> None:
    """Queue XADDs on a pipeline; the caller executes it (one round trip per batch)."""
    for fields in entries:
        pipe.xadd(stream, fields, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]


# Append an alert unless its id was appended before: a reprocessed tick (after a crash or a
# claim) yields the same alert id, and must not make a second entry.
_ALERT_ONCE = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then
  return redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
end
return false
"""


def publish_alert_once(pipe: redis.client.Pipeline, alert_id: str, fields: Fields) -> None:
    """Queue a once-only XADD of one alert to ``sa:alerts`` on a pipeline (EVALSHA; the
    pipeline loads the script when the server does not have it yet)."""
    flat = [v for kv in fields.items() for v in kv]
    _alert_once(keys=[keys.ALERTS, keys.alert_seen(alert_id)],
                args=[keys.DELIVERY_TTL_S, *flat], client=pipe)


# Given as bytes, the script needs no client to hash it; each call names its pipeline.
_alert_once = Script(None, _ALERT_ONCE.encode())  # type: ignore[arg-type]


def flatten(reply: list | dict | None) -> list[Entry]:
    """The entries of an XREAD/XREADGROUP reply, RESP2 or RESP3, deleted ones left out."""
    if not reply:
        return []
    if isinstance(reply, dict):  # RESP3
        return [e for entries in reply.values() for e in entries[0] if e[1] is not None]
    return [e for _stream, entries in reply for e in entries if e[1] is not None]


def read_group(r: redis.Redis, stream: str, group: str, consumer: str, *, count: int,
               block_ms: int | None, start: str = ">") -> list[Entry]:
    """New entries for this consumer (``start='>'``) or its own pending ones (``'0'``)."""
    reply = r.xreadgroup(group, consumer, {stream: start}, count=count, block=block_ms)
    return flatten(reply)  # type: ignore[arg-type]


async def aread_group(r: aredis.Redis, stream: str, group: str, consumer: str, *, count: int,
                      block_ms: int | None, start: str = ">") -> list[Entry]:
    reply = await r.xreadgroup(group, consumer, {stream: start}, count=count, block=block_ms)
    return flatten(reply)


def claim_stale(r: redis.Redis, stream: str, group: str, consumer: str, *, min_idle_ms: int,
                count: int = 500) -> list[Entry]:
    """Take over entries another consumer read but never acked (it died)."""
    claimed: list[Entry] = []
    cursor = "0-0"
    while True:
        cursor, entries, _deleted = r.xautoclaim(
            stream, group, consumer, min_idle_time=min_idle_ms, start_id=cursor, count=count)
        claimed.extend(e for e in entries if e[1] is not None)
        if cursor == "0-0" or not entries:
            return claimed


async def aclaim_stale(r: aredis.Redis, stream: str, group: str, consumer: str, *,
                       min_idle_ms: int, count: int = 500) -> list[Entry]:
    claimed: list[Entry] = []
    cursor = "0-0"
    while True:
        cursor, entries, _deleted = await r.xautoclaim(
            stream, group, consumer, min_idle_time=min_idle_ms, start_id=cursor, count=count)
        claimed.extend(e for e in entries if e[1] is not None)
        if cursor == "0-0" or not entries:
            return claimed
