"""The official upstox-python-sdk against the simulator: its REST authorize call (pointed at
the sim by ``Configuration.host``) and ``MarketDataStreamerV3`` itself. The streamer's URL is
hard-coded to ``wss://api.upstox.com``, so its process gets ``https_proxy`` pointing at a
loopback CONNECT proxy that terminates TLS and relays to the sim; the sim's 302 then sends it
to a plain ``ws://`` single-use URL on the sim. The SDK code runs unchanged, in a subprocess
(its socket thread and callbacks are process-global)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.ingest.procs import ROOT, running_sim
from tests.ingest.tls_proxy import TlsProxy

INFY, NIFTY, TCS = "NSE_EQ|INE009A01021", "NSE_INDEX|Nifty 50", "NSE_EQ|INE467B01029"
TOKEN = "sdk-token"

SDK_CLIENT = textwrap.dedent("""
    import json, os, sys, threading
    import upstox_client
    conf = upstox_client.Configuration()
    conf.host = sys.argv[1]
    conf.access_token = sys.argv[2]
    api = upstox_client.ApiClient(conf)
    auth = upstox_client.WebsocketApi(api).get_market_data_feed_authorize_v3()
    result = {"authorize": auth.data.authorized_redirect_uri, "types": [], "feeds": {}}
    keys = json.loads(sys.argv[3])
    streamer = upstox_client.MarketDataStreamerV3(api, keys, "full")
    def on_message(message):
        kind = message.get("type", "initial_feed")  # MessageToDict drops the default enum
        result["types"].append(kind)
        if kind == "market_info":
            result["status"] = message["marketInfo"]["segmentStatus"]
        for key, feed in message.get("feeds", {}).items():
            result["feeds"].setdefault(key, []).append(feed)
        live = [t for t in result["types"] if t == "live_feed"]
        if live and all(k in result["feeds"] for k in keys) and len(live) >= 3:
            print(json.dumps(result), flush=True)
            os._exit(0)
    def on_error(error):
        print("error:", error, file=sys.stderr, flush=True)
    streamer.on("message", on_message)
    streamer.on("error", on_error)
    threading.Timer(20, lambda: os._exit(3)).start()
    streamer.connect()
""")


@pytest.fixture
def sim_and_proxy(tmp_path: Path) -> Iterator[tuple[str, TlsProxy]]:
    with running_sim("--symbols", "60", "--rate", "300", "--upstox-token", TOKEN) as url:
        proxy = TlsProxy(tmp_path, int(url.rsplit(":", 1)[1]))
        try:
            yield url, proxy
        finally:
            proxy.close()


def test_market_data_streamer_v3_receives_the_sim_feed(
        sim_and_proxy: tuple[str, TlsProxy]) -> None:
    url, proxy = sim_and_proxy
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["https_proxy"] = f"http://127.0.0.1:{proxy.port}"
    proc = subprocess.run(
        [sys.executable, "-c", SDK_CLIENT, url, TOKEN, orjson.dumps([INFY, NIFTY, TCS])],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = orjson.loads(proc.stdout.strip().splitlines()[-1])
    # The socket path, then the single-use wss:// URL its 302 names: both through the proxy.
    assert proxy.connects == ["CONNECT api.upstox.com:443 HTTP/1.1"] * 2
    assert result["authorize"].startswith(url.replace("http://", "ws://"))
    assert result["types"][0] == "market_info"
    assert result["status"]["NSE_EQ"] == "NORMAL_OPEN"
    assert result["types"][1] == "initial_feed"
    assert "live_feed" in result["types"][2:]
    infy = result["feeds"][INFY][0]["fullFeed"]["marketFF"]
    assert infy["ltpc"]["ltp"] > 0 and int(infy["ltpc"]["ltt"]) > 1_600_000_000_000
    assert len(infy["marketLevel"]["bidAskQuote"]) == 5
    assert {bar["interval"] for bar in infy["marketOHLC"]["ohlc"]} == {"1d"}
    assert result["feeds"][INFY][0]["requestMode"] == "full_d5"
    assert "indexFF" in result["feeds"][NIFTY][0]["fullFeed"]
