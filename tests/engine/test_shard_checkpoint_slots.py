"""When a shard checkpoints: shards take wall-clock slots in turn (their forks and state writes
do not coincide), and a checkpoint first evaluates the entries that arrived meanwhile, so its
fork pause does not hold them and its acks cover them. Against a real Redis, in-process."""

import math
import signal
import time

import pytest

from engine.shard import EngineSettings, Shard
from proto import bus, keys
from proto.events import Tick, encode_tick_batch
from proto.runtime import Runtime


@pytest.fixture
def make_shard(r, redis_url):
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    clients = []

    def make(shard: int, shards: int, **settings) -> Shard:
        s = EngineSettings(shard=shard, shards=shards, redis_url=redis_url, **settings)
        client = bus.connect(redis_url, blocking=True)
        clients.append(client)
        return Shard(s, client, Runtime(f"engine-{shard}", client))

    yield make
    for client in clients:
        client.close()
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("shards", [2, 3])
def test_shards_take_checkpoint_slots_in_turn(make_shard, shards):
    checkpoint_s = 2.0
    slot_s = checkpoint_s / shards
    offset_s = time.time() - time.monotonic()
    now = time.monotonic()
    for shard in range(shards):
        s = make_shard(shard, shards, engine_checkpoint_s=checkpoint_s)
        for ahead_s in (0.0, 0.3, 1.1, 2.7, 4.4):
            wanted = now + ahead_s
            at = s._own_slot(wanted)
            assert abs(at - wanted) <= checkpoint_s / 2 + 1e-6  # no later on average
            slot = (at + offset_s) / slot_s
            assert math.isclose(slot, round(slot), abs_tol=1e-3)  # at a slot's start
            assert round(slot) % shards == shard


def test_one_shard_checkpoints_when_due(make_shard):
    s = make_shard(0, 1, engine_checkpoint_s=2.0)
    earliest = time.monotonic() + 0.123
    assert s._own_slot(earliest) == earliest


def test_a_checkpoint_covers_the_entries_that_arrived_before_it(make_shard, r):
    stream = keys.ticks(0)
    s = make_shard(0, 1, engine_checkpoint_s=3600.0)
    s.start()
    s.housekeeping()  # the first checkpoint, at start
    s.reap_checkpoint(block=True)
    now_ms = int(time.time() * 1000)
    entry = r.xadd(stream, encode_tick_batch([Tick(
        sym="NSE:INFY", tok="1", src="test", ltp=100.0, vol=1, ts=now_ms, rx=now_ms * 1000)]))
    s._next_checkpoint = 0.0  # due: the shard has not read the entry yet
    s.housekeeping()
    assert s.rt.stats.counters.get("ticks") == 1  # evaluated before the fork
    s.reap_checkpoint(block=True)
    group = r.xinfo_groups(stream)[0]
    assert group["last-delivered-id"] == entry and group["pending"] == 0  # and acked by it
