"""What should have happened, from what the feed actually delivered.

Expected alerts: the ticks written to ``sa:ticks:{i}`` are evaluated again, in stream order,
by a fresh rule book of each shard holding the stored rules (the rules exist before the
first tick and use no bars or market hours, so the firings follow from the recorded ticks
alone). An alert id is ``RULE:TICK_ENTRY_ID:INDEX``, so each expected firing names the one
``sa:alerts`` entry that must exist and the one message each of the user's channels must
receive. Ticks that never reached a stream (the feed was down or stalled, ingest was killed
with frames in its queue, Redis refused or lost the write before acknowledging it) have no
alerts to lose: at-most-once for ticks is the product's promise, at-least-once for alerts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import redis

from engine.book import Book
from proto import keys, store
from proto.events import decode_ticks
from tests.faults.stack import SHARDS, Channel
from tests.webhook import Webhook

Cut = dict[int, str]  # shard -> last tick entry id taken into account


def stream_ids(r: redis.Redis) -> Cut:
    """The newest entry id of each tick stream (``0-0`` when empty)."""
    cut = {}
    for shard in range(SHARDS):
        last = r.xrevrange(keys.ticks(shard), count=1)
        cut[shard] = last[0][0] if last else "0-0"
    return cut


def entry_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def after(entry_id: str, bound: str) -> bool:
    return entry_key(entry_id) > entry_key(bound)


def expected_alerts(r: redis.Redis) -> dict[str, tuple[int, str, str]]:
    """Every alert the recorded ticks make: id -> (shard, tick entry id, user)."""
    rules = store.list_rules(r)
    expected: dict[str, tuple[int, str, str]] = {}
    for shard in range(SHARDS):
        book = Book()
        for rule in rules:
            if keys.shard_for(rule.symbol, SHARDS) == shard:
                book.put(rule)
        for entry_id, fields in r.xrange(keys.ticks(shard)):
            for index, tick in enumerate(decode_ticks(fields)):
                for firing in book.on_tick(tick.sym, tick.ltp, tick.ts, tick.pc, tick.vol):
                    aid = f"{firing.rule.id}:{entry_id}:{index}"
                    expected[aid] = (shard, entry_id, firing.rule.user)
    return expected


def in_window(where: tuple[int, str, str], start: Cut, end: Cut) -> bool:
    shard, entry_id, _user = where
    return after(entry_id, start[shard]) and not after(entry_id, end[shard])


def engine_caught_up(r: redis.Redis, cut: Cut) -> bool:
    """Every shard has read its stream up to ``cut`` (and so written those alerts, unless
    a write failed and waits for a retry)."""
    return all(
        not after(cut[shard], str(g["last-delivered-id"]))
        for shard in range(SHARDS)
        for g in r.xinfo_groups(keys.ticks(shard))
        if g["name"] == keys.ENGINE_GROUP)


def emitted_alerts(r: redis.Redis) -> Counter[str]:
    """Alert ids in ``sa:alerts``, with how many entries carry each."""
    ids: Counter[str] = Counter()
    start = "-"
    while True:
        page = r.xrange(keys.ALERTS, min=start, count=1000)
        for _eid, fields in page:
            ids[fields["id"]] += 1
        if len(page) < 1000:
            return ids
        start = "(" + page[-1][0]


@dataclass
class Tally:
    """The counts of one scenario (alerts of the ticks in its window)."""

    name: str
    expected: int = 0
    emitted: int = 0
    deliveries: int = 0
    deliveries_expected: int = 0
    lost_alerts: list[str] = field(default_factory=list)  # expected, not in sa:alerts
    unexpected_alerts: list[str] = field(default_factory=list)  # in sa:alerts, not expected
    duplicate_alerts: list[str] = field(default_factory=list)  # in sa:alerts twice
    lost_deliveries: list[str] = field(default_factory=list)  # "alert -> path", not received
    duplicate_deliveries: list[str] = field(default_factory=list)  # received more than once
    resent_after_kill: int = 0  # held at the gate when the notifier was killed, sent again
    recovery_s: float = 0.0
    exits: list[str] = field(default_factory=list)  # processes that died, the killed one too

    @property
    def lost(self) -> int:
        return len(self.lost_alerts) + len(self.lost_deliveries)

    @property
    def duplicates(self) -> int:
        return len(self.duplicate_alerts) + len(self.duplicate_deliveries)

    def line(self) -> str:
        return (f"{self.name}: alerts expected {self.expected}, emitted {self.emitted}, "
                f"deliveries {self.deliveries}/{self.deliveries_expected}, lost {self.lost}, "
                f"duplicates {self.duplicates}, resent after a kill {self.resent_after_kill}, "
                f"unexpected {len(self.unexpected_alerts)}, recovery {self.recovery_s:.2f} s, "
                f"process exits: {', '.join(self.exits) or 'none'}")

    def problems(self) -> list[str]:
        return [f"{what}: {items[:5]}" for what, items in (
            ("alerts lost", self.lost_alerts), ("alerts not expected", self.unexpected_alerts),
            ("alerts written twice", self.duplicate_alerts),
            ("deliveries lost", self.lost_deliveries),
            ("deliveries duplicated", self.duplicate_deliveries)) if items]


@dataclass
class Received:
    """Requests the webhook took per (alert id, path): ``sent`` reached it from a live sender
    (``answered``: and got their answer), ``held`` were held at the gate while their sender
    was killed."""

    sent: Counter[tuple[str, str]] = field(default_factory=Counter)
    answered: Counter[tuple[str, str]] = field(default_factory=Counter)
    held: Counter[tuple[str, str]] = field(default_factory=Counter)


def received(hook: Webhook, channels: Iterable[Channel]) -> Received:
    paths = {c.path for c in channels}
    got = Received()
    with hook.lock:
        hits = list(hook.hits)
    for hit in hits:
        if hit.path in paths:
            key = (hit.alert_id(), hit.path)
            (got.held if hit.held else got.sent)[key] += 1
            got.answered[key] += hit.answered and not hit.held
    return got


def tally(name: str, r: redis.Redis, hook: Webhook, channels: list[Channel], start: Cut,
          end: Cut) -> Tally:
    expected = {aid: where for aid, where in expected_alerts(r).items()
                if in_window(where, start, end)}
    emitted = emitted_alerts(r)
    shard_of = {rule.id: keys.shard_for(rule.symbol, SHARDS) for rule in store.list_rules(r)}
    window = set()
    for aid in emitted:
        rule_id, entry_id, _index = aid.rsplit(":", 2)
        if in_window((shard_of[rule_id], entry_id, ""), start, end):
            window.add(aid)
    got = received(hook, channels)
    t = Tally(name, expected=len(expected), emitted=len(window))
    t.lost_alerts = sorted(set(expected) - window)
    t.unexpected_alerts = sorted(window - set(expected))
    t.duplicate_alerts = sorted(aid for aid in window if emitted[aid] > 1)
    by_user: dict[str, list[str]] = {}
    for c in channels:
        by_user.setdefault(c.user, []).append(c.path)
    for aid, (_shard, _entry, user) in expected.items():
        for path in by_user.get(user, []):
            t.deliveries_expected += 1
            key = (aid, path)
            n = got.sent[key]
            t.deliveries += min(got.answered[key] + got.held[key], 1)
            if not got.answered[key] and not got.held[key]:
                t.lost_deliveries.append(f"{aid} -> {path}")
            if n > 1:
                t.duplicate_deliveries.append(f"{aid} -> {path} x{n}")
            t.resent_after_kill += min(got.held[key], n)
    return t

