"""kill -9 of an engine shard mid-stream loses no alert and duplicates none: the alerts
written by the crashed and the restarted shard together are exactly those an uninterrupted
evaluation of the same ticks makes (same ids, each once)."""

import os
import random
import signal
import threading
import time
from pathlib import Path

import orjson
import pytest

from engine.book import Book
from proto import keys, store
from proto.events import Tick, decode_ticks, encode_tick_batch
from proto.rules import parse_rule
from tests.helpers import alive, children, spawn, stop, wait_for

SYMBOLS = [f"NSE:S{i}" for i in range(20)]
RULES = [
    *({"id": f"t{i}", "symbol": s, "kind": "trailing_pct", "params": {"pct": 0.4}}
      for i, s in enumerate(SYMBOLS)),
    *({"id": f"w{i}", "symbol": s, "kind": "window_pct", "cooldown_s": 5,
       "params": {"pct": 0.3, "window_s": 30}} for i, s in enumerate(SYMBOLS)),
    *({"id": f"c{i}", "symbol": s, "kind": "cross_above", "params": {"level": 1000}}
      for i, s in enumerate(SYMBOLS)),
]


def make_entries(n_entries: int, per_entry: int) -> list[list[Tick]]:
    rnd = random.Random(42)
    price = dict.fromkeys(SYMBOLS, 1000.0)
    t = 1_700_000_000_000
    entries = []
    for _ in range(n_entries):
        batch = []
        for _ in range(per_entry):
            sym = rnd.choice(SYMBOLS)
            price[sym] = round(price[sym] * (1 + rnd.gauss(0, 0.002)), 2)
            t += rnd.randint(0, 200)
            batch.append(Tick(sym=sym, tok="1", src="test", ltp=price[sym], vol=0, ts=t, rx=1))
        entries.append(batch)
    return entries


def expected_alert_ids(r) -> list[str]:
    book = Book()
    for body in RULES:
        book.put(parse_rule(body, user="alice"))
    ids = []
    for entry_id, fields in r.xrange(keys.ticks(0)):
        for index, tick in enumerate(decode_ticks(fields)):
            ids += [f"{f.rule.id}:{entry_id}:{index}"
                    for f in book.on_tick(tick.sym, tick.ltp, tick.ts, tick.pc)]
    return ids


def seed(r, idle_rules: int = 0) -> None:
    """The rules, and ``idle_rules`` more on symbols that never tick: they only make every
    checkpoint bigger (its child lives longer)."""
    idle = [f"NSE:IDLE{i}" for i in range(idle_rules)]
    r.hset(keys.INSTRUMENTS, mapping={s: orjson.dumps({"tok": "1"}) for s in SYMBOLS + idle})
    store.add_user(r, "alice", "correct horse")
    for body in RULES:
        store.add_rule(r, parse_rule(body, user="alice"))
    for i, sym in enumerate(idle):
        store.add_rule(r, parse_rule({"id": f"idle{i}", "symbol": sym, "kind": "window_pct",
                                      "params": {"pct": 1, "window_s": 60}}, user="alice"))
    r.xgroup_create(keys.ticks(0), keys.ENGINE_GROUP, id="0", mkstream=True)


def start_feeder(r) -> threading.Thread:
    entries = make_entries(1500, 20)

    def feed():
        for i in range(0, len(entries), 25):
            pipe = r.pipeline(transaction=False)
            for batch in entries[i:i + 25]:
                pipe.xadd(keys.ticks(0), encode_tick_batch(batch))
            pipe.execute()
            time.sleep(0.01)

    feeder = threading.Thread(target=feed)
    feeder.start()
    return feeder


def finish_and_compare(r, redis_url, tmp_path, env) -> None:
    """A last shard processes everything; the alerts of all incarnations together are
    exactly those of an uninterrupted evaluation."""
    proc = spawn(["engine", "--shard", "0", "--shards", "1"], redis_url,
                 tmp_path / "engine-last.log", env=env)
    try:
        # Its own heartbeat first: the killed shards may have acked everything already, and a
        # SIGTERM that lands while it still imports would end it uncleanly.
        wait_for(lambda: (b := r.get(keys.heartbeat("engine-0")))
                 and orjson.loads(b)["pid"] == proc.pid, timeout_s=30, what="the last shard")
        wait_for(lambda: r.xinfo_groups(keys.ticks(0))[0]["lag"] == 0
                 and r.xpending(keys.ticks(0), keys.ENGINE_GROUP)["pending"] == 0,
                 timeout_s=60, what="every entry processed and acked")
    finally:
        assert stop(proc) == 0
    got = [f["id"] for _id, f in r.xrange(keys.ALERTS)]
    expected = expected_alert_ids(r)
    assert len(expected) > 100  # the ticks do make alerts, before and after the kills
    assert len(got) == len(set(got)), "an alert was written twice"
    assert sorted(got) == sorted(expected)


ENV = {"STORMALERT_ENGINE_CHECKPOINT_S": "0.3"}


@pytest.mark.parametrize("kills", [1, 3])
def test_kill_9_mid_stream_loses_and_duplicates_nothing(r, redis_url, tmp_path, kills):
    seed(r)
    feeder = start_feeder(r)
    for n in range(kills):
        proc = spawn(["engine", "--shard", "0", "--shards", "1"], redis_url,
                     tmp_path / f"engine-{n}.log", env=ENV)
        time.sleep(0.8 + 0.4 * n)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    feeder.join()
    finish_and_compare(r, redis_url, tmp_path, ENV)


@pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists(),
                    reason="needs /proc/PID/task/TID/children (Linux)")
def test_kill_9_while_the_checkpoint_child_writes(r, redis_url, tmp_path):
    """The shard is killed each time its checkpoint child is at work: the child dies with
    it (or has committed whole), and nothing is lost or doubled."""
    seed(r, idle_rules=2000)
    feeder = start_feeder(r)
    writers = []
    for n in range(3):
        proc = spawn(["engine", "--shard", "0", "--shards", "1"], redis_url,
                     tmp_path / f"engine-{n}.log", env=ENV)
        time.sleep(1.0 + 0.3 * n)  # into the stream, past the start-up checkpoint
        writers += wait_for(lambda p=proc: children(p.pid), timeout_s=30, what="a checkpoint child")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    wait_for(lambda: not any(alive(w) for w in writers), timeout_s=5,
             what="the checkpoint children to die with their shards")
    feeder.join()
    finish_and_compare(r, redis_url, tmp_path, ENV)
