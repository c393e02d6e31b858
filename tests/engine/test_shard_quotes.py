"""The quote cache is written in bounded chunks (engine.shard.QUOTES_PER_FLUSH a loop), none
by the flush of evaluated ticks (their alerts go out alone), so a quarter second's quotes do
not hold the shard for milliseconds at once; while quotes are due the loop does not block on
its read. Every symbol still ends with its newest quote, and a newer tick of a due symbol is
never overwritten by an older one. Against a real Redis, with an in-process shard."""

import gc
import signal
import threading
import time

import orjson
import pytest
import redis

from engine import shard as shard_mod
from engine.shard import QUOTES_PER_FLUSH, EngineSettings, Shard
from proto import bus, keys
from proto.events import Tick, encode_tick_batch
from proto.runtime import Runtime

STREAM = keys.ticks(0)
SYMBOLS = [f"NSE:S{i:04d}" for i in range(QUOTES_PER_FLUSH * 2 + 17)]


@pytest.fixture
def shard(r, redis_url):
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    r.xgroup_create(STREAM, keys.ENGINE_GROUP, id="0", mkstream=True)
    s = EngineSettings(shard=0, shards=1, redis_url=redis_url)
    client = bus.connect(redis_url, blocking=True)
    yield Shard(s, client, Runtime("engine-0", client))
    client.close()
    for sig, handler in saved.items():
        signal.signal(sig, handler)
    gc.unfreeze()  # Shard.start froze the heap


def ticks(price: float, symbols: list[str]) -> list[Tick]:
    now_ms = int(time.time() * 1000)
    return [Tick(sym=sym, tok="1", src="test", ltp=price, vol=1, ts=now_ms, rx=now_ms * 1000)
            for sym in symbols]


def evaluate(shard: Shard, r, batch: list[Tick]) -> None:
    r.xadd(STREAM, encode_tick_batch(batch))
    entries = bus.read_group(r, STREAM, keys.ENGINE_GROUP, "engine-0", count=1000, block_ms=None)
    shard.process(entries)


def cached(r) -> dict[str, float]:
    return {sym: orjson.loads(raw)["ltp"] for sym, raw in r.hgetall(keys.QUOTES).items()}


def test_due_quotes_go_out_in_chunks_until_all_are_written(shard, r):
    evaluate(shard, r, ticks(100.0, SYMBOLS))
    assert cached(r) == {}  # evaluating writes alerts only
    shard.flush()  # due at once: the first quotes of the shard
    assert len(cached(r)) == QUOTES_PER_FLUSH
    shard.flush()
    assert len(cached(r)) == 2 * QUOTES_PER_FLUSH
    shard.flush()
    assert cached(r) == dict.fromkeys(SYMBOLS, 100.0)
    shard.flush()  # nothing due: no write
    assert not shard._quotes_due and not shard._latest


def test_a_newer_tick_of_a_due_symbol_wins(shard, r, monkeypatch):
    evaluate(shard, r, ticks(100.0, SYMBOLS))
    shard.flush()
    assert len(cached(r)) == QUOTES_PER_FLUSH
    last = SYMBOLS[-1]  # due, not written yet; its next tick arrives before it is
    monkeypatch.setattr(shard_mod, "QUOTES_EVERY_S", 0.0)
    shard._next_quotes = 0.0
    evaluate(shard, r, ticks(101.0, [last]))
    shard.flush()  # falls due at once, replacing the old one
    while shard._quotes_due:
        shard.flush()
    assert cached(r)[last] == 101.0
    assert cached(r) == {**dict.fromkeys(SYMBOLS, 100.0), last: 101.0}


def test_quotes_stay_due_when_the_write_fails(shard, r):
    evaluate(shard, r, ticks(100.0, SYMBOLS[:3]))
    shard.flush()
    assert cached(r) == dict.fromkeys(SYMBOLS[:3], 100.0)
    r.delete(keys.QUOTES)
    r.set(keys.QUOTES, "not a hash")  # the HSET is refused: WRONGTYPE
    shard._next_quotes = 0.0
    evaluate(shard, r, ticks(102.0, SYMBOLS[:3]))
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        shard.flush()
    assert set(shard._quotes_due) == set(SYMBOLS[:3])  # kept for the next flush
    r.delete(keys.QUOTES)
    shard.flush()
    assert cached(r) == dict.fromkeys(SYMBOLS[:3], 102.0)


def test_the_loop_writes_due_quotes_without_waiting_for_ticks(shard, r):
    """While quotes are due the loop's read does not block: ten chunks take milliseconds, not
    ten blocking reads of engine_block_ms (200 ms) each."""
    many = [f"NSE:M{i:04d}" for i in range(QUOTES_PER_FLUSH * 10)]
    r.xadd(STREAM, encode_tick_batch(ticks(100.0, many)))
    runner = threading.Thread(target=shard.run, daemon=True)
    started = time.monotonic()
    runner.start()
    try:
        while len(cached(r)) < len(many) and time.monotonic() - started < 5:
            time.sleep(0.01)
        took_s = time.monotonic() - started
    finally:
        shard.rt.stopping = True
        runner.join(10)
    assert cached(r) == dict.fromkeys(many, 100.0)
    assert took_s < 1.0, took_s  # blocking reads: at least 9 x 0.2 s
