"""One engine shard: reads ``sa:ticks:{i}`` in group ``engine``, evaluates the book, writes
alerts to ``sa:alerts``, bars and the quote cache. With ``engine.checkpointer`` the only
modules of the engine that touch Redis.

Crash safety: alerts are written at once, but tick entries are acked only together with a
checkpoint of the rule state that covers them (one MULTI, every ``engine_checkpoint_s``,
written by a forked child so the shard does not stand still while 50k rules serialise). A
restarted shard restores the checkpoint and redoes its unacked entries: the same ticks meet
the same state, so it makes the same firings with the same alert ids, and ids already
written are skipped.
"""

from __future__ import annotations

import gc
import itertools
import logging
import resource
import time
from datetime import date
from pathlib import Path
from typing import Any

import redis

from engine import checkpoint
from engine.bars import Bar, BarBuilder
from engine.book import Book, Firing
from engine.checkpointer import Checkpointer, Fenced, client_like
from engine.session import Session
from proto import bus, keys, store, topology
from proto.events import Alert, CodecError, Tick, decode_ticks, quote_json
from proto.rules import RuleError
from proto.runtime import Runtime
from proto.settings import BaseSettings

log = logging.getLogger(__name__)

RULES_POLL_S = 0.25
CLAIM_EVERY_S = 30.0
TRIM_EVERY_S = 60.0
QUOTES_EVERY_S = 0.25  # the quote cache feeds a dashboard that refreshes once a second
# Quotes written per loop at most (by the flush before the blocking read, none by the flush
# of evaluated ticks). Building and HSETting all due quotes at once (~1250 a shard at 10k
# ticks/s) held the shard ~5-10 ms every QUOTES_EVERY_S, and ticks arriving meanwhile waited:
# the main part of the p99 tick→alert latency. A chunk of this size takes ~0.5-1 ms; while
# quotes are due the loop's read does not block, so the chunks follow each other when idle.
QUOTES_PER_FLUSH = 100


class EngineSettings(BaseSettings):
    shard: int = 0
    shards: int = 2
    engine_read_count: int = 200
    engine_block_ms: int = 200
    engine_claim_idle_ms: int = 60_000
    engine_checkpoint_s: float = 2.0
    # Write checkpoints from a forked child (off the hot path); False writes them inline.
    engine_checkpoint_fork: bool = True
    # A child writing longer is killed (it runs niced: a busy machine slows it down).
    engine_checkpoint_timeout_s: float = 300.0
    # At most this share of a core for checkpoint children: on a small machine the child
    # takes CPU from the shards (50k rules: ~0.6 s CPU), so expensive checkpoints space out.
    engine_checkpoint_max_cpu_share: float = 0.1
    # Exchange holidays (YYYY-MM-DD, a JSON list in the environment) for market-hours rules.
    engine_holidays: tuple[date, ...] = ()


def peak_rss_mb() -> int:
    """This process's peak resident size: VmHWM, not getrusage's ru_maxrss, which Linux
    carries over an exec from the parent that forked us (a big parent, a big figure)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    except (OSError, ValueError, IndexError):
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def alert_id(rule_id: str, entry_id: str, index: int) -> str:
    """Derived from the rule and the firing tick (stream entry, position in its batch), so a
    reprocessed tick yields the same id and notify delivers it once."""
    return f"{rule_id}:{entry_id}:{index}"


def to_alert(firing: Firing, tick: Tick, aid: str, at_us: int) -> Alert:
    rule = firing.rule
    return Alert(id=aid, rule=rule.id, user=rule.user, sym=tick.sym, kind=rule.kind,
                 ltp=tick.ltp, ts=tick.ts, rx=tick.rx, at=at_us, msg=firing.msg,
                 channels=list(rule.channels), ref=firing.ref)


def changes_added(info: Any) -> int | None:
    """How many entries were ever added to a stream, from its XINFO STREAM reply; None when
    the stream does not exist (an error reply) or Redis is older than 7.0."""
    if not isinstance(info, dict) or "entries-added" not in info:
        return None
    return int(info["entries-added"])


class Shard:
    def __init__(self, settings: EngineSettings, r: redis.Redis, runtime: Runtime) -> None:
        if not 0 <= settings.shard < settings.shards:
            raise ValueError(f"shard {settings.shard} is not in 0..{settings.shards - 1}")
        self.s = settings
        self.r = r
        self.rt = runtime
        self.stream = keys.ticks(settings.shard)
        self.state_key = keys.engine_state(settings.shard)
        self.consumer = f"engine-{settings.shard}"
        self.book = Book(Session(frozenset(settings.engine_holidays)))
        self.bars = BarBuilder()
        self.rules_cursor = "0-0"
        self._rules_read = 0  # the cursor's number in sa:rules:changes (1 = the first ever)
        self._next_rules = self._next_claim = self._next_trim = self._next_quotes = 0.0
        self._next_checkpoint = 0.0
        self._latest: dict[str, Tick] = {}  # quotes not yet due for the cache
        self._quotes_due: dict[str, Tick] = {}  # due, written QUOTES_PER_FLUSH at a time
        self._unacked: list[str] = []  # processed entries, acked with the next checkpoint
        self.ckpt = Checkpointer(r, self.state_key, self.stream, keys.ENGINE_GROUP,
                                 settings.engine_checkpoint_timeout_s)
        self._out_alerts: list[Alert] = []  # evaluated, not yet written
        self._out_bars: list[tuple[str, Bar]] = []

    # Rules -----------------------------------------------------------------------------

    def owns(self, symbol: str) -> bool:
        return keys.shard_for(symbol, self.s.shards) == self.s.shard

    def load_rules(self) -> None:
        """The book brought to the stored rules (at start: every stored rule armed). New and
        changed ones are armed (a changed one starts over, as when its change is read),
        removed and paused ones dropped, unchanged ones kept with their state; the cursor
        moves to the newest change."""
        self._mark_rules_cursor()
        stored = {rule.id: rule for rule in store.list_rules(self.r, symbol_filter=self.owns)}
        for rule_id in self.book.by_id.keys() - stored.keys():
            self.book.remove(rule_id)
        for rule in stored.values():
            armed = self.book.by_id.get(rule.id)
            if armed is None or armed.rule != rule:
                self.book.put(rule)
        log.info("shard %d/%d armed %d rules", self.s.shard, self.s.shards, len(self.book))

    def _mark_rules_cursor(self) -> None:
        """The newest change becomes the cursor, with its number in the stream (how many
        changes were ever added): both from one XINFO STREAM."""
        try:
            info: Any = self.r.xinfo_stream(keys.RULE_CHANGES)
        except redis.ResponseError:  # no change was ever written
            info = None
        self.rules_cursor = info["last-generated-id"] if info else "0-0"
        self._rules_read = changes_added(info) or 0

    def poll_rule_changes(self) -> None:
        """Apply the rule changes after the cursor. ``sa:rules:changes`` is capped
        (``RULE_CHANGES_MAXLEN``): when changes after the cursor were trimmed before this
        shard read them (a burst of imports, a shard stopped a while), the book is brought to
        the stored rules instead (``load_rules``)."""
        # In one round trip, not one MULTI (a cluster client's pipeline of a MULTI answers
        # otherwise): a change added in between grows the count and the length alike.
        pipe = self.r.pipeline(transaction=False)
        pipe.xread({keys.RULE_CHANGES: self.rules_cursor}, count=1000)
        pipe.xinfo_stream(keys.RULE_CHANGES)
        reply, info = pipe.execute(raise_on_error=False)
        if isinstance(reply, Exception):
            raise reply
        added = changes_added(info)
        # The oldest change still in the stream is number added - length + 1.
        if added is not None and added - int(info["length"]) > self._rules_read:
            log.warning("rule changes after %s were trimmed before shard %d read them; "
                        "reloading every rule", self.rules_cursor, self.s.shard)
            self.rt.stats.inc("rule_resyncs")
            self.load_rules()
            return
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                self.rules_cursor = entry_id
                self._rules_read += 1
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

    # Checkpoints -----------------------------------------------------------------------

    def restore(self) -> None:
        """Rule state and open bars as of the last checkpoint."""
        with client_like(self.r, decode_responses=False) as binary:  # the state is deflated
            raw: Any = binary.hgetall(self.state_key)
        saved = {field.decode(): value for field, value in raw.items()}
        restored = checkpoint.restore_book(self.book, self.bars, saved)
        log.info("restored the state of %d of %d rules", restored, len(self.book))

    def _encode(self) -> bytes:
        return checkpoint.encode(self.book, self.bars)

    def checkpoint(self) -> None:
        """Checkpoint the state as of now and ack the entries it covers: in a forked child
        when it can, else inline. Alerts and bars of those entries are written first."""
        self.reap_checkpoint()
        if self.ckpt.child is not None or self.ckpt.fenced:
            return  # the previous one is still being written, or this shard is stopping
        self.flush(quotes=False)  # what the acks cover; quotes would only lengthen the pause
        self.book.removed.clear()  # the document holds only the rules in the book
        acks, self._unacked = self._unacked, []
        if self.s.engine_checkpoint_fork and self.ckpt.start(self._encode, acks):
            self.rt.stats.inc("checkpoint_forks")
            gauges = self.rt.stats.gauges
            gauges["checkpoint_fork_ms"] = round(self.ckpt.fork_ms, 2)
            gauges["checkpoint_fork_cpu_ms"] = round(self.ckpt.fork_cpu_ms, 2)
            gauges["checkpoint_fork_max_ms"] = max(gauges.get("checkpoint_fork_max_ms", 0.0),
                                                   gauges["checkpoint_fork_ms"])
            # The fork's cost grows with the resident size (page tables are copied).
            gauges["rss_mb"] = peak_rss_mb()
            return
        self._unacked = acks + self._unacked
        self.checkpoint_now()

    def checkpoint_now(self) -> None:
        """Write a checkpoint inline (the shard waits); raises Fenced, redis errors."""
        self.flush()
        started = time.perf_counter()
        gc.disable()  # the document's 50k small dicts would set off collections meanwhile
        try:
            doc = self._encode()
        finally:
            gc.enable()
        self.ckpt.write(self.r, doc, self._unacked)
        self._unacked = []
        self.rt.stats.inc("checkpoints")
        self.rt.stats.gauges["checkpoint_inline_ms"] = round(
            (time.perf_counter() - started) * 1000, 1)

    def reap_checkpoint(self, block: bool = False) -> None:
        """Collect a finished checkpoint child: on failure its entries wait for the next."""
        result = self.ckpt.poll(block)
        if result is None:
            return
        ok, acks = result
        if ok:
            self.rt.stats.inc("checkpoints")
            self.rt.stats.gauges["checkpoint_ms"] = round(self.ckpt.child_ms, 1)
            self.rt.stats.gauges["checkpoint_cpu_ms"] = round(self.ckpt.child_cpu_ms, 1)
            gap_s = self.ckpt.child_cpu_ms / 1000 / self.s.engine_checkpoint_max_cpu_share
            self._next_checkpoint = self._own_slot(
                max(self._next_checkpoint, self.ckpt.started + gap_s))
        else:
            self.rt.stats.inc("checkpoint_failures")
            self._unacked.extend(acks)
        if self.ckpt.fenced:
            log.error("a newer engine-%d took over its state; stopping", self.s.shard)
            self.rt.stopping = True

    def _own_slot(self, wanted: float) -> float:
        """The start of this shard's checkpoint slot nearest ``wanted`` (monotonic; at most
        ``engine_checkpoint_s / 2`` off it either way, so checkpoints come no later on
        average): wall-clock slots of ``engine_checkpoint_s / shards`` taken by the shards in
        turn. Shards started together would otherwise fork and write their checkpoints at
        the same moments: two fork pauses (5-10 ms of page-table copying each) and two big
        state writes at once stall every process on a small machine, and the tick→alert
        latency of both shards with them."""
        shards, period_s = self.s.shards, self.s.engine_checkpoint_s
        if shards == 1 or period_s <= 0:
            return wanted
        offset_s = time.time() - time.monotonic()
        phase_s = self.s.shard * period_s / shards
        return round((wanted + offset_s - phase_s) / period_s) * period_s + phase_s - offset_s

    def _catch_up(self) -> None:
        """Evaluate entries that arrived meanwhile (one read that does not block), so a
        checkpoint's fork pause falls between the feed's bursts, not on one."""
        entries = bus.read_group(self.r, self.stream, keys.ENGINE_GROUP, self.consumer,
                                 count=self.s.engine_read_count, block_ms=None)
        if entries:
            self.process(entries)

    # Ticks -----------------------------------------------------------------------------

    def process(self, entries: list[bus.Entry]) -> None:
        """Evaluate entries, then write their alerts and closed bars in one round trip."""
        alerts, closed, latest = self._out_alerts, self._out_bars, self._latest
        on_tick, on_bar = self.book.on_tick, self.bars.on_tick
        ticks_seen = 0
        for entry_id, fields in entries:
            self._unacked.append(entry_id)
            try:
                batch = decode_ticks(fields)
            except CodecError as exc:
                self.rt.stats.inc("bad_entries")
                log.warning("skipping malformed tick entry %s: %s", entry_id, exc)
                continue
            ticks_seen += len(batch)
            for index, tick in enumerate(batch):
                latest[tick.sym] = tick
                bar = on_bar(tick.sym, tick.ltp, tick.ts, tick.vol)
                if bar is not None:
                    closed.append((tick.sym, bar))
                firings = on_tick(tick.sym, tick.ltp, tick.ts, tick.pc, tick.vol)
                if firings:
                    at_us = time.time_ns() // 1000
                    alerts.extend(to_alert(f, tick, alert_id(f.rule.id, entry_id, index), at_us)
                                  for f in firings)
        self.rt.stats.inc("ticks", ticks_seen)
        self.flush(quotes=False)  # alerts now; quotes when the loop is about to wait

    def flush(self, quotes: bool = True) -> None:
        """Write evaluated alerts, closed bars and (with ``quotes``) a chunk of due quotes.
        On a Redis error they stay queued and the next call writes them (every kind of
        write is idempotent)."""
        pipe = self.r.pipeline(transaction=False)
        calls = bus.publish_alerts_once(pipe, [(a.id, a.to_fields()) for a in self._out_alerts])
        for sym, bar in self._out_bars:
            pipe.xadd(keys.bars(sym), bar.to_fields(), id=f"{bar.start}-0",  # type: ignore[arg-type]
                      maxlen=keys.BARS_MAXLEN, approximate=True)
        bars_end = len(pipe)
        quoted = self._queue_quotes(pipe) if quotes else []
        if not len(pipe):
            return
        results = pipe.execute(raise_on_error=False)
        for n, result in enumerate(results):
            # A bar written before (its ticks reprocessed) is refused by its id: that is fine.
            if isinstance(result, Exception) and not calls <= n < bars_end:
                raise result
        for sym in quoted:  # written: a later tick of the symbol is in _latest, not here
            del self._quotes_due[sym]
        written = sum(1 for call in results[:calls] for entry_id in call if entry_id)
        self.rt.stats.inc("alerts", written)
        self.rt.stats.inc("duplicate_alerts", len(self._out_alerts) - written)
        retired = {a.rule for a in self._out_alerts if a.rule not in self.book.by_id}
        self._out_alerts = []
        self._out_bars = []
        for rule_id in retired:
            self._retire(rule_id)

    def _queue_quotes(self, pipe: redis.client.Pipeline) -> list[str]:
        """Every QUOTES_EVERY_S the latest quotes fall due; each call queues the next
        QUOTES_PER_FLUSH of them (after this flush's alerts) and returns their symbols, which
        the caller drops from ``_quotes_due`` once written.

        A symbol appears once in ``_quotes_due`` with its newest tick (a later tick of a due
        symbol replaces it in place), so the cache never goes back to an older quote and the
        backlog is bounded by the shard's symbols whatever the tick rate."""
        now = time.monotonic()
        if self._latest and now >= self._next_quotes:
            self._next_quotes = now + QUOTES_EVERY_S
            self._quotes_due.update(self._latest)
            self._latest.clear()
        due = self._quotes_due
        if not due:
            return []
        open_bars = self.bars.open
        quotes = {sym: quote_json(tick, open_bars[sym].as_list() if sym in open_bars else None)
                  for sym, tick in itertools.islice(due.items(), QUOTES_PER_FLUSH)}
        pipe.hset(keys.QUOTES, mapping=quotes)  # type: ignore[arg-type]
        return list(quotes)

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
        self.reap_checkpoint()
        if now >= self._next_checkpoint and self.ckpt.child is None:
            self._next_checkpoint = self._own_slot(now + self.s.engine_checkpoint_s)
            self._catch_up()
            self.checkpoint()
        if now >= self._next_claim:
            self._next_claim = now + CLAIM_EVERY_S
            claimed = bus.claim_stale(self.r, self.stream, keys.ENGINE_GROUP, self.consumer,
                                      min_idle_ms=self.s.engine_claim_idle_ms)
            if claimed:
                log.info("claimed %d entries left pending by another consumer", len(claimed))
                self.process(claimed)
        self.flush()  # quotes of a quiet market, and writes a Redis error held back
        if now >= self._next_trim:
            self._next_trim = now + TRIM_EVERY_S
            oldest_ms = int(time.time() * 1000) - keys.ALERTS_MAX_AGE_DAYS * 86_400_000
            self.r.xtrim(keys.ALERTS, minid=f"{oldest_ms}-0", approximate=True)
        self.rt.stats.gauges.update(shard=self.s.shard, shards=self.s.shards, rules=len(self.book),
                                    rule_errors=self.book.errors,
                                    unacked=len(self._unacked) + len(self.ckpt.in_flight))
        self.rt.tick()

    def start(self) -> None:
        """Rules, their checkpointed state, then the entries read but not acked before."""
        bus.ensure_group(self.r, self.stream, keys.ENGINE_GROUP, start="$")
        self.load_rules()
        self.ckpt.claim_epoch()  # before reading: fences a writer a killed incarnation left
        # A reshard may have run while this shard loaded its rules: refuse the old count.
        topology.agree(self.r, self.s.shards)
        self.restore()
        pending = bus.read_group(self.r, self.stream, keys.ENGINE_GROUP, self.consumer,
                                 count=1_000_000, block_ms=None, start="0")
        if pending:
            log.info("redoing %d entries read but not acked before", len(pending))
            self.process(pending)
        # The armed rules live as long as the shard: out of the collector's way, so a full
        # collection does not walk (and a checkpoint child does not copy) all of them.
        gc.collect()
        gc.freeze()

    def run(self) -> None:
        started = False
        try:
            while not self.rt.stopping:
                try:
                    if not started:
                        self.start()
                        started = True
                    self.housekeeping()
                    # With quotes still due the read does not wait: the shard writes them a
                    # chunk a loop whenever no ticks are waiting (its idle time).
                    block_ms = None if self._quotes_due else self.s.engine_block_ms
                    entries = bus.read_group(self.r, self.stream, keys.ENGINE_GROUP,
                                             self.consumer, count=self.s.engine_read_count,
                                             block_ms=block_ms)
                    if entries:
                        self.process(entries)
                except bus.TRANSIENT_ERRORS as exc:  # waited out; a refused write stays queued
                    log.warning("redis unavailable (%s); retrying in 1 s", exc)
                    self.rt.stats.inc("redis_errors")
                    time.sleep(1.0)
            if started:
                self.stop_checkpoints()
        except Fenced as exc:
            log.error("a newer engine-%d took over its state (%s); stopping", self.s.shard, exc)
        self.rt.stop_beat()
        log.info("shard %d stopped", self.s.shard)

    def stop_checkpoints(self) -> None:
        """Wait for a running checkpoint child, then write the last checkpoint inline."""
        self.reap_checkpoint(block=True)
        if self.ckpt.fenced:
            return
        try:
            self.checkpoint_now()
        except redis.RedisError as exc:
            log.warning("final checkpoint failed (%s); unacked entries will be redone", exc)
