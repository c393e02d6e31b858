"""The Upstox instrument master refreshed daily while the feed runs: the simulator's master,
served through a scripted HTTP front that changes it between loads and fails on the way,
and a clock set a few seconds before the 08:00 IST refresh time."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterator
from datetime import datetime

import orjson
import pytest
import redis
import redis.asyncio as aredis
import requests

from ingest.clock import IST
from ingest.kite_supervisor import KiteFeed
from ingest.settings import IngestSettings
from ingest.sim.upstox_server import MASTER_PATH
from ingest.upstox_feed import change_messages, rebalance_keys
from ingest.upstox_supervisor import UpstoxFeed
from ingest.writer import TickWriter
from proto import keys
from proto.events import decode_ticks
from proto.runtime import Stats
from tests.ingest.feed_thread import Answer, Feed, running_feed, scripted_http
from tests.ingest.procs import running_sim, wait_for

INFY, RELIANCE, TCS = "NSE_EQ|INE009A01021", "NSE_EQ|INE002A01018", "NSE_EQ|INE467B01029"
NIFTY = "NSE_INDEX|Nifty 50"
GOOD = "good-upstox-token"
LEAD_S = 5.0  # the clock starts this long before the refresh time


@pytest.fixture(scope="module")
def sim() -> Iterator[str]:
    with running_sim("--symbols", "200", "--rate", "3000", "--seed", "11",
                     "--upstox-token", GOOD) as url:
        yield url


def master_without(rows: list[dict], key: str) -> Answer:
    body = gzip.compress(orjson.dumps([row for row in rows if row["instrument_key"] != key]))
    return lambda: (200, body)


def clock_before_refresh(lead_s: float):
    """A wall clock that reads 08:00 IST ``lead_s`` seconds from now."""
    now = time.time()
    eight = datetime.fromtimestamp(now, IST).replace(hour=8, minute=0, second=0,
                                                     microsecond=0).timestamp()
    offset = eight - lead_s - now
    return lambda: time.time() + offset


def tokens_seen(r: redis.Redis, since_id: str = "-") -> list[str]:
    return [t.tok for _id, f in r.xrange(keys.ticks(0), min=since_id) for t in decode_ticks(f)]


def test_daily_refresh_keeps_the_old_master_on_failure_then_follows_the_new_one(
        sim: str, r: redis.Redis, redis_url: str) -> None:
    rows = orjson.loads(gzip.decompress(requests.get(sim + MASTER_PATH, timeout=10).content))
    release = threading.Event()
    new_master = master_without(rows, RELIANCE)

    def held_new_master() -> tuple[int, bytes]:
        release.wait(30)
        return new_master()

    answers: list[Answer] = [master_without(rows, TCS), lambda: (503, b"busy"),
                             lambda: (200, b"<html>maintenance</html>"), held_new_master]
    with scripted_http(answers) as (front, fetched):
        settings = IngestSettings(
            feed="upstox", redis_url=redis_url, upstox_access_token=GOOD,
            upstox_api_url=sim, upstox_instruments_url=front + "/complete.json.gz",
            upstox_instrument_keys=[INFY, RELIANCE, TCS, NIFTY], shards=1,
            reconnect_min_s=0.1, reconnect_max_s=0.3,
            instruments_retry_min_s=0.2, instruments_retry_max_s=0.5)
        clock = clock_before_refresh(LEAD_S)
        with running_feed(settings, lambda s, rr, st, w: UpstoxFeed(s, rr, st, w, clock)) \
                as stats:
            wait_for(lambda: {INFY, RELIANCE, NIFTY} <= set(tokens_seen(r)), 15,
                     "ticks of the first master's instruments")
            assert r.hexists(keys.INSTRUMENTS, "NSE:RELIANCE")
            assert not r.hexists(keys.INSTRUMENTS, "NSE:TCS")
            assert TCS not in tokens_seen(r) and stats.gauges["subscribed"] == 3

            # 08:00: a 503 (retried by the load), then a body that is no master (a failed
            # refresh, retried with backoff): the old master stays in force meanwhile.
            wait_for(lambda: stats.counters.get("master_refresh_failures"), LEAD_S + 10,
                     "a failed refresh")
            assert stats.counters["master_retries"] >= 1 and len(fetched) >= 3
            assert r.hexists(keys.INSTRUMENTS, "NSE:RELIANCE")
            assert not r.hexists(keys.INSTRUMENTS, "NSE:TCS")
            assert stats.counters["master_loads"] == 1
            mark = r.xadd("probe", {"x": "1"})  # a stream id of "now" to read ticks after
            wait_for(lambda: RELIANCE in tokens_seen(r, mark), 5, "RELIANCE still flowing")

            release.set()
            wait_for(lambda: stats.counters.get("master_loads") == 2, 10, "the new master")
            record = orjson.loads(r.hget(keys.INSTRUMENTS, "NSE:TCS"))
            assert record["tok"] == TCS and record["src"] == "upstox"
            assert not r.hexists(keys.INSTRUMENTS, "NSE:RELIANCE")
            time.sleep(0.5)  # frames sent before the unsub may still arrive
            after = r.xadd("probe", {"x": "2"})
            wait_for(lambda: TCS in tokens_seen(r, after), 10, "TCS ticks after the refresh")
            time.sleep(1.0)
            seen = tokens_seen(r, after)
            assert RELIANCE not in seen and {INFY, NIFTY, TCS} <= set(seen)
            assert stats.gauges["subscribed"] == 3
            assert stats.counters.get("reconnects", 0) == 0  # moved on the live socket


def test_rebalance_keeps_keys_in_place_and_fills_room() -> None:
    current = [["A", "B", "C"], ["D", "E"]]
    # C and D left, F and G are new: the survivors stay put, the new ones fill the room.
    assert rebalance_keys(current, ["A", "B", "E", "F", "G"], "full", 2) == \
        [["A", "B", "F", "G"], ["E"]]
    full = [[f"K{n}" for n in range(2000)]]
    assert [len(g) for g in rebalance_keys(full, full[0] + ["X"], "full", 2)] == [2000, 1]
    with pytest.raises(ValueError, match="2000 per connection x 1"):
        rebalance_keys(full, full[0] + ["X"], "full", 1)
    messages = [orjson.loads(m) for m in change_messages(["A", "B"], ["B", "C"], "ltpc")]
    assert [(m["method"], m["data"]["instrumentKeys"]) for m in messages] == \
        [("unsub", ["A"]), ("sub", ["C"])]
    assert messages[1]["data"]["mode"] == "ltpc"
    assert change_messages(["A"], ["A"], "full") == []


@pytest.mark.parametrize("feed", ["upstox", "kite"])
def test_refresh_straight_from_the_sim_restores_the_master_in_redis(
        feed: str, sim: str, r: redis.Redis, redis_url: str) -> None:
    """Both feeds' daily refresh against the simulator's own master endpoints: a record lost
    from Redis comes back, the subscriptions stay on the same sockets."""
    common = {"redis_url": redis_url, "shards": 1, "reconnect_min_s": 0.1,
              "reconnect_max_s": 0.3}
    if feed == "upstox":
        settings = IngestSettings(
            feed="upstox", upstox_access_token=GOOD, upstox_api_url=sim,
            upstox_instruments_url=sim + MASTER_PATH, upstox_instrument_keys=[INFY, NIFTY],
            **common)

        def make(s: IngestSettings, rr: aredis.Redis, st: Stats, w: TickWriter) -> Feed:
            return UpstoxFeed(s, rr, st, w, clock)
    else:
        settings = IngestSettings(feed="sim", sim_url=sim,
                                  kite_symbols=["NSE:INFY", "NSE:NIFTY 50"], **common)

        def make(s: IngestSettings, rr: aredis.Redis, st: Stats, w: TickWriter) -> Feed:
            return KiteFeed(s, rr, st, w, clock)
    clock = clock_before_refresh(LEAD_S)
    with running_feed(settings, make) as stats:
        wait_for(lambda: stats.gauges.get("connected") == 1, 15, "a connected feed")
        assert stats.counters["master_loads"] == 1
        r.hdel(keys.INSTRUMENTS, "NSE:INFY")
        wait_for(lambda: stats.counters.get("master_loads") == 2, LEAD_S + 10, "the refresh")
        assert orjson.loads(r.hget(keys.INSTRUMENTS, "NSE:INFY"))["src"] == (
            "upstox" if feed == "upstox" else "kite")
        assert stats.counters.get("reconnects", 0) == 0 and stats.gauges["subscribed"] == 2
        assert not stats.counters.get("master_refresh_failures")
