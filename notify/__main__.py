"""``python -m notify``: deliver alerts from ``sa:alerts`` to users' channels.

The first SIGTERM/SIGINT stops reading and lets in-flight alerts finish (up to
``STORMALERT_NOTIFY_DRAIN_TIMEOUT_S``); a second one stops at once. Unfinished alerts stay
pending in the consumer group and are delivered after a restart. ``--check`` exits 0 when
this notifier's heartbeat (``heartbeat_name`` of its consumer) is fresh, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from notify.deliver import Deliverer
from notify.send import warm_up
from notify.service import Notifier
from notify.settings import NotifySettings
from proto import health, keys
from proto.bus import aconnect, redact_url
from proto.runtime import Stats, format_stats, heartbeat_loop, run_async, setup_logging
from proto.settings import load

PROCESS = "notify"
DEFAULT_CONSUMER = NotifySettings.model_fields["notify_consumer"].default
COUNTERS = ("alerts", "sent", "failed", "skipped_duplicate", "retries", "dead", "poison",
            "no_channel", "acked", "claimed", "redis_errors", "folded", "digests", "paced",
            "test_messages")

DESCRIPTION = "Deliver alerts from sa:alerts to users' channels (apprise)."

log = logging.getLogger("notify")


async def serve(settings: NotifySettings) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    main_task = asyncio.current_task()

    def on_signal(signum: int) -> None:
        if stop.is_set() and main_task is not None:
            log.info("second %s: stopping now", signal.Signals(signum).name)
            main_task.cancel()
            return
        log.info("%s: draining", signal.Signals(signum).name)
        stop.set()

    # Replaces run_async's handlers, which would cancel at once: a drain needs a stop flag.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    r = aconnect(settings.redis_url)
    name = heartbeat_name(settings.notify_consumer)
    stats = Stats(name)
    for counter in COUNTERS:
        stats.inc(counter, 0)
    log.info("consumer %s of group %s on %s, redis %s", settings.notify_consumer,
             keys.NOTIFY_GROUP, keys.ALERTS, redact_url(settings.redis_url))
    await asyncio.to_thread(warm_up)
    deliverer = Deliverer(settings, r, stats)
    try:
        async with asyncio.TaskGroup() as tg:
            beat = tg.create_task(
                heartbeat_loop(name, r, stats, settings.stats_interval_s), name="heartbeat")
            try:
                await Notifier(settings, r, stats, deliverer).run(stop)
            finally:
                beat.cancel()
    finally:
        await deliverer.aclose()
        await r.aclose()
        log.info("stopped; final stats %s", format_stats(stats.counters, {}))


def heartbeat_name(consumer: str) -> str:
    """``notify`` for the default consumer (a single notifier); else the consumer's own name
    (``notify-`` put before it unless it starts so), so that each of several notifiers beats
    under its own name and its ``--check`` watches that one, not any notifier's."""
    if consumer == DEFAULT_CONSUMER:
        return PROCESS
    return consumer if consumer.startswith(f"{PROCESS}-") else f"{PROCESS}-{consumer}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m notify", description=DESCRIPTION)
    parser.add_argument("--consumer", help="consumer name in group 'notify' (default notify-1)")
    parser.add_argument("--check", action="store_true", help="exit 0 if a heartbeat is fresh")
    args = parser.parse_args(argv)
    settings = load(NotifySettings, notify_consumer=args.consumer)
    if args.check:
        return health.run_check(settings.redis_url, heartbeat_name(settings.notify_consumer))
    setup_logging(heartbeat_name(settings.notify_consumer), settings.log_level)
    return run_async(lambda: serve(settings))


if __name__ == "__main__":
    sys.exit(main())
