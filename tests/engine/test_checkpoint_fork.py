"""Checkpoints written by a forked child (engine.checkpointer), against a real Redis: the
child's state is the parent's at the fork while the parent goes on; a child that fails or
is killed acks nothing; a child of an older incarnation cannot write; a restart from a
checkpoint older than entries already evaluated (and alerted) makes exactly the alerts of an
uninterrupted run."""

import gc
import os
import signal
import subprocess
import sys
import threading
import time

import orjson
import pytest
import redis

from engine.book import Book
from engine.checkpoint import EPOCH_FIELD, STATE_FIELD, decode, dumps, rule_state
from engine.checkpointer import Checkpointer
from engine.shard import EngineSettings, Shard
from proto import bus, keys, store
from proto.events import encode_tick_batch
from proto.rules import parse_rule
from proto.runtime import Runtime
from tests.engine.test_crash import RULES, SYMBOLS, expected_alert_ids, make_entries
from tests.helpers import ROOT, wait_for

STREAM = keys.ticks(0)


@pytest.fixture
def world(r):
    """Rules and a tick stream; restores what in-process shards change in this process."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    r.hset(keys.INSTRUMENTS, mapping={s: orjson.dumps({"tok": "1"}) for s in SYMBOLS})
    store.add_user(r, "alice", "correct horse")
    for body in RULES:
        store.add_rule(r, parse_rule(body, user="alice"))
    r.xgroup_create(STREAM, keys.ENGINE_GROUP, id="0", mkstream=True)
    yield r
    for sig, handler in saved.items():
        signal.signal(sig, handler)
    gc.unfreeze()


def new_shard(redis_url: str, **settings) -> Shard:
    s = EngineSettings(shard=0, shards=1, redis_url=redis_url, **settings)
    client = bus.connect(redis_url, blocking=True)
    return Shard(s, client, Runtime("engine-0", client))


def feed(r, batches) -> list[str]:
    return [r.xadd(STREAM, encode_tick_batch(batch)) for batch in batches]


def drain(shard: Shard) -> int:
    """Read and evaluate every new entry, as the shard's loop does; how many."""
    n = 0
    while entries := bus.read_group(shard.r, STREAM, keys.ENGINE_GROUP, shard.consumer,
                                    count=50, block_ms=None):
        shard.process(entries)
        n += len(entries)
    return n


def pending_ids(r) -> list[str]:
    return [p["message_id"] for p in r.xpending_range(STREAM, keys.ENGINE_GROUP, "-", "+", 10**6)]


def saved_state(redis_url: str) -> dict | None:
    """The shard's checkpoint document as stored (deflated: read with a bytes client)."""
    raw = redis.Redis.from_url(redis_url).hget(keys.engine_state(0), STATE_FIELD)
    return None if raw is None else decode(raw)


def alert_ids(r) -> list[str]:
    return [f["id"] for _id, f in r.xrange(keys.ALERTS)]


def test_the_child_writes_the_state_at_the_fork_while_the_parent_goes_on(world, redis_url):
    batches = make_entries(400, 20)
    first = feed(world, batches[:200])
    shard = new_shard(redis_url)
    shard.start()
    drain(shard)
    reference = Book()  # the uninterrupted state after the first half
    for body in RULES:
        reference.put(parse_rule(body, user="alice"))
    for batch in batches[:200]:
        for tick in batch:
            reference.on_tick(tick.sym, tick.ltp, tick.ts, tick.pc)

    shard.checkpoint()
    assert shard.ckpt.child is not None, "the checkpoint was not forked"
    second = feed(world, batches[200:])
    drain(shard)  # evaluated while the child writes: not covered by its checkpoint
    shard.reap_checkpoint(block=True)
    assert shard.rt.stats.counters["checkpoints"] == 1

    assert pending_ids(world) == second
    assert not set(first) & set(pending_ids(world))
    doc = saved_state(redis_url)
    assert doc is not None and doc["rules"] == orjson.loads(dumps(
        {i: rule_state(a) for i, a in reference.by_id.items()}))

    # A crash now, then a new incarnation: restore, redo the second half.
    after = new_shard(redis_url)
    after.start()
    drain(after)
    after.checkpoint_now()
    got = alert_ids(world)
    assert len(got) == len(set(got)), "an alert was written twice"
    assert sorted(got) == sorted(expected_alert_ids(world))
    assert pending_ids(world) == []


def test_a_failed_child_acks_nothing_and_the_next_checkpoint_acks_its_entries(
        world, redis_url, monkeypatch):
    shard = new_shard(redis_url)
    shard.start()
    ids = feed(world, make_entries(30, 5))
    drain(shard)

    def broken() -> bytes:
        raise RuntimeError("serialising failed")

    monkeypatch.setattr(shard, "_encode", broken)
    shard.checkpoint()
    assert shard.ckpt.child is not None
    shard.reap_checkpoint(block=True)
    assert shard.rt.stats.counters["checkpoint_failures"] == 1
    assert pending_ids(world) == ids
    assert saved_state(redis_url) is None
    assert sorted(shard._unacked) == sorted(ids)

    monkeypatch.undo()
    shard.checkpoint()
    shard.reap_checkpoint(block=True)
    assert shard.rt.stats.counters["checkpoints"] == 1
    assert pending_ids(world) == []
    assert shard._unacked == []


def test_a_child_killed_mid_write_or_over_time_acks_nothing(world, redis_url):
    ids = feed(world, make_entries(10, 5))
    world.xreadgroup(keys.ENGINE_GROUP, "engine-0", {STREAM: ">"})
    client = bus.connect(redis_url, blocking=True)
    ckpt = Checkpointer(client, keys.engine_state(0), STREAM, keys.ENGINE_GROUP, timeout_s=0.3)
    ckpt.claim_epoch()

    def slow() -> bytes:
        time.sleep(10)
        return b"{}"

    assert ckpt.start(slow, ids)
    os.kill(ckpt.child, signal.SIGKILL)
    assert ckpt.poll(block=True) == (False, ids)
    assert ckpt.start(slow, ids)
    assert ckpt.poll() is None  # still within its time
    time.sleep(0.4)
    assert ckpt.poll() == (False, ids)  # killed for running over
    assert ckpt.child is None and not ckpt.fenced
    assert pending_ids(world) == ids
    assert saved_state(redis_url) is None


def test_a_child_of_an_older_incarnation_cannot_write(world, redis_url):
    old = new_shard(redis_url)
    old.start()
    feed(world, make_entries(20, 5))
    drain(old)
    encode = old._encode

    def slow() -> bytes:
        time.sleep(0.5)  # the new incarnation claims the state meanwhile
        return encode()

    old._encode = slow  # type: ignore[method-assign]
    old.checkpoint()
    assert old.ckpt.child is not None
    new = new_shard(redis_url)
    new.start()  # restores nothing yet, redoes every entry
    old.reap_checkpoint(block=True)
    assert old.ckpt.fenced and old.rt.stopping
    assert old.rt.stats.counters.get("checkpoints", 0) == 0
    assert saved_state(redis_url) is None
    new.checkpoint_now()
    assert pending_ids(world) == []
    old.stop_checkpoints()  # a fenced shard writes no final checkpoint
    assert int(world.hget(keys.engine_state(0), EPOCH_FIELD)) == new.ckpt.epoch


def test_the_child_dies_with_its_parent(world, redis_url, tmp_path):
    """A parent killed while its child serialises: the child is killed too (PDEATHSIG), so
    it cannot write after a restarted shard has read the state."""
    script = f"""
import os, signal, sys, time
sys.path.insert(0, {str(ROOT)!r})
from engine.checkpointer import Checkpointer
from proto import bus, keys
r = bus.connect({redis_url!r})
ckpt = Checkpointer(r, keys.engine_state(0), keys.ticks(0), keys.ENGINE_GROUP)
ckpt.claim_epoch()
def slow():
    time.sleep(1.5)
    return b'{{"written": "late"}}'
ckpt.start(slow, [])
print(ckpt.child, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=30)
    child = int(out.stdout.split()[0])
    wait_for(lambda: not _alive(child), timeout_s=1.0, what="the child to die with its parent")
    time.sleep(2.0)
    assert saved_state(redis_url) is None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_with_other_threads_alive_the_checkpoint_is_written_inline(world, redis_url):
    shard = new_shard(redis_url)
    shard.start()
    ids = feed(world, make_entries(10, 5))
    drain(shard)
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        shard.checkpoint()
    finally:
        release.set()
        other.join()
    assert shard.ckpt.child is None
    assert shard.rt.stats.counters["checkpoints"] == 1
    assert "checkpoint_forks" not in shard.rt.stats.counters
    assert pending_ids(world) == []
    doc = saved_state(redis_url)
    assert doc is not None and set(doc["rules"]) == set(shard.book.by_id) and ids



def test_expensive_checkpoints_are_spaced_out(world, redis_url):
    shard = new_shard(redis_url, engine_checkpoint_s=0.0, engine_checkpoint_max_cpu_share=0.001)
    shard.start()
    feed(world, make_entries(50, 10))
    drain(shard)
    shard.housekeeping()
    assert shard.ckpt.child is not None
    shard.reap_checkpoint(block=True)
    cpu_s = shard.ckpt.child_cpu_ms / 1000
    assert cpu_s > 0
    assert shard._next_checkpoint >= shard.ckpt.started + cpu_s / 0.001 - 1e-6
    shard.housekeeping()  # due by engine_checkpoint_s, not by the CPU share
    assert shard.ckpt.child is None
    assert shard.rt.stats.counters["checkpoint_forks"] == 1
