"""The simulator and the ingest worker as real processes against a real Redis."""

from __future__ import annotations

import gzip
import signal
import subprocess
import sys
import textwrap
import urllib.request
from collections import Counter
from collections.abc import Iterator

import orjson
import pytest
import redis

from proto import keys
from proto.events import decode_ticks
from tests.ingest.procs import ROOT, heartbeat, start_ingest, start_sim, stop, wait_for

NAMED = ("NSE:INFY", "NSE:RELIANCE", "NSE:TCS", "NSE:NIFTY 50")
SHARDS = 3


@pytest.fixture
def sim() -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc, url = start_sim(0, "--symbols", "300", "--rate", "300", "--seed", "7")
    try:
        yield proc, url
    finally:
        stop(proc)


def ticks_by_stream(r: redis.Redis, shards: int) -> dict[int, list]:
    return {i: [t for _id, f in r.xrange(keys.ticks(i)) for t in decode_ticks(f)]
            for i in range(shards)}


def test_sim_serves_the_instruments_dump(sim: tuple[subprocess.Popen[str], str]) -> None:
    _proc, url = sim
    req = urllib.request.Request(url + "/instruments/NSE", headers={"Authorization": "token a:b"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["Content-Type"] == "text/csv"
        body = gzip.decompress(resp.read()).decode()
    lines = body.splitlines()
    assert lines[0].startswith("instrument_token,exchange_token,tradingsymbol,name")
    rows = {line.split(",")[2]: line for line in lines[1:]}
    assert {"INFY", "RELIANCE", "TCS", "NIFTY 50"} <= set(rows)
    assert int(rows["NIFTY 50"].split(",")[0]) & 0xFF == 9


def test_kiteconnect_reads_the_dump(sim: tuple[subprocess.Popen[str], str]) -> None:
    from kiteconnect import KiteConnect

    _proc, url = sim
    client = KiteConnect("key", access_token="token", root=url)
    rows = client.instruments()
    assert len(rows) == 300
    assert len({row["instrument_token"] for row in rows}) == 300
    assert {row["segment"] for row in rows} >= {"NSE", "INDICES"}


def test_ingest_writes_named_symbols_to_their_shards(
        sim: tuple[subprocess.Popen[str], str], r: redis.Redis, redis_url: str) -> None:
    _sim_proc, url = sim
    ingest = start_ingest(redis_url, url, SHARDS)
    try:
        def all_named() -> dict[int, list] | None:
            streams = ticks_by_stream(r, SHARDS)
            seen = {t.sym for ticks in streams.values() for t in ticks}
            # Subscribing streams quote mode until the mode message lands: wait for full.
            full = any(t.sym == "NSE:INFY" and t.bid is not None
                       for ticks in streams.values() for t in ticks)
            return streams if set(NAMED) <= seen and full else None

        streams = wait_for(all_named, 20, "ticks of the four named symbols")
        for shard, ticks in streams.items():
            for tick in ticks:
                assert keys.shard_for(tick.sym, SHARDS) == shard
                assert tick.src == "kite" and tick.ltp > 0 and tick.rx > 0 and tick.ts > 0
        by_sym = {t.sym: t for ticks in streams.values() for t in ticks
                  if t.sym != "NSE:INFY" or t.bid is not None}
        assert by_sym["NSE:INFY"].tok == "408065" and by_sym["NSE:INFY"].bid is not None
        assert by_sym["NSE:NIFTY 50"].vol == 0 and by_sym["NSE:NIFTY 50"].pc is not None
        record = orjson.loads(r.hget(keys.INSTRUMENTS, "NSE:INFY"))
        assert record == {"tok": "408065", "src": "kite", "name": "INFOSYS"}
        hb = wait_for(lambda: (h := heartbeat(r, "ingest-sim")) and h["connected"] == 1 and h,
                      10, "heartbeat of a connected worker")
        assert hb["subscribed"] == 300
        assert {"frames", "ticks", "decode_errors", "drops", "reconnects"} <= set(hb["counters"])
        # The engine's groups exist from before the first tick: a shard started later
        # evaluates every tick ingest wrote meanwhile.
        for shard in range(SHARDS):
            [group] = r.xinfo_groups(keys.ticks(shard))
            assert group["name"] == keys.ENGINE_GROUP and group["last-delivered-id"] == "0-0"
            assert group["lag"] == r.xlen(keys.ticks(shard)) > 0
    finally:
        code = stop(ingest)
    assert code == 0, ingest.stderr.read() if ingest.stderr else ""
    assert r.get(keys.heartbeat("ingest-sim")) is None


def test_every_named_symbol_ticks_each_second(
        sim: tuple[subprocess.Popen[str], str], r: redis.Redis, redis_url: str) -> None:
    _sim_proc, url = sim
    ingest = start_ingest(redis_url, url, 1)
    try:
        wait_for(lambda: r.xlen(keys.ticks(0)) > 0, 15, "first ticks")
        first = [t for _i, f in r.xrange(keys.ticks(0)) for t in decode_ticks(f)][-1].rx
        wait_for(lambda: max(t.rx for _i, f in r.xrange(keys.ticks(0))
                             for t in decode_ticks(f)) > first + 3_000_000, 15, "3 s of ticks")
    finally:
        stop(ingest)
    window = [t for _i, f in r.xrange(keys.ticks(0)) for t in decode_ticks(f)
              if first + 500_000 < t.rx <= first + 3_000_000]
    seconds = Counter((t.sym, (t.rx - first) // 1_000_000) for t in window if t.sym in NAMED)
    for sym in NAMED:
        for second in (1, 2):
            assert seconds[(sym, second)] >= 1, (sym, second)


def test_ingest_reconnects_when_the_sim_restarts(r: redis.Redis, redis_url: str) -> None:
    sim_proc, url = start_sim(0, "--symbols", "50", "--rate", "100")
    port = url.rsplit(":", 1)[1]
    ingest = start_ingest(redis_url, url, 2, STORMALERT_RECONNECT_MIN_S="0.2",
                          STORMALERT_RECONNECT_MAX_S="1")
    try:
        wait_for(lambda: r.xlen(keys.ticks(0)) + r.xlen(keys.ticks(1)) > 0, 20, "ticks")
        stop(sim_proc, signal.SIGKILL)
        wait_for(lambda: (heartbeat(r, "ingest-sim") or {}).get("connected") == 0, 10,
                 "ingest to notice the lost connection")
        before = r.xlen(keys.ticks(0)) + r.xlen(keys.ticks(1))
        sim_proc, _url = start_sim(int(port), "--symbols", "50", "--rate", "100")
        wait_for(lambda: r.xlen(keys.ticks(0)) + r.xlen(keys.ticks(1)) > before + 5, 20,
                 "ticks after the restart")
        hb = wait_for(lambda: (h := heartbeat(r, "ingest-sim")) and h["connected"] == 1 and h,
                      10, "reconnected heartbeat")
        assert hb["counters"]["reconnects"] >= 1
        assert ingest.poll() is None
    finally:
        stop(sim_proc)
        assert stop(ingest) == 0


def test_ingest_exits_with_one_line_when_redis_is_down(
        sim: tuple[subprocess.Popen[str], str]) -> None:
    _proc, url = sim
    ingest = start_ingest("redis://127.0.0.1:1/0", url, 2)
    _out, err = ingest.communicate(timeout=30)
    assert ingest.returncode != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "cannot reach Redis" in lines[0]


def test_sim_stdout_is_one_line_and_sigint_stops_it() -> None:
    proc, url = start_sim(0, "--symbols", "10")
    assert url.startswith("http://127.0.0.1:")
    assert stop(proc, signal.SIGINT) == 0
    assert proc.stdout is not None and proc.stdout.read() == ""


KITE_TICKER_CLIENT = textwrap.dedent("""
    import json, os, sys, threading
    from kiteconnect import KiteTicker
    seen = {}
    ticker = KiteTicker("key", "token", root=sys.argv[1])
    def on_connect(ws, response):
        ws.subscribe([408065, 738561, 2953217, 256265])
        ws.set_mode(ws.MODE_FULL, [408065, 256265])
        ws.set_mode(ws.MODE_LTP, [738561])
    def on_ticks(ws, ticks):
        for t in ticks:
            seen[str(t["instrument_token"])] = {"mode": t["mode"], "ltp": t["last_price"],
                                                 "depth": "depth" in t}
        if len(seen) == 4 and seen["408065"]["mode"] == "full" \\
                and seen["738561"]["mode"] == "ltp":
            print(json.dumps(seen), flush=True)
            os._exit(0)
    ticker.on_connect = on_connect
    ticker.on_ticks = on_ticks
    threading.Timer(20, lambda: os._exit(3)).start()
    ticker.connect()
""")


def test_official_kite_ticker_receives_ticks(sim: tuple[subprocess.Popen[str], str]) -> None:
    _proc, url = sim
    ws_url = "ws" + url.removeprefix("http")
    proc = subprocess.run([sys.executable, "-c", KITE_TICKER_CLIENT, ws_url], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = orjson.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["408065"]["mode"] == "full" and seen["408065"]["depth"]
    assert seen["256265"]["mode"] == "full" and not seen["256265"]["depth"]
    assert seen["738561"]["mode"] == "ltp"
    assert seen["2953217"]["mode"] == "quote"
    assert all(v["ltp"] > 0 for v in seen.values())
