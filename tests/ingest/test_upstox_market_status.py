"""The simulator's Upstox ``market_info`` follows ``--market-hours``, and ingest's per-segment
market status in Redis (``sa:market:status``) follows the simulator: pre-open, the end of the
pre-open, the open, on a simulated Friday morning; and the status table itself."""

from __future__ import annotations

from datetime import datetime

import orjson
import pytest
import redis

from ingest.clock import IST
from ingest.sim import universe
from ingest.sim.hours import (
    NORMAL_CLOSE,
    NORMAL_OPEN,
    PRE_OPEN_END,
    PRE_OPEN_START,
    MarketHours,
)
from ingest.sim.market import Market
from ingest.sim.upstox_server import UpstoxSide
from proto import MarketDataFeedV3_pb2 as pb
from proto import keys
from tests.ingest.procs import running_sim, wait_for
from tests.ingest.test_upstox_ingest import GOOD, NAMED, finish, start_upstox_ingest


def ist(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=IST).timestamp()


@pytest.mark.parametrize(("exchange", "at", "status"), [
    ("NSE", "2024-01-05T08:59:59", NORMAL_CLOSE),
    ("NSE", "2024-01-05T09:00:00", PRE_OPEN_START),
    ("NSE", "2024-01-05T09:07:59", PRE_OPEN_START),
    ("NSE", "2024-01-05T09:08:00", PRE_OPEN_END),
    ("BSE", "2024-01-05T09:14:59", PRE_OPEN_END),
    ("NSE", "2024-01-05T09:15:00", NORMAL_OPEN),
    ("NSE", "2024-01-05T15:29:59", NORMAL_OPEN),
    ("NSE", "2024-01-05T15:30:00", NORMAL_CLOSE),
    ("NSE", "2024-01-06T10:00:00", NORMAL_CLOSE),  # a Saturday
    ("NFO", "2024-01-05T09:05:00", NORMAL_CLOSE),  # F&O has no pre-open
    ("NFO", "2024-01-05T09:10:00", NORMAL_CLOSE),
    ("MCX", "2024-01-05T23:00:00", NORMAL_OPEN),
    ("MCX", "2024-01-05T23:30:00", NORMAL_CLOSE),
])
def test_status_table(exchange: str, at: str, status: str) -> None:
    assert MarketHours("nse").status(exchange, ist(at)) == status
    assert MarketHours("always").status(exchange, ist(at)) == NORMAL_OPEN


def test_sim_side_reports_per_segment() -> None:
    instruments = universe.build(300, 1)
    market = Market(instruments, 100, 1, 1_704_425_400)
    side = UpstoxSide(instruments, market, MarketHours("nse"),
                      lambda: ist("2024-01-05T09:10:00"))
    names = {seg: pb.MarketStatus.Name(value) for seg, value in side.status.items()}
    assert {"NSE_EQ", "NSE_INDEX", "BSE_EQ", "NCD_FO", "MCX_FO"} <= set(names)
    assert names["NSE_EQ"] == names["NSE_INDEX"] == names["BSE_EQ"] == PRE_OPEN_END
    assert names["NCD_FO"] == names["MCX_FO"] == NORMAL_OPEN  # from 09:00
    evening = UpstoxSide(instruments, market, MarketHours("nse"),
                         lambda: ist("2024-01-05T17:30:00")).status
    assert evening["NSE_EQ"] == evening["NCD_FO"] == pb.NORMAL_CLOSE
    assert evening["MCX_FO"] == pb.NORMAL_OPEN  # until 23:30
    always = UpstoxSide(instruments, market, clock=lambda: ist("2024-01-06T03:00:00"))
    assert always.status == dict.fromkeys(side.status, pb.NORMAL_OPEN)


def test_redis_status_follows_the_sim_through_the_morning(r: redis.Redis,
                                                         redis_url: str) -> None:
    with running_sim("--symbols", "200", "--rate", "300", "--seed", "11",
                           "--upstox-token", GOOD, "--market-hours", "nse",
                           "--clock", "2024-01-05T09:07:50+05:30",
                           "--nse-session", "09:08:04-15:30") as sim:
        ingest = start_upstox_ingest(redis_url, sim, GOOD,
                                     STORMALERT_UPSTOX_INSTRUMENT_KEYS=orjson.dumps(
                                         list(NAMED.values())).decode())
        try:
            seen: list[str] = []

            def status_is(wanted: str) -> bool:
                now = r.hget(keys.MARKET_STATUS, "NSE_EQ")
                if now and (not seen or seen[-1] != now):
                    seen.append(now)
                return now == wanted

            wait_for(lambda: status_is("PRE_OPEN_START"), 15, "the pre-open")
            assert r.hget(keys.MARKET_STATUS, "MCX_FO") == "NORMAL_OPEN"  # since 09:00
            wait_for(lambda: status_is("PRE_OPEN_END"), 15, "the end of the pre-open")
            wait_for(lambda: status_is("NORMAL_OPEN"), 15, "the open")
            assert seen == ["PRE_OPEN_START", "PRE_OPEN_END", "NORMAL_OPEN"]
            status = r.hgetall(keys.MARKET_STATUS)
            assert status["NSE_INDEX"] == status["BSE_EQ"] == "NORMAL_OPEN"
            assert status["NCD_FO"] == status["MCX_FO"] == "NORMAL_OPEN"
            assert r.hget(keys.feed_state("upstox"), "state") == "connected"
        finally:
            finish(ingest)
