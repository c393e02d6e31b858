"""Storm control and quiet hours against Redis: the per-alert decision and the digest flush.

Exactly once, step by step:

- ``Policy.decide`` runs one script on the user's keys (one hash tag): if the alert already
  has a decision in ``keys.user_rate`` it is returned unchanged (a redelivery decides the
  same); otherwise the alert is folded into the quiet-hours digest, or counted and, over the
  user's limit, folded into the minute's digest, or sent. Folding appends to the digest's
  items in the same script, so an alert is in a digest exactly when its decision says so.
- Then, before the entry is acked, the digest is put on ``keys.DIGESTS_DUE`` (``ZADD GT``:
  only ever later) and the alert's delivery hash notes ``folded``. Both are repeated on a
  redelivery, so a crash between the script and the ack loses neither.
- ``DigestFlusher`` (in every notifier) takes due digests: it claims one by moving its score
  to a lease (renewed while it works, so a dead notifier's digest is taken over), closes it
  (``closed_at`` set once: nothing more is folded in, later alerts of the window are sent
  alone), delivers it through ``Deliverer.deliver`` as a synthetic alert whose id, text and
  time come from the closed digest only (the delivery records make a retry send nothing
  twice), and removes it from the due set when every channel is done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import redis.asyncio as aredis

from notify.deliver import TRANSIENT, Deliverer
from notify.policy import (
    Item,
    Window,
    digest_alert,
    due_ms,
    minute_of,
    quiet_window,
    storm_window,
)
from notify.settings import NotifySettings
from proto import keys, store
from proto.delivery import FOLDED_FIELD, digest_id, parse_digest_id
from proto.events import Alert
from proto.runtime import Stats, wait_event

log = logging.getLogger(__name__)

SEND = "send"
PREFS_CACHE_S = 1.0
PREFS_CACHE_MAX = 100_000  # users; cleared when full, it is only a cache

# KEYS: rate hash, quiet digest hash, quiet items, storm digest hash, storm items (the quiet
# pair repeats the storm pair when the alert is outside quiet hours: all share one hash tag).
# ARGV: decision field, limit (0: none), quiet window ('' none), storm window, item JSON, ttl s.
_DECIDE = """
local prior = redis.call('HGET', KEYS[1], ARGV[1])
if prior then return prior end
local function fold(meta, items, window)
  if redis.call('HEXISTS', meta, 'closed_at') == 1 then return false end
  redis.call('RPUSH', items, ARGV[5])
  redis.call('HSETNX', meta, 'window', window)
  redis.call('EXPIRE', items, ARGV[6])
  redis.call('EXPIRE', meta, ARGV[6])
  return true
end
local decision = 'send'
if ARGV[3] ~= '' and fold(KEYS[2], KEYS[3], ARGV[3]) then
  decision = ARGV[3]
else
  local n = redis.call('HINCRBY', KEYS[1], '#n', 1)
  local limit = tonumber(ARGV[2])
  if limit > 0 and n > limit and fold(KEYS[4], KEYS[5], ARGV[4]) then decision = ARGV[4] end
end
redis.call('HSET', KEYS[1], ARGV[1], decision)
redis.call('EXPIRE', KEYS[1], ARGV[6])
return decision
"""

# KEYS: digest hash, items. ARGV: now µs, ttl s. Returns {closed_at, items...}.
_CLOSE = """
local closed = redis.call('HGET', KEYS[1], 'closed_at')
if not closed then
  closed = ARGV[1]
  redis.call('HSET', KEYS[1], 'closed_at', closed)
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
local out = {closed}
for _, item in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do out[#out + 1] = item end
return out
"""

# KEYS: due set. ARGV: member, now ms, lease until ms. Takes a due digest for a lease.
_CLAIM = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  return 1
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Decision:
    window: str  # '' when the alert is sent on its own

    @property
    def folded(self) -> bool:
        return bool(self.window)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Policy:
    """Decides per alert: send now, or fold into a digest (recorded, so decided once)."""

    def __init__(self, settings: NotifySettings, r: aredis.Redis,
                 clock_ms: Callable[[], int] = now_ms) -> None:
        self.s = settings
        self.r = r
        self._clock_ms = clock_ms
        self._decide = r.register_script(_DECIDE)
        self._prefs: dict[str, tuple[float, store.NotifyPrefs]] = {}

    async def prefs(self, user: str) -> store.NotifyPrefs:
        """A user's prefs, read at most once per ``PREFS_CACHE_S``: a busy user's alerts
        save a round trip each, and a change from the CLI applies within that time."""
        now = time.monotonic()
        cached = self._prefs.get(user)
        if cached is not None and cached[0] > now:
            return cached[1]
        raw: dict[str, str] = await self.r.hgetall(keys.user_prefs(user))  # type: ignore[assignment]
        prefs, problems = store.decode_prefs(raw)
        for problem in problems:
            log.warning("user %s: stored preference ignored: %s", user, problem)
        if len(self._prefs) >= PREFS_CACHE_MAX:
            self._prefs.clear()
        self._prefs[user] = (now + PREFS_CACHE_S, prefs)
        return prefs

    async def decide(self, alert: Alert) -> Decision:
        prefs = await self.prefs(alert.user)
        limit = (self.s.notify_max_per_minute if prefs.max_per_minute is None
                 else prefs.max_per_minute)
        storm = storm_window(alert)
        quiet = quiet_window(alert, prefs.quiet)
        held = quiet or storm
        user = alert.user
        decided = await self._decide(
            keys=[keys.user_rate(user, minute_of(alert)),
                  keys.user_digest(user, held.id), keys.user_digest_items(user, held.id),
                  keys.user_digest(user, storm.id), keys.user_digest_items(user, storm.id)],
            args=[f"id:{alert.id}", limit, quiet.id if quiet else "", storm.id,
                  Item.of(alert).to_json(), keys.DELIVERY_TTL_S])
        window = "" if decided == SEND else str(decided)
        if window:
            await self._schedule(alert, window, held if window == held.id else storm)
        return Decision(window)

    async def _schedule(self, alert: Alert, window: str, held: Window) -> None:
        member = digest_id(alert.user, window)
        due = due_ms(held, self._clock_ms(), self.s.notify_digest_grace_s)
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.zadd(keys.DIGESTS_DUE, {member: due}, gt=True)
            pipe.hset(keys.delivery(alert.id), FOLDED_FIELD, member)
            pipe.expire(keys.delivery(alert.id), keys.DELIVERY_TTL_S)
            await pipe.execute()


class DigestFlusher:
    """Delivers due digests; every notifier runs one (the due set is shared)."""

    def __init__(self, settings: NotifySettings, r: aredis.Redis, stats: Stats,
                 deliverer: Deliverer, clock_ms: Callable[[], int] = now_ms) -> None:
        self.s = settings
        self.r = r
        self.stats = stats
        self.deliverer = deliverer
        self._clock_ms = clock_ms
        self._close = r.register_script(_CLOSE)
        self._claim = r.register_script(_CLAIM)
        self._lease_ms = settings.notify_claim_idle_ms
        self.flushing: set[str] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Scan until ``stop``; then give flushes in progress the drain timeout."""
        async with asyncio.TaskGroup() as tg:
            running: set[asyncio.Task[bool]] = set()
            while not stop.is_set():
                try:
                    await self._renew()
                    for member in await self.due():
                        task = tg.create_task(self.flush(member), name=f"digest {member}")
                        running.add(task)
                        task.add_done_callback(running.discard)
                except TRANSIENT as exc:
                    self.stats.inc("redis_errors")
                    log.warning("digest scan: redis error: %s", exc)
                await wait_event(stop, self._scan_s())
            if running:
                _done, pending = await asyncio.wait(set(running),
                                                    timeout=self.s.notify_drain_timeout_s)
                for task in pending:
                    task.cancel()

    def _scan_s(self) -> float:
        # Leases are renewed from the scan, so it runs at least three times per lease.
        return min(self.s.notify_digest_scan_s, self._lease_ms / 3000)

    async def due(self) -> list[str]:
        """Due digests this process now holds a lease on (claimed, not yet flushing)."""
        now = self._clock_ms()
        room = self.s.notify_concurrency - len(self.flushing)
        if room <= 0:
            return []
        members: list[str] = await self.r.zrangebyscore(  # type: ignore[assignment]
            keys.DIGESTS_DUE, "-inf", now, start=0, num=room)
        claimed = []
        for member in members:
            if member in self.flushing:
                continue
            if int(await self._claim(keys=[keys.DIGESTS_DUE],
                                     args=[member, now, now + self._lease_ms])):
                self.flushing.add(member)
                claimed.append(member)
        return claimed

    async def _renew(self) -> None:
        if not self.flushing:
            return
        lease_until = self._clock_ms() + self._lease_ms
        async with self.r.pipeline(transaction=False) as pipe:
            for member in self.flushing:
                pipe.zadd(keys.DIGESTS_DUE, {member: lease_until}, xx=True, gt=True)
            await pipe.execute()

    async def flush(self, member: str) -> bool:
        """Close and deliver one claimed digest; True when it is done (removed from due)."""
        try:
            return await self._flush(member)
        except TRANSIENT as exc:
            self.stats.inc("redis_errors")
            log.warning("digest %s: redis error, retried after its lease: %s", member, exc)
            return False
        except Exception:
            # The per-digest boundary: a bug on one digest must not stop the others nor the
            # notifier; it stays due and is retried after its lease.
            log.exception("digest %s: unexpected error, retried after its lease", member)
            return False
        finally:
            self.flushing.discard(member)

    async def _flush(self, member: str) -> bool:
        try:
            user, window = parse_digest_id(member)
        except ValueError:
            log.warning("due set: %r is not a digest id, dropped", member)
            await self.r.zrem(keys.DIGESTS_DUE, member)
            return True
        closed_at, *raw_items = await self._close(
            keys=[keys.user_digest(user, window), keys.user_digest_items(user, window)],
            args=[self._clock_ms() * 1000, keys.DELIVERY_TTL_S])
        items = []
        for raw in raw_items:
            try:
                items.append(Item.from_json(raw))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                log.warning("digest %s: unreadable item skipped: %.200r", member, raw)
        if items:
            alert = digest_alert(user, window, items, int(closed_at),
                                 self.s.notify_digest_max_chars)
            if not await self.deliverer.deliver(alert):
                return False
            self.stats.inc("digests")
            log.info("digest %s: %d alerts delivered", member, len(items))
        await self.r.zrem(keys.DIGESTS_DUE, member)
        return True
