"""The consumer loop: read ``sa:alerts`` in group ``notify``, deliver, ack when done.

Order of reading: this consumer's own pending entries first (a restart resumes its work),
then, interleaved with new entries (``>``), entries other consumers left idle longer than
``notify_claim_idle_ms`` (they died). Entries this process holds are kept fresh with
``XCLAIM ... JUSTID`` so a slow retry sequence is never taken over by another notifier.

An entry is acked only when every channel is sent or given up, when it is poison
(unreadable: dead-lettered first), or when storm control or quiet hours folded it into a
digest (``notify.digest``; the digest is delivered by the flusher this loop runs
alongside). On stop, no new entry is read; in-flight alerts get ``notify_drain_timeout_s``
to finish and are left pending (unacked) after that.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time

import redis
import redis.asyncio as aredis

from notify.deliver import TRANSIENT, Deliverer, backoff_s
from notify.digest import DigestFlusher, Policy
from notify.records import dead_fields, dead_letter
from notify.settings import NotifySettings
from notify.testmsg import TestRequests
from proto import keys
from proto.bus import Entry, aensure_group, aread_group
from proto.events import Alert, CodecError, Fields
from proto.runtime import Stats, wait_event

log = logging.getLogger(__name__)

STREAM = keys.ALERTS
GROUP = keys.NOTIFY_GROUP


class Notifier:
    def __init__(self, settings: NotifySettings, r: aredis.Redis, stats: Stats,
                 deliverer: Deliverer, *, policy: Policy | None = None,
                 flusher: DigestFlusher | None = None) -> None:
        self.s = settings
        self.r = r
        self.stats = stats
        self.consumer = settings.notify_consumer
        self.deliverer = deliverer
        self.policy = policy or Policy(settings, r)
        self.flusher = flusher or DigestFlusher(settings, r, stats, deliverer)
        self.tests = TestRequests(settings, r, stats, deliverer)  # the dashboard's button
        self.held: set[str] = set()  # entry ids read or claimed and not yet finished
        self._slots = asyncio.Semaphore(settings.notify_concurrency)
        self._running: set[asyncio.Task[None]] = set()
        self._slow: set[str] = set()  # entries in the slow lane: they hold no slot
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        self._redis_failures = 0

    # The loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then drain. Redis outages are waited out."""
        async with asyncio.TaskGroup() as tg:
            keepalive = tg.create_task(self._keepalive(), name="notify keepalive")
            # Digests are flushed even before the group is ready: they need no stream.
            tg.create_task(self.flusher.run(stop), name="notify digests")
            tg.create_task(self.tests.run(stop), name="notify test messages")
            try:
                await self._until_ready(stop)
                await self._own_pending(tg, stop)
                while not stop.is_set():
                    await self._step(tg, stop)
            finally:
                await self._drain()
                keepalive.cancel()

    async def _until_ready(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await aensure_group(self.r, STREAM, GROUP, start="0")
                return
            except TRANSIENT as exc:
                await self._redis_trouble("creating the consumer group", exc, stop)

    async def _own_pending(self, tg: asyncio.TaskGroup, stop: asyncio.Event) -> None:
        """Re-read what this consumer read before a restart and never acked."""
        cursor = "0"
        while not stop.is_set():
            try:
                entries = await aread_group(self.r, STREAM, GROUP, self.consumer,
                                            count=self.s.notify_concurrency, block_ms=0,
                                            start=cursor)
            except TRANSIENT as exc:
                await self._redis_trouble("reading own pending entries", exc, stop)
                continue
            if not entries:
                return
            log.info("resuming %d pending entries of %s", len(entries), self.consumer)
            cursor = entries[-1][0]
            await self._dispatch(tg, entries)

    async def _step(self, tg: asyncio.TaskGroup, stop: asyncio.Event) -> None:
        await self._wait_for_slot()
        try:
            if time.monotonic() >= self._next_claim:
                await self._dispatch(tg, await self._claim_page())
            free = self._free_slots()
            if free and not stop.is_set():
                entries = await aread_group(self.r, STREAM, GROUP, self.consumer, count=free,
                                            block_ms=self.s.notify_block_ms)
                await self._dispatch(tg, entries)
            self._redis_failures = 0
        except TRANSIENT as exc:
            if isinstance(exc, redis.ResponseError) and "NOGROUP" in str(exc):
                # The stream or group was deleted under us (FLUSHALL, XGROUP DESTROY).
                log.warning("consumer group %s is gone, creating it again", GROUP)
                await self._until_ready(stop)
            else:
                await self._redis_trouble("reading alerts", exc, stop)

    async def _claim_page(self) -> list[Entry]:
        """One bounded page of XAUTOCLAIM; a full sweep of the group's pending list ends
        when the cursor wraps, and the next sweep starts ``notify_claim_interval_s`` later.
        (proto.bus.aclaim_stale sweeps everything at once, unbounded after a long outage.)"""
        cursor, entries, _deleted = await self.r.xautoclaim(
            STREAM, GROUP, self.consumer, min_idle_time=self.s.notify_claim_idle_ms,
            start_id=self._claim_cursor, count=max(self._free_slots(), 1))
        self._claim_cursor = cursor
        if cursor == "0-0":
            self._next_claim = time.monotonic() + self.s.notify_claim_interval_s
        claimed = [(eid, fields) for eid, fields in entries
                   if fields is not None and eid not in self.held]
        if claimed:
            log.info("claimed %d entries idle > %d ms", len(claimed), self.s.notify_claim_idle_ms)
            self.stats.inc("claimed", len(claimed))
        return claimed

    # Per entry ----------------------------------------------------------------------------

    async def _dispatch(self, tg: asyncio.TaskGroup, entries: list[Entry]) -> None:
        fresh = [(eid, fields) for eid, fields in entries if eid not in self.held]
        self.held.update(eid for eid, _ in fresh)
        self.stats.gauges["in_flight"] = len(self.held)
        for eid, fields in fresh:
            await self._slots.acquire()
            task = tg.create_task(self._handle(eid, fields), name=f"alert {eid}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _handle(self, eid: str, fields: Fields) -> None:
        """The per-message boundary: logs and contains everything except cancellation."""
        slow_lane = asyncio.get_running_loop().call_later(
            self.s.notify_slow_after_s, self._to_slow_lane, eid)
        try:
            try:
                alert = Alert.from_fields(fields)
            except CodecError as exc:
                await self._poison(eid, fields, str(exc))
                return
            self.stats.inc("alerts")
            # A Redis error part-way (Redis restarting, refusing writes, a pooled connection
            # to a server that restarted) is retried here, with backoff: left pending, the
            # entry would wait notify_claim_idle_ms (30 s) for the claim to take it again.
            # Past that time it is left pending, and the claim has it.
            give_up_at = time.monotonic() + self.s.notify_claim_idle_ms / 1000
            for failures in itertools.count(1):
                try:
                    if await self._decide_and_deliver(eid, alert):
                        return
                    reason = "a channel's record could not be written"
                except TRANSIENT as exc:
                    self.stats.inc("redis_errors")
                    reason = str(exc)
                delay = backoff_s(failures, 0.2, 5.0, random.random())
                if time.monotonic() + delay > give_up_at:
                    log.warning("entry %s: redis error, left pending: %s", eid, reason)
                    return
                log.warning("entry %s: redis error, again in %.1fs: %s", eid, delay, reason)
                await asyncio.sleep(delay)
        except Exception as exc:
            # A bug on one alert must not loop forever nor stop the others: dead-letter it.
            log.exception("entry %s: unexpected error", eid)
            await self._poison(eid, fields, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            slow_lane.cancel()
            self.held.discard(eid)
            self.stats.gauges["in_flight"] = len(self.held)
            if eid in self._slow:
                self._slow.discard(eid)
                self.stats.gauges["slow_lane"] = len(self._slow)
            else:
                self._slots.release()

    def _to_slow_lane(self, eid: str) -> None:
        """An alert still being delivered after notify_slow_after_s (a channel answering
        slowly, or retrying after a failure) gives its slot back, so it does not hold up the
        alerts behind it: with slots only, a channel taking 10 s a send and more alerts
        than slots in 10 s stopped every other user's alerts. It goes on in the background
        (still held and kept from other notifiers' claims); at most notify_slow_lane do."""
        if eid in self.held and len(self._slow) < self.s.notify_slow_lane:
            self._slow.add(eid)
            self._slots.release()
            self.stats.gauges["slow_lane"] = len(self._slow)

    async def _decide_and_deliver(self, eid: str, alert: Alert) -> bool:
        """Fold or deliver, then ack; False when a channel's delivery could not be recorded
        (the alert must be handled again: its records make that send nothing twice)."""
        if (await self.policy.decide(alert)).folded:
            # In a digest now (recorded before this ack): the flusher delivers it.
            self.stats.inc("folded")
        elif not await self.deliverer.deliver(alert):
            return False
        await self.r.xack(STREAM, GROUP, eid)
        self.stats.inc("acked")
        return True

    async def _poison(self, eid: str, fields: Fields, reason: str) -> None:
        try:
            await dead_letter(self.r, dead_fields(fields, reason, entry=eid))
            await self.r.xack(STREAM, GROUP, eid)
        except TRANSIENT as exc:
            log.warning("entry %s: could not dead-letter yet: %s", eid, exc)
            return
        self.stats.inc("poison")
        self.stats.inc("dead")
        log.warning("entry %s: poison message dead-lettered: %s", eid, reason)

    # Housekeeping -------------------------------------------------------------------------

    def _free_slots(self) -> int:
        return self.s.notify_concurrency - len(self._running) + len(self._slow)

    async def _wait_for_slot(self) -> None:
        # Bounded wait so a stop request is noticed while every slot is busy.
        if self._free_slots() <= 0:
            await asyncio.wait(set(self._running), timeout=0.5,
                               return_when=asyncio.FIRST_COMPLETED)

    async def _keepalive(self) -> None:
        """Reset the idle time of held entries so no other notifier claims them."""
        interval_s = max(self.s.notify_claim_idle_ms / 3000, 0.1)
        while True:
            await asyncio.sleep(interval_s)
            held = sorted(self.held)
            for start in range(0, len(held), 500):
                try:
                    await self.r.xclaim(STREAM, GROUP, self.consumer, 0,
                                        held[start:start + 500],  # type: ignore[arg-type]
                                        justid=True)
                except TRANSIENT as exc:
                    log.warning("keepalive of held entries failed: %s", exc)
                    break

    async def _drain(self) -> None:
        if not self._running:
            return
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            pending = set(self._running)  # a second signal: stop now, leave all pending
        else:
            log.info("draining %d in-flight alerts (up to %.1fs)", len(self._running),
                     self.s.notify_drain_timeout_s)
            _done, pending = await asyncio.wait(set(self._running),
                                                timeout=self.s.notify_drain_timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("%d alerts left pending (unacked) at stop", len(pending))

    async def _redis_trouble(self, doing: str, exc: BaseException, stop: asyncio.Event) -> None:
        self._redis_failures += 1
        self.stats.inc("redis_errors")
        delay = backoff_s(self._redis_failures, 0.2, 5.0, random.random())
        log.warning("redis error %s (retry in %.1fs): %s", doing, delay, exc)
        await wait_event(stop, delay)
