"""The Kite feed's production behaviour end to end: the simulator and the ingest worker as
real processes, the official KiteConnect client, a real Redis."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import orjson
import pytest
import redis
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kite_errors

from proto import keys
from proto.events import Tick, decode_ticks
from tests.ingest.procs import heartbeat, start_ingest, start_sim, stop, wait_for

SECRET = "sim-secret"
FAST = {"STORMALERT_RECONNECT_MIN_S": "0.1", "STORMALERT_RECONNECT_MAX_S": "0.5",
        "STORMALERT_HEARTBEAT_SILENCE_S": "2.5", "STORMALERT_KITE_TOKEN_POLL_S": "0.2"}
NAMED = ["NSE:INFY", "NSE:RELIANCE", "NSE:TCS", "NSE:NIFTY 50"]


def all_ticks(r: redis.Redis, shards: int = 1) -> list[Tick]:
    return [t for i in range(shards) for _id, f in r.xrange(keys.ticks(i))
            for t in decode_ticks(f)]


def new_session(url: str) -> str:
    return KiteConnect("key", root=url).generate_session("request-1", SECRET)["access_token"]


def feed_state(r: redis.Redis, feed: str = "sim") -> dict[str, str]:
    return r.hgetall(keys.feed_state(feed))


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for proc in reversed(started):
            stop(proc)


def sim(processes: list[subprocess.Popen[str]], *flags: str) -> str:
    proc, url = start_sim(0, "--symbols", "40", "--rate", "200", *flags)
    processes.append(proc)
    return url


def ingest(processes: list[subprocess.Popen[str]], redis_url: str, url: str,
           **env: str) -> subprocess.Popen[str]:
    proc = start_ingest(redis_url, url, 1, **{**FAST, **env})
    processes.append(proc)
    return proc


def test_generate_session_against_the_sim(processes: list[subprocess.Popen[str]]) -> None:
    url = sim(processes, "--access-token", "demo-token")
    client = KiteConnect("key", root=url)
    session = client.generate_session("request-1", SECRET)
    assert session["user_id"] and session["api_key"] == "key"
    assert client.access_token == session["access_token"] != "demo-token"
    assert len(client.instruments()) == 40
    assert len(KiteConnect("key", access_token="demo-token", root=url).instruments()) == 40
    with pytest.raises(kite_errors.TokenException, match="checksum"):
        KiteConnect("key", root=url).generate_session("request-1", "wrong-secret")
    with pytest.raises(kite_errors.TokenException):
        KiteConnect("key", access_token="made-up", root=url).instruments()


def test_refused_token_waits_for_a_login_then_resumes(
        processes: list[subprocess.Popen[str]], r: redis.Redis, redis_url: str) -> None:
    url = sim(processes, "--access-token", "demo-token")
    worker = ingest(processes, redis_url, url, STORMALERT_KITE_ACCESS_TOKEN="stale-token")
    state = wait_for(lambda: (s := feed_state(r)).get("state") == "needs_login" and s, 15,
                     "needs_login")
    assert "stale-token" not in orjson.dumps(state).decode()
    wait_for(lambda: (heartbeat(r, "ingest-sim") or {}).get("feed_state") == "needs_login", 5,
             "needs_login in the heartbeat")
    assert r.xlen(keys.ticks(0)) == 0
    token = new_session(url)
    r.set(keys.feed_token("kite"), token)
    wait_for(lambda: feed_state(r).get("state") == "connected", 10, "connected after login")
    wait_for(lambda: r.xlen(keys.ticks(0)) > 0, 10, "ticks after login")
    assert worker.poll() is None
    stop(worker)
    assert token not in (worker.stderr.read() if worker.stderr else "")
    assert feed_state(r)["state"] == "stopped"


def test_expired_token_goes_to_needs_login_and_a_new_one_resumes(
        processes: list[subprocess.Popen[str]], r: redis.Redis, redis_url: str) -> None:
    url = sim(processes, "--access-token", "demo-token", "--expire-tokens-after", "5")
    r.set(keys.feed_token("kite"), new_session(url))
    ingest(processes, redis_url, url)
    wait_for(lambda: r.xlen(keys.ticks(0)) > 0, 5, "ticks with the first token")
    state = wait_for(lambda: (s := feed_state(r)).get("state") == "needs_login" and s, 10,
                     "needs_login after the expiry")
    assert state["reason"].startswith("redis token") and "403" in state["reason"]
    assert "expired" in state["reason"]
    before = r.xlen(keys.ticks(0))
    r.set(keys.feed_token("kite"), new_session(url))
    wait_for(lambda: r.xlen(keys.ticks(0)) > before, 5, "ticks with the new token")


def test_modes_from_configuration(processes: list[subprocess.Popen[str]], r: redis.Redis,
                                  redis_url: str) -> None:
    url = sim(processes)
    ingest(processes, redis_url, url, STORMALERT_KITE_SYMBOLS=orjson.dumps(NAMED).decode(),
           STORMALERT_KITE_MODE="ltp",
           STORMALERT_KITE_MODES='{"NSE:INFY": "full", "NSE:RELIANCE": "quote"}')
    wait_for(lambda: heartbeat(r, "ingest-sim") and r.xlen(keys.ticks(0)) > 0, 10, "ticks")
    time.sleep(1.5)
    last = {t.sym: t for t in all_ticks(r)}
    assert set(last) == set(NAMED)
    infy, reliance = last["NSE:INFY"], last["NSE:RELIANCE"]
    assert infy.bid is not None and infy.ask is not None and infy.pc is not None  # full
    assert reliance.pc is not None and reliance.bid is None and reliance.vol > 0  # quote
    for sym in ("NSE:TCS", "NSE:NIFTY 50"):  # ltp
        assert last[sym].pc is None and last[sym].vol == 0


def test_drops_and_stalls_resume_quickly(processes: list[subprocess.Popen[str]],
                                         r: redis.Redis, redis_url: str) -> None:
    url = sim(processes, "--drop-every", "2.5", "--stall-every", "3.5", "--stall-for", "3")
    # The sim trades every 20 ms here, so 1.2 s of silence only happens in a stall.
    ingest(processes, redis_url, url, STORMALERT_HEARTBEAT_SILENCE_S="1.2")
    hb = wait_for(lambda: (h := heartbeat(r, "ingest-sim")) and h["counters"]["gaps"] >= 3
                  and h["counters"].get("silences", 0) >= 1 and h, 20, "drops and a stall")
    assert hb["counters"]["reconnects"] >= 3
    assert hb["max_gap_ms"] < 2000, hb
    ticks = hb["counters"]["ticks"]
    later = wait_for(lambda: (h := heartbeat(r, "ingest-sim")) and
                     h["counters"]["ticks"] > ticks and h, 5, "ticks after the faults")
    assert later["max_gap_ms"] < 2000


def test_malformed_frames_are_counted_and_skipped(
        processes: list[subprocess.Popen[str]], r: redis.Redis, redis_url: str) -> None:
    url = sim(processes, "--malformed-every", "5")
    ingest(processes, redis_url, url)
    hb = wait_for(lambda: (h := heartbeat(r, "ingest-sim")) and
                  h["counters"]["decode_errors"] >= 10 and h, 15, "decode errors")
    assert hb["counters"]["reconnects"] == 0 and hb["connected"] == 1
    assert hb["counters"]["ticks"] > 0 and hb["counters"]["frames"] >= 40


def test_replay_plays_a_csv_exactly(processes: list[subprocess.Popen[str]], r: redis.Redis,
                                    redis_url: str, tmp_path: Path) -> None:
    rows = []
    for n in range(30):
        sym = NAMED[n % 3] if n % 7 else "NSE:NIFTY 50"
        rows.append((1_704_426_300_000 + n * 100, sym, round(1000 + n * 1.05, 2), 100 * n))
    rows.insert(5, (1_704_426_300_450, "NSE:NOT-IN-UNIVERSE", 1.0, 0))
    csv_path = tmp_path / "ticks.csv"
    csv_path.write_text("ts,symbol,ltp,volume\n" + "".join(
        f"{ts},{sym},{ltp},{vol}\n" for ts, sym, ltp, vol in rows))
    url = sim(processes, "--replay", str(csv_path), "--replay-speed", "5")
    ingest(processes, redis_url, url, STORMALERT_KITE_SYMBOLS=orjson.dumps(NAMED).decode())
    expected = [(sym, ltp) for _ts, sym, ltp, _vol in rows if sym != "NSE:NOT-IN-UNIVERSE"]
    wait_for(lambda: len(all_ticks(r)) >= len(expected), 15, "every replayed tick")
    time.sleep(0.5)
    assert [(t.sym, t.ltp) for t in all_ticks(r)] == expected


def test_nse_hours_no_ticks_after_the_close(processes: list[subprocess.Popen[str]],
                                            r: redis.Redis, redis_url: str) -> None:
    url = sim(processes, "--market-hours", "nse", "--clock", "2024-01-05T15:29:57+05:30")
    ingest(processes, redis_url, url, STORMALERT_KITE_SYMBOLS=orjson.dumps(NAMED).decode())
    wait_for(lambda: r.xlen(keys.ticks(0)) > 0, 10, "ticks before the close")
    close_ms = int(datetime.fromisoformat("2024-01-05T15:30:00+05:30").timestamp() * 1000)
    time.sleep(4)  # the sim's clock is past 15:30 now
    ticks = all_ticks(r)
    exchange_timed = [t for t in ticks if t.bid is not None]  # full packets carry it
    assert exchange_timed and all(t.ts < close_ms for t in exchange_timed)
    hb = heartbeat(r, "ingest-sim")
    assert hb and hb["connected"] == 1 and hb["counters"]["reconnects"] == 0
    stalled = len(ticks)
    time.sleep(1.5)
    assert len(all_ticks(r)) == stalled
