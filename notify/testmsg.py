"""Test messages: the text, and the consumer of the dashboard's requests.

The web process never sends anything itself (nor imports notify): its test button appends a
request to ``keys.NOTIFY_TESTS`` and creates the request's result hash
(``keys.notify_test``). The notifier reads the stream in its own group, sends one try to
each of the user's channels through ``Deliverer.send_once`` (the path alerts take, paced
like them) and writes each channel's outcome, errors scrubbed of URL parts, to that hash.
``stormalert user channel test`` (``notify.admin``) sends the same message by the same path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

import orjson
import redis.asyncio as aredis

from notify.deliver import TRANSIENT, Deliverer, backoff_s
from notify.render import Message
from notify.send import Channel, SendOutcome, parse_channels
from notify.settings import NotifySettings
from proto import keys
from proto.bus import aensure_group, aread_group
from proto.events import Fields
from proto.runtime import Stats, wait_event

log = logging.getLogger(__name__)

GROUP = keys.NOTIFY_GROUP
# A request nobody picked up within this time was already reported to its page as "no
# notifier answered"; sending it much later would surprise the user.
MAX_REQUEST_AGE_MS = 60_000
READ_COUNT = 10


def test_message(user: str, channel: Channel) -> Message:
    return Message(title="StormAlert test message",
                   body=f"Test message for {user} on {channel.label()} ({channel.tag!r}). "
                        "Alerts will reach you here.")


async def send_test(deliverer: Deliverer, user: str, channel: Channel) -> SendOutcome:
    """One paced try on one channel, by the path alerts take."""
    limits = deliverer.limits(channel)
    if limits:
        await deliverer.pacer.wait(limits)
    return await deliverer.send_once(channel, test_message(user, channel))


def outcome_json(channel: Channel, outcome: SendOutcome) -> str:
    return orjson.dumps({"channel": channel.label(), "tag": channel.tag, "ok": outcome.ok,
                         "error": "" if outcome.ok else outcome.error}).decode()


class TestRequests:
    """Consumes ``keys.NOTIFY_TESTS`` until stopped; one task per request."""

    __test__ = False  # not a pytest class, whatever its name

    def __init__(self, settings: NotifySettings, r: aredis.Redis, stats: Stats,
                 deliverer: Deliverer) -> None:
        self.s = settings
        self.r = r
        self.stats = stats
        self.deliverer = deliverer
        self._running: set[asyncio.Task[None]] = set()
        self._failures = 0

    async def run(self, stop: asyncio.Event) -> None:
        ready = False
        try:
            while not stop.is_set():
                try:
                    if not ready:
                        await aensure_group(self.r, keys.NOTIFY_TESTS, GROUP, start="0")
                        ready = True
                    entries = await aread_group(self.r, keys.NOTIFY_TESTS, GROUP,
                                                self.s.notify_consumer, count=READ_COUNT,
                                                block_ms=self.s.notify_block_ms)
                    self._failures = 0
                except TRANSIENT as exc:
                    ready = False  # the group may be gone (FLUSHALL): make it again
                    await self._pause(exc, stop)
                    continue
                for eid, fields in entries:
                    task = asyncio.create_task(self._handle(eid, fields), name=f"test {eid}")
                    self._running.add(task)
                    task.add_done_callback(self._running.discard)
        finally:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                for task in self._running:  # stopping now: requests left pending
                    task.cancel()
            if self._running:  # otherwise sends end on their own timeout
                await asyncio.wait(set(self._running))

    async def _pause(self, exc: BaseException, stop: asyncio.Event) -> None:
        self._failures += 1
        delay = backoff_s(self._failures, 0.2, 5.0, random.random())
        log.warning("test requests: redis error (retry in %.1fs): %s", delay, exc)
        await wait_event(stop, delay)

    async def _handle(self, eid: str, fields: Fields) -> None:
        """The per-request boundary: logs everything, raises nothing."""
        try:
            await self._answer(fields)
            await self.r.xack(keys.NOTIFY_TESTS, GROUP, eid)
        except TRANSIENT as exc:
            log.warning("test request %s: redis error, left pending: %s", eid, exc)
        except Exception:
            log.exception("test request %s: unexpected error", eid)
            with contextlib.suppress(*TRANSIENT):
                await self.r.xack(keys.NOTIFY_TESTS, GROUP, eid)

    async def _answer(self, fields: Fields) -> None:
        user, request_id = fields.get("user", ""), fields.get("id", "")
        age_ms = time.time_ns() // 1_000_000 - int(fields.get("at_ms") or 0)
        result = keys.notify_test(user, request_id)
        if not user or not request_id or age_ms > MAX_REQUEST_AGE_MS \
                or not await self.r.exists(result):
            log.info("test request %r of %r: expired or unknown, skipped", request_id, user)
            return
        raw: dict[str, str] = await self.r.hgetall(  # type: ignore[assignment]
            keys.user_channels(user))
        channels, _unreadable = parse_channels(raw)
        await self.r.hset(result, mapping={"picked_ms": time.time_ns() // 1_000_000,
                                           "channels": len(channels)})

        async def one(channel: Channel) -> bool:
            outcome = await send_test(self.deliverer, user, channel)
            await self.r.hset(result, f"ch:{channel.id}", outcome_json(channel, outcome))
            return outcome.ok

        results = await asyncio.gather(*(one(c) for c in channels))
        await self.r.hset(result, "done_ms", time.time_ns() // 1_000_000)
        await self.r.expire(result, keys.NOTIFY_TEST_TTL_S)
        self.stats.inc("test_messages")
        log.info("test message for %s: %d of %d channels accepted it", user, sum(results),
                 len(channels))
