"""Delivering one alert: fan out to the owner's matching channels, each isolated, paced,
retried with capped exponential backoff and jitter, recorded once sent, dead-lettered when
given up.

Webhooks are sent on the event loop over pooled connections (``notify.webhook``); every
other scheme goes through apprise in our own thread pool. A 429 (Telegram's ``retry_after``,
or a ``Retry-After`` header) counts as one failed try, like any failure, so a channel that
keeps answering 429 is still given up after ``notify_max_tries``; but the next try waits at
least the time asked for (capped at ``notify_retry_after_max_s``), and so does every later
send to the same chat or from the same sender number, since the service throttles those, not
the one message. A Telegram bot's other chats are not held (the per-bot pacing keeps the bot
under its own limit).

``Deliverer.deliver`` returns True when every channel is sent or given up (the alert may be
acked) and False when Redis failed part-way (leave the alert pending; it comes back).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Literal

import redis
import redis.asyncio as aredis

from notify import webhook
from notify.pacing import Limit, Pacer
from notify.records import Records, alert_dead_fields, dead_letter, now_us
from notify.render import Message, render
from notify.send import (
    Channel,
    SendOutcome,
    pace_limits,
    parse_channels,
    scrub,
    select,
    send_blocking,
)
from notify.settings import NotifySettings
from proto import keys
from proto.delivery import Record, delivery_log
from proto.events import Alert
from proto.runtime import Stats

log = logging.getLogger(__name__)

SendFn = Callable[[Channel, Message, float], SendOutcome]
TRANSIENT = (redis.RedisError, ConnectionError, OSError)
LEASE_SLACK_S = 2.0


def backoff_s(failures: int, base_s: float, cap_s: float, rand: float) -> float:
    """Delay after ``failures`` failed tries: the ceiling doubles from ``base_s`` up to
    ``cap_s``; the delay is drawn in [ceiling/2, ceiling] ("equal jitter", ``rand`` in [0, 1])."""
    ceiling = min(cap_s, base_s * 2 ** max(failures - 1, 0))
    return ceiling / 2 * (1 + rand)


class KeyedLock:
    """One asyncio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class Deliverer:
    def __init__(self, settings: NotifySettings, r: aredis.Redis, stats: Stats, *,
                 send: SendFn | None = None,
                 rand: Callable[[], float] = random.random) -> None:
        """``send``, when given (tests), replaces every path, webhooks included."""
        self.s = settings
        self.r = r
        self.stats = stats
        self.records = Records(r, settings.notify_consumer)
        self._send: SendFn = send or partial(send_blocking, api_base=settings.notify_api_base)
        # Parsed channel URLs: a webhook's request and any channel's pacing keys.
        self._plugins = webhook.PluginCache()
        self._webhooks = (webhook.WebhookSender(settings.notify_webhook_connections,
                                                self._plugins)
                          if send is None else None)
        self.pacer = Pacer()
        self._rand = rand
        self._alerts = KeyedLock()
        self._lease_ms = int((settings.notify_send_timeout_s + LEASE_SLACK_S) * 1000)
        # Our own pool: the loop's default one has min(32, cpus + 4) threads, 6 on a 2-core
        # machine, and slow channels would queue behind each other in it.
        self._pool = ThreadPoolExecutor(settings.notify_send_threads,
                                        thread_name_prefix="notify-send")

    def close(self) -> None:
        """Stop the send threads; a send still running finishes on its socket timeout."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def aclose(self) -> None:
        """``close`` and the webhook connections too."""
        self.close()
        if self._webhooks is not None:
            await self._webhooks.aclose()

    def limits(self, channel: Channel) -> list[Limit]:
        plugin = self._plugins.get(channel.url)
        return [] if plugin is None else pace_limits(plugin, channel.scheme, self.s)

    async def deliver(self, alert: Alert) -> bool:
        # Two entries with one alert id (an engine redelivery) are handled one after the
        # other, so the second finds the first's records and sends nothing.
        async with self._alerts.hold(alert.id):
            # One round trip for both reads: at 1000 alerts/s every command counts.
            async with self.r.pipeline(transaction=False) as pipe:
                pipe.hgetall(keys.user_channels(alert.user))
                pipe.hgetall(keys.delivery(alert.id))
                raw_channels, raw_records = await pipe.execute()
            channels, unreadable = parse_channels(raw_channels)
            for cid in unreadable:
                log.warning("user %s: channel %s record unreadable, skipped", alert.user, cid)
            chosen = select(channels, alert.channels)
            if not chosen:
                self.stats.inc("no_channel")
                log.info("alert %s: user %s has no channel tagged %s", alert.id, alert.user,
                         ",".join(alert.channels))
                return True
            message = render(alert, self.s.dashboard_url)
            previous = delivery_log(raw_records)[1]
            todo = []
            for channel in chosen:
                prior = previous.get(channel.id)
                if prior is not None and prior.status == "sent":
                    self.stats.inc("skipped_duplicate")
                else:
                    todo.append((channel, prior))
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self._channel(alert, ch, message, prior),
                                        name=f"send {alert.id} {ch.label()}")
                         for ch, prior in todo]
            return all(t.result() for t in tasks)

    async def _channel(self, alert: Alert, channel: Channel, message: Message,
                       prior: Record | None) -> bool:
        """The per-channel boundary: never raises except on cancellation."""
        try:
            await self._channel_tries(alert, channel, message, prior)
            return True
        except TRANSIENT as exc:
            self.stats.inc("redis_errors")
            log.warning("alert %s %s: redis error, left for redelivery: %s",
                        alert.id, channel.label(), exc)
            return False

    async def _channel_tries(self, alert: Alert, channel: Channel, message: Message,
                             prior: Record | None) -> None:
        attempts = prior.attempts if prior is not None else 0
        limits = self.limits(channel)
        for try_no in range(1, self.s.notify_max_tries + 1):
            attempts += 1
            if limits and await self.pacer.wait(limits) > 0:
                self.stats.inc("paced")
            if await self._take(alert, channel, attempts) == "sent":
                self.stats.inc("skipped_duplicate")
                return
            started = time.monotonic()
            outcome = await self.send_once(channel, message)
            if outcome.ok:
                await self._record_sent(alert, channel, attempts, started)
                return
            if outcome.permanent or try_no == self.s.notify_max_tries:
                await self._give_up(alert, channel, attempts, outcome.error)
                return
            self.stats.inc("retries")
            delay = backoff_s(try_no, self.s.notify_backoff_base_s, self.s.notify_backoff_cap_s,
                              self._rand())
            if outcome.retry_after_s is not None:
                asked_s = min(outcome.retry_after_s, self.s.notify_retry_after_max_s)
                self.pacer.pause(limits, asked_s)
                delay = max(delay, asked_s)
            log.info("alert %s %s: try %d failed (%s), retry in %.2fs", alert.id,
                     channel.label(), try_no, outcome.error, delay)
            await self.records.write(alert.id, channel.id,
                                     Record("pending", attempts, outcome.error))
            await asyncio.sleep(delay)

    async def _take(self, alert: Alert, channel: Channel,
                    attempts: int) -> Literal["go", "sent"]:
        """Hold the channel's lease for one try; wait while another notifier holds it."""
        while True:
            lease_until_ms = time.time_ns() // 1_000_000 + self._lease_ms
            winner = await self.records.write(
                alert.id, channel.id, Record("pending", attempts, lease_until_ms=lease_until_ms))
            if winner is None:
                return "go"
            if winner.status == "sent":
                return "sent"
            wait_s = (winner.lease_until_ms - time.time_ns() // 1_000_000) / 1000
            await asyncio.sleep(min(max(wait_s, 0.05), 1.0))

    async def send_once(self, channel: Channel, message: Message) -> SendOutcome:
        """One try on one channel, by the path alerts take; never raises (a failure is an
        outcome, its error scrubbed of URL parts). Test messages are sent through it too."""
        timeout_s = self.s.notify_send_timeout_s
        if self._webhooks is not None and webhook.handles(channel.url):
            try:
                return await self._webhooks.send(channel, message, timeout_s)
            except Exception as exc:  # a bug in our sender is a failed try, never a crash
                return SendOutcome(False, scrub(f"{type(exc).__name__}: {exc}", channel.url))
        try:
            # The thread keeps running past the timeout, but the plugin's own socket
            # timeouts are set to the same value, so it ends soon after.
            sending = asyncio.get_running_loop().run_in_executor(
                self._pool, self._send, channel, message, timeout_s)
            async with asyncio.timeout(timeout_s + 1.0):  # not wait_for: runtime.wait_event
                return await sending
        except TimeoutError:
            return SendOutcome(False, f"no answer within {timeout_s:g}s")
        except Exception as exc:  # a plugin that raises is a failed try, never a crash
            return SendOutcome(False, scrub(f"{type(exc).__name__}: {exc}", channel.url))

    async def _record_sent(self, alert: Alert, channel: Channel, attempts: int,
                           started: float) -> None:
        at = now_us()
        latency_ms = round((at - alert.at) / 1000, 1)
        record = Record("sent", attempts, latency_ms=latency_ms, at=at)
        # The message is out: a Redis outage now must not leave the record pending, or the
        # channel would be sent again. Keep trying, however long Redis is down or refuses
        # writes (maxmemory): given up, the alert is delivered again and the channel gets it
        # twice for certain. Past our lease another notifier may take the channel if it can
        # write where we cannot (a partition); giving up would not prevent that either.
        # (Only a stop, which cancels this, leaves the record pending.)
        for failures in itertools.count(1):
            try:
                winner = await self.records.write(alert.id, channel.id, record)
                break
            except TRANSIENT as exc:
                pause_s = backoff_s(failures, 0.05, 1.0, self._rand())
                log.warning("alert %s %s: sent, recording it failed (%s), again in %.2fs",
                            alert.id, channel.label(), exc, pause_s)
                await asyncio.sleep(pause_s)
        if winner is not None:
            log.warning("alert %s %s: sent, but the record was already %s", alert.id,
                        channel.label(), winner.status)
        self.stats.inc("sent")
        log.info("alert %s %s: sent (try %d, %.0f ms send, %.1f ms since alert)", alert.id,
                 channel.label(), attempts, (time.monotonic() - started) * 1000, latency_ms)

    async def _give_up(self, alert: Alert, channel: Channel, attempts: int, error: str) -> None:
        reason = f"{channel.scheme} channel gave up after {attempts} tries: {error}"
        await self.records.write(alert.id, channel.id, Record("failed", attempts, error))
        await dead_letter(self.r, alert_dead_fields(alert, channel.id, reason, attempts))
        self.stats.inc("failed")
        self.stats.inc("dead")
        log.warning("alert %s %s: %s", alert.id, channel.label(), reason)
