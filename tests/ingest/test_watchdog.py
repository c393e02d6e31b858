"""The heartbeat watchdog of both feeds, end to end: the simulator's ``stall`` knob stops a
socket's data (and, for Upstox, its pongs) with the TCP connection left open. A silence longer
than ``heartbeat_silence_s`` is a dead socket: ingest drops it, reconnects, resubscribes and
counts the silence, the reconnect and the gap, with data again well before the stall ends. A
silence shorter than that is waited out on the same socket."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import orjson
import pytest
import redis

from proto import keys
from proto.events import Tick, decode_ticks
from tests.ingest.procs import heartbeat, running_sim, start_ingest, stop, wait_for
from tests.ingest.test_upstox_ingest import GOOD, NAMED, start_upstox_ingest

SHARDS = 3
FAST = {"STORMALERT_RECONNECT_MIN_S": "0.1", "STORMALERT_RECONNECT_MAX_S": "0.3"}


@dataclass(frozen=True)
class Feed:
    name: str
    start: Callable[[str, str, dict[str, str]], subprocess.Popen[str]]
    symbols: frozenset[str]


def _kite(redis_url: str, sim: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return start_ingest(redis_url, sim, SHARDS, STORMALERT_KITE_SYMBOLS=orjson.dumps(
        list(NAMED)).decode(), **env)


def _upstox(redis_url: str, sim: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return start_upstox_ingest(redis_url, sim, GOOD, STORMALERT_UPSTOX_INSTRUMENT_KEYS=(
        orjson.dumps(list(NAMED.values())).decode()), **env)


FEEDS = [Feed("sim", _kite, frozenset(NAMED)), Feed("upstox", _upstox, frozenset(NAMED))]


@pytest.fixture(params=FEEDS, ids=[f.name for f in FEEDS])
def feed(request: pytest.FixtureRequest) -> Feed:
    return request.param


@pytest.fixture
def stalling_sim(request: pytest.FixtureRequest) -> Iterator[str]:
    every_s, for_s = request.param
    with running_sim("--symbols", "200", "--rate", "2000", "--seed", "11",
                           "--upstox-token", GOOD, "--stall-every", str(every_s),
                           "--stall-for", str(for_s)) as url:
        yield url


def ticks_by_rx(r: redis.Redis) -> list[Tick]:
    ticks = [t for i in range(SHARDS) for _id, f in r.xrange(keys.ticks(i))
             for t in decode_ticks(f)]
    return sorted(ticks, key=lambda t: t.rx)


def gaps_s(ticks: list[Tick], over_s: float) -> list[tuple[float, float]]:
    """(start rx in s, length in s) of every pause in the data longer than ``over_s``."""
    return [(a.rx / 1e6, (b.rx - a.rx) / 1e6) for a, b in itertools.pairwise(ticks)
            if b.rx - a.rx > over_s * 1e6]


@pytest.mark.parametrize("stalling_sim", [(4.0, 3.0)], indirect=True)
def test_a_stall_longer_than_the_silence_window_reconnects(
        feed: Feed, stalling_sim: str, r: redis.Redis, redis_url: str) -> None:
    silence_s, stall_s = 1.0, 3.0
    proc = feed.start(redis_url, stalling_sim,
                      {**FAST, "STORMALERT_HEARTBEAT_SILENCE_S": str(silence_s)})
    try:
        hb = wait_for(lambda: (h := heartbeat(r, f"ingest-{feed.name}"))
                      and h["counters"].get("silences", 0) >= 1 and h["connected"] == 1
                      and h["counters"]["gaps"] >= 1 and h, 25, "a silence and a reconnect")
        assert hb["counters"]["reconnects"] >= 1
        assert silence_s * 1000 * 0.8 < hb["max_gap_ms"] < stall_s * 1000, hb
        mark = r.xadd("probe", {"x": "1"}).split("-")[0]
        # Resubscribed: every instrument ticks again on the new socket.
        wait_for(lambda: {t.sym for t in ticks_by_rx(r) if t.rx > int(mark) * 1000}
                 >= feed.symbols, 10, "every instrument after the reconnect")
        stalls = gaps_s(ticks_by_rx(r), 0.5 * silence_s)
        assert stalls, "the stall never showed in the data"
        # Data again within the silence window plus a reconnect, long before the stall ends.
        assert all(length < silence_s + 1.5 for _start, length in stalls), stalls
    finally:
        assert stop(proc) == 0


@pytest.mark.parametrize("stalling_sim", [(2.5, 0.6)], indirect=True)
def test_a_stall_shorter_than_the_silence_window_is_waited_out(
        feed: Feed, stalling_sim: str, r: redis.Redis, redis_url: str) -> None:
    proc = feed.start(redis_url, stalling_sim, {**FAST, "STORMALERT_HEARTBEAT_SILENCE_S": "2.0"})
    try:
        wait_for(lambda: len(gaps_s(ticks_by_rx(r), 0.4)) >= 2, 20, "two short stalls")
        hb = wait_for(lambda: (h := heartbeat(r, f"ingest-{feed.name}")) and h, 5, "heartbeat")
        assert hb["counters"]["reconnects"] == 0 and hb["counters"].get("silences", 0) == 0
        assert all(length < 1.0 for _start, length in gaps_s(ticks_by_rx(r), 0.4))
    finally:
        assert stop(proc) == 0
