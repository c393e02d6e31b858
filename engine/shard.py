"""One engine shard: reads ``sa:ticks:{i}`` in group ``engine``, evaluates the book, writes
alerts to ``sa:alerts``, keeps the quote cache, and acks ticks only after their alerts are
written. The only module of the engine that touches Redis.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from engine.bars import Bar, BarBuilder
from engine.book import Book, Firing
from proto import bus, keys, store
from proto.events import Alert, CodecError, Tick, decode_ticks, quote_json
from proto.rules import RuleError
from proto.runtime import Runtime
from proto.settings import BaseSettings

log = logging.getLogger(__name__)

RULES_POLL_S = 0.25
CLAIM_EVERY_S = 30.0
TRIM_EVERY_S = 60.0
QUOTES_EVERY_S = 0.25  # the quote cache feeds a dashboard that refreshes once a second


class EngineSettings(BaseSettings):
    shard: int = 0
    shards: int = 2
    engine_read_count: int = 200
    engine_block_ms: int = 200
    engine_claim_idle_ms: int = 60_000


def alert_id(rule_id: str, entry_id: str, index: int) -> str:
    """Derived from the rule and the firing tick (stream entry, position in its batch), so a
    reprocessed tick yields the same id and notify delivers it once."""
    return f"{rule_id}:{entry_id}:{index}"


def to_alert(firing: Firing, tick: Tick, aid: str, at_us: int) -> Alert:
    rule = firing.rule
    return Alert(id=aid, rule=rule.id, user=rule.user, sym=tick.sym, kind=rule.kind,
                 ltp=tick.ltp, ts=tick.ts, rx=tick.rx, at=at_us, msg=firing.msg,
                 channels=list(rule.channels), ref=firing.ref)


class Shard:
    def __init__(self, settings: EngineSettings, r: redis.Redis, runtime: Runtime) -> None:
        if not 0 <= settings.shard < settings.shards:
            raise ValueError(f"shard {settings.shard} is not in 0..{settings.shards - 1}")
        self.s = settings
        self.r = r
        self.rt = runtime
        self.stream = keys.ticks(settings.shard)
        self.consumer = f"engine-{settings.shard}"
        self.book = Book()
        self.bars = BarBuilder()
        self.rules_cursor = "0-0"
        self._next_rules = self._next_claim = self._next_trim = self._next_quotes = 0.0
        self._latest: dict[str, Tick] = {}  # quotes not yet written to the cache

    # Rules -----------------------------------------------------------------------------

    def owns(self, symbol: str) -> bool:
        return keys.shard_for(symbol, self.s.shards) == self.s.shard

    def load_rules(self) -> None:
        last: Any = self.r.xrevrange(keys.RULE_CHANGES, count=1)
        self.rules_cursor = last[0][0] if last else "0-0"
        for rule in store.list_rules(self.r):
            if self.owns(rule.symbol):
                self.book.put(rule)
        log.info("shard %d/%d armed %d rules", self.s.shard, self.s.shards, len(self.book))

    def poll_rule_changes(self) -> None:
        reply: Any = self.r.xread({keys.RULE_CHANGES: self.rules_cursor}, count=1000)
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                self.rules_cursor = entry_id
                try:
                    _op, rule_id, rule = store.decode_rule_change(fields)
                except RuleError as exc:
                    log.error("%s", exc)
                    continue
                if rule is not None and self.owns(rule.symbol):
                    self.book.put(rule)
                else:
                    self.book.remove(rule_id)
                self.rt.stats.inc("rule_changes")

    # Ticks -----------------------------------------------------------------------------

    def process(self, entries: list[bus.Entry]) -> None:
        """Evaluate entries, then write alerts, quotes and acks in one round trip."""
        alerts: list[Alert] = []
        closed: list[tuple[str, Bar]] = []
        latest: dict[str, Tick] = {}
        ticks_seen = 0
        for entry_id, fields in entries:
            try:
                batch = decode_ticks(fields)
            except CodecError as exc:
                self.rt.stats.inc("bad_entries")
                log.warning("skipping malformed tick entry %s: %s", entry_id, exc)
                continue
            ticks_seen += len(batch)
            for index, tick in enumerate(batch):
                latest[tick.sym] = tick
                bar = self.bars.on_tick(tick.sym, tick.ltp, tick.ts, tick.vol)
                if bar is not None:
                    closed.append((tick.sym, bar))
                firings = self.book.on_tick(tick.sym, tick.ltp, tick.ts, tick.pc, tick.vol)
                if firings:
                    at_us = time.time_ns() // 1000
                    alerts.extend(to_alert(f, tick, alert_id(f.rule.id, entry_id, index), at_us)
                                  for f in firings)
        self._latest.update(latest)
        pipe = self.r.pipeline(transaction=False)
        for alert in alerts:
            bus.publish_alert_once(pipe, alert.id, alert.to_fields())
        first_bar = len(pipe)
        for sym, bar in closed:
            pipe.xadd(keys.bars(sym), bar.to_fields(), id=f"{bar.start}-0",  # type: ignore[arg-type]
                      maxlen=keys.BARS_MAXLEN, approximate=True)
        bars_end = len(pipe)
        self._queue_quotes(pipe)
        if entries:
            pipe.xack(self.stream, keys.ENGINE_GROUP, *[e[0] for e in entries])
        results = pipe.execute(raise_on_error=False)
        for n, result in enumerate(results):
            # A bar written before (its ticks reprocessed) is refused by its id: that is fine.
            if isinstance(result, Exception) and not first_bar <= n < bars_end:
                raise result
        for alert in alerts:
            if self.book.by_id.get(alert.rule) is None:
                self._retire(alert.rule)
        self.rt.stats.inc("ticks", ticks_seen)
        self.rt.stats.inc("alerts", len(alerts))

    def _queue_quotes(self, pipe: redis.client.Pipeline) -> bool:
        """Queue the latest quotes for the cache when due; True when something was queued."""
        now = time.monotonic()
        if not self._latest or now < self._next_quotes:
            return False
        self._next_quotes = now + QUOTES_EVERY_S
        open_bars = self.bars.open
        quotes = {sym: quote_json(tick, open_bars[sym].as_list() if sym in open_bars else None)
                  for sym, tick in self._latest.items()}
        self._latest.clear()
        pipe.hset(keys.QUOTES, mapping=quotes)  # type: ignore[arg-type]
        return True

    def _retire(self, rule_id: str) -> None:
        """A once-rule that fired stays disarmed across restarts."""
        rule = store.get_rule(self.r, rule_id)
        if rule is not None and rule.frequency == "once" and rule.active:
            store.set_rule_active(self.r, rule_id, False)

    # Loop ------------------------------------------------------------------------------

    def housekeeping(self) -> None:
        now = time.monotonic()
        if now >= self._next_rules:
            self._next_rules = now + RULES_POLL_S
            self.poll_rule_changes()
        if now >= self._next_claim:
            self._next_claim = now + CLAIM_EVERY_S
            claimed = bus.claim_stale(self.r, self.stream, keys.ENGINE_GROUP, self.consumer,
                                      min_idle_ms=self.s.engine_claim_idle_ms)
            if claimed:
                log.info("claimed %d entries left pending by another consumer", len(claimed))
                self.process(claimed)
        pipe = self.r.pipeline(transaction=False)
        if self._queue_quotes(pipe):
            pipe.execute()
        if now >= self._next_trim:
            self._next_trim = now + TRIM_EVERY_S
            oldest_ms = int(time.time() * 1000) - keys.ALERTS_MAX_AGE_DAYS * 86_400_000
            self.r.xtrim(keys.ALERTS, minid=f"{oldest_ms}-0", approximate=True)
        self.rt.stats.gauges.update(shard=self.s.shard, shards=self.s.shards, rules=len(self.book),
                                    rule_errors=self.book.errors)
        self.rt.tick()

    def redo_pending(self) -> None:
        """Entries this consumer read but never acked (it stopped or lost Redis): redo them."""
        while pending := bus.read_group(self.r, self.stream, keys.ENGINE_GROUP, self.consumer,
                                        count=self.s.engine_read_count, block_ms=None,
                                        start="0"):
            self.process(pending)

    def run(self) -> None:
        bus.ensure_group(self.r, self.stream, keys.ENGINE_GROUP, start="$")
        self.load_rules()
        catch_up = True
        while not self.rt.stopping:
            try:
                if catch_up:
                    self.redo_pending()
                    catch_up = False
                self.housekeeping()
                entries = bus.read_group(self.r, self.stream, keys.ENGINE_GROUP, self.consumer,
                                         count=self.s.engine_read_count,
                                         block_ms=self.s.engine_block_ms)
                if entries:
                    self.process(entries)
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
                log.warning("redis unavailable (%s); retrying in 1 s", exc)
                self.rt.stats.inc("redis_errors")
                time.sleep(1.0)
                catch_up = True
        self.rt.stop_beat()
        log.info("shard %d stopped", self.s.shard)
