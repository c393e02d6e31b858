"""Rule changes trimmed before a shard read them: ``sa:rules:changes`` keeps about
``RULE_CHANGES_MAXLEN`` entries, so a burst of changes (imports, a script adding rules, a
shard stopped a while) can push changes out before a shard polls. The shard notices (the
oldest change left in the stream comes after the one it read last, by the stream's count of
changes ever added) and brings its book to the stored
rules, instead of leaving new rules unarmed and removed ones firing until a restart.
Against a real Redis, with an in-process shard."""

import gc
import signal

import orjson
import pytest
import redis

from engine.shard import EngineSettings, Shard
from proto import bus, keys, store
from proto.rules import Rule, parse_rule
from proto.runtime import Runtime

SYMBOLS = ["NSE:INFY", "NSE:TCS"]


@pytest.fixture
def shard(r: redis.Redis, redis_url: str):
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    r.hset(keys.INSTRUMENTS, mapping={sym: orjson.dumps({"tok": str(n), "src": "test"})
                                      for n, sym in enumerate(SYMBOLS)})
    store.add_user(r, "alice", "correct horse")
    client = bus.connect(redis_url)
    yield Shard(EngineSettings(shard=0, shards=1, redis_url=redis_url), client,
                Runtime("engine-0", client))
    client.close()
    for sig, handler in saved.items():
        signal.signal(sig, handler)
    gc.unfreeze()


def rule(rule_id: str, level: float, symbol: str = "NSE:INFY") -> Rule:
    return parse_rule({"id": rule_id, "symbol": symbol, "kind": "cross_above",
                       "params": {"level": level}}, user="alice")


def churn(r: redis.Redis, changes: int) -> None:
    """Changes of a rule that comes and goes, enough to trim the stream past any cursor."""
    for n in range(changes // 2):
        store.add_rule(r, rule(f"churn-{n}", 1.0))
        store.remove_rule(r, f"churn-{n}")


def test_trimmed_changes_resync_the_book(shard: Shard, r: redis.Redis) -> None:
    for rule_id in ("kept", "removed", "changed", "paused"):
        store.add_rule(r, rule(rule_id, 100.0))
    shard.load_rules()
    kept = shard.book.by_id["kept"]
    assert set(shard.book.by_id) == {"kept", "removed", "changed", "paused"}

    store.remove_rule(r, "removed")
    store.update_rule(r, rule("changed", 200.0))
    store.set_rule_active(r, "paused", False)
    store.add_rule(r, rule("added", 300.0, "NSE:TCS"))
    churn(r, keys.RULE_CHANGES_MAXLEN + 2_000)
    assert r.xlen(keys.RULE_CHANGES) < keys.RULE_CHANGES_MAXLEN + 2_000  # trimmed
    assert r.xrange(keys.RULE_CHANGES, count=1)[0][1]["id"].startswith("churn-")  # all ours

    shard.poll_rule_changes()
    assert set(shard.book.by_id) == {"kept", "changed", "added"}
    assert shard.book.by_id["kept"] is kept  # unchanged: armed as it was, its state kept
    assert shard.book.by_id["changed"].rule.params["level"] == 200.0
    assert shard.rt.stats.counters["rule_resyncs"] == 1

    # Caught up: the next changes are read from the stream as usual.
    store.add_rule(r, rule("later", 400.0))
    shard.poll_rule_changes()
    assert "later" in shard.book.by_id and shard.rt.stats.counters["rule_resyncs"] == 1


def test_changes_read_in_time_need_no_resync(shard: Shard, r: redis.Redis) -> None:
    shard.load_rules()
    for _ in range(3):  # read as they come: 1000 a poll
        churn(r, keys.RULE_CHANGES_MAXLEN // 2)
        store.add_rule(r, rule(f"new-{_}", 100.0))
        for _poll in range(6):
            shard.poll_rule_changes()
    assert r.xlen(keys.RULE_CHANGES) < 3 * keys.RULE_CHANGES_MAXLEN // 2  # trimmed meanwhile
    assert set(shard.book.by_id) == {"new-0", "new-1", "new-2"}
    assert "rule_resyncs" not in shard.rt.stats.counters
