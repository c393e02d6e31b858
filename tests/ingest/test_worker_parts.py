"""The worker's parts in-process: backoff, connection planning, instrument selection, the
tick writer against a real Redis, and the connection's watchdog and resubscribe."""

from __future__ import annotations

import asyncio
import random

import orjson
import pytest
import redis
from websockets.asyncio.server import ServerConnection, serve

from ingest import instruments as master
from ingest.backoff import ConnectionPolicy, backoff_s
from ingest.feed_status import FeedStatus
from ingest.kite_feed import KiteConnection, socket_url
from ingest.kite_plan import rebalance, subscribe_messages
from ingest.settings import IngestSettings
from ingest.sim import kite_wire as wire
from ingest.tokens import AccessTokens
from ingest.writer import TickWriter
from proto import bus, keys
from proto.events import Tick, decode_ticks
from proto.runtime import Stats
from tests.ingest.writes import blocked_read_of_one_write, tick


@pytest.mark.parametrize(("attempt", "low", "high"), [
    (1, 0.25, 0.5), (2, 0.5, 1.0), (3, 1.0, 2.0), (6, 8.0, 16.0), (7, 15.0, 30.0),
    (50, 15.0, 30.0), (10_000, 15.0, 30.0),
])
def test_backoff_is_capped_exponential_with_jitter(attempt: int, low: float, high: float) -> None:
    rng = random.Random(attempt)
    delays = [backoff_s(attempt, 0.5, 30.0, rng) for _ in range(200)]
    assert all(low <= d <= high for d in delays)
    assert len(set(delays)) > 1


def test_rebalance_respects_the_limits() -> None:
    def sizes(wanted: range, per: int = 3000) -> tuple[list[int], int]:
        slots, left = rebalance([], {t: "full" for t in wanted}, per, 3)
        return [len(s) for s in slots], left

    assert sizes(range(7000)) == ([3000, 3000, 1000], 0)
    assert sizes(range(9500)) == ([3000, 3000, 3000], 500)
    assert sizes(range(0)) == ([], 0)


def test_rebalance_keeps_tokens_in_place_and_fills_free_room() -> None:
    current = [{1: "full", 2: "ltp"}, {3: "quote"}]
    wanted = {2: "full", 3: "quote", 4: "ltp", 5: "ltp", 6: "ltp"}
    slots, left = rebalance(current, wanted, 2, 3)
    assert slots == [{2: "full", 4: "ltp"}, {3: "quote", 5: "ltp"}, {6: "ltp"}] and left == 0
    slots, left = rebalance(current, wanted, 2, 2)
    assert slots == [{2: "full", 4: "ltp"}, {3: "quote", 5: "ltp"}] and left == 1


def test_select_by_symbols_or_exchanges() -> None:
    everything = [master.Instrument(1, "NSE:A", "a"), master.Instrument(2, "BSE:B", "b"),
                  master.Instrument(3, "NSE:C", "c")]
    assert master.select(everything, ["NSE:C", "NSE:X"], []) == ([everything[2]], ["NSE:X"])
    assert master.select(everything, [], ["BSE"]) == ([everything[1]], [])
    assert master.select(everything, [], []) == (everything, [])


def test_settings() -> None:
    sim = IngestSettings(feed="sim", sim_url="http://127.0.0.1:9")
    assert sim.ws_url() == "ws://127.0.0.1:9" and sim.api_url() == "http://127.0.0.1:9"
    assert sim.credentials() == ("sim-key", "sim-token")
    IngestSettings(feed="kite")  # the key comes with the dashboard's login
    with pytest.raises(ValueError, match="KITE_API_KEY"):
        IngestSettings(feed="kite", kite_access_token="tok-s3cret")
    kite = IngestSettings(feed="kite", kite_api_key="k", kite_access_token="tok-s3cret")
    assert kite.ws_url() == "wss://ws.kite.trade" and "tok-s3cret" not in repr(kite)
    assert socket_url("ws://h:1", "k", "a b") == "ws://h:1?api_key=k&access_token=a+b"
    assert IngestSettings(feed="kite", kite_api_key="k").kite_access_token.get_secret_value() == ""



def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORMALERT_KITE_MODES", '{"NSE:INFY": "ltp", "NFO": "quote"}')
    monkeypatch.setenv("STORMALERT_KITE_INSTRUMENTS_REFRESH_AT", "08:30")
    settings = IngestSettings()
    assert settings.kite_modes == {"NSE:INFY": "ltp", "NFO": "quote"}
    assert settings.kite_instruments_refresh_at.hour == 8
    assert settings.kite_instruments_refresh_at.minute == 30


def test_writer_groups_by_shard_in_batches(r: redis.Redis, redis_url: str) -> None:
    async def scenario() -> Stats:
        stats = Stats("t")
        client = bus.aconnect(redis_url)
        writer = TickWriter(client, stats, shards=3, batch_max=7, flush_ms=1, queue_max_ticks=100)
        ticks = [tick(f"NSE:S{n % 10}", n) for n in range(100)]
        await writer.write(ticks)
        await client.aclose()
        return stats

    stats = asyncio.run(scenario())
    total = 0
    for shard in range(3):
        entries = r.xrange(keys.ticks(shard))
        for _id, fields in entries:
            batch = decode_ticks(fields)
            assert 1 <= len(batch) <= 7
            assert all(keys.shard_for(t.sym, 3) == shard for t in batch)
            total += len(batch)
    assert total == 100 and stats.counters["written"] == 100


def test_writer_drops_and_counts_when_full() -> None:
    async def scenario() -> Stats:
        stats = Stats("t")
        writer = TickWriter(None, stats, shards=1, batch_max=10,  # type: ignore[arg-type]
                            flush_ms=1, queue_max_ticks=4)
        for n in range(5):
            writer.offer([tick("NSE:A", n), tick("NSE:B", n)])
        return stats

    assert asyncio.run(scenario()).counters["drops"] == 6


class NoRedis:
    """Stands in for Redis where a test needs no stored token or state."""

    async def get(self, _key: str) -> None:
        return None

    async def hset(self, _key: str, mapping: dict[str, str]) -> int:
        return len(mapping)


def test_connection_watchdog_reconnects_and_resubscribes() -> None:
    """A server that accepts and then stays silent: the client must give up after the
    silence limit, reconnect, and send subscribe + mode again each time."""
    received: list[list[dict]] = []

    async def silent(ws: ServerConnection) -> None:
        messages = [orjson.loads(await ws.recv()), orjson.loads(await ws.recv())]
        received.append(messages)
        await ws.send(wire.frame([wire.ltp_packet(wire.Quote(408065, 157370, 0, 0, 0, 0))]))
        await ws.wait_closed()

    async def scenario() -> tuple[Stats, list[list[Tick]]]:
        stats = Stats("t")
        offered: list[list[Tick]] = []
        writer = TickWriter(None, stats, shards=1, batch_max=1,  # type: ignore[arg-type]
                            flush_ms=1, queue_max_ticks=10)
        writer.offer = offered.append  # type: ignore[method-assign]
        async with serve(silent, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            status = FeedStatus(NoRedis(), "t", stats)  # type: ignore[arg-type]
            tokens = AccessTokens(NoRedis(), "t", status, poll_s=1,  # type: ignore[arg-type]
                                  expiry=None)
            conn = KiteConnection("t", f"ws://127.0.0.1:{port}",
                                  {408065: "full", 256265: "full"}, {408065: "NSE:INFY"},
                                  writer, stats, tokens, status,
                                  ConnectionPolicy(silence_s=0.3, reconnect_min_s=0.05,
                                                   reconnect_max_s=0.1, connect_timeout_s=2))
            task = asyncio.create_task(conn.run())
            await asyncio.sleep(1.5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        return stats, offered

    stats, offered = asyncio.run(scenario())
    assert stats.counters["reconnects"] >= 2
    assert len(received) >= 2
    expected = [orjson.loads(m) for m in subscribe_messages({408065: "full", 256265: "full"})]
    assert all(messages == expected for messages in received)
    assert offered and offered[0][0].sym == "NSE:INFY" and offered[0][0].ltp == 1573.7
    assert stats.gauges["connected"] == 0


def test_writer_entry_is_the_documented_batch_format() -> None:
    from proto.events import encode_ticks_json

    ticks = [tick("NSE:A", 1), Tick("CDS:X", "7", "kite", 83.1234567, 5, 1, 2, oi=3,
                                    ask=83.125, pc=83.0, o=83.1, h=83.2, l=82.9)]
    written = orjson.loads(encode_ticks_json(ticks))
    # the documented fields, in the documented order, absent optional ones left out
    assert written == [t.to_dict() for t in ticks]
    assert [list(d) for d in written] == [list(t.to_dict()) for t in ticks]


def test_writer_takes_every_queued_frame_up_to_its_budget_in_one_pipeline(
        r: redis.Redis, redis_url: str) -> None:
    """A late Redis answer must not leave the writer one frame behind per round trip: what
    queued meanwhile goes in the next pipeline, whole frames up to the tick budget."""
    async def scenario() -> tuple[Stats, list[int]]:
        stats = Stats("t")
        client = bus.aconnect(redis_url)
        writer = TickWriter(client, stats, shards=2, batch_max=50, flush_ms=0,
                            queue_max_ticks=100_000, write_max_ticks=1_000)
        for frame in range(30):  # 30 frames of 100 ticks queued while no write ran
            writer.offer([tick(f"NSE:S{n % 40}", frame * 100 + n) for n in range(100)])
        sizes = []
        while writer.queued:
            before = writer.queued
            await writer.write(await writer._collect())
            sizes.append(before - writer.queued)
        await client.aclose()
        return stats, sizes

    stats, sizes = asyncio.run(scenario())
    assert sizes == [1000, 1000, 1000]
    assert stats.counters["written"] == 3000 and stats.gauges["queued"] == 0
    assert sum(len(decode_ticks(f)) for i in range(2) for _, f in r.xrange(keys.ticks(i))) == 3000


def test_a_blocked_reader_gets_every_entry_of_one_write_at_once(
        r: redis.Redis, redis_url: str) -> None:
    """The engine blocks on its stream; a frame's ticks (here three entries for one shard)
    must reach it in one read, not the first entry alone."""
    r.xgroup_create(keys.ticks(0), keys.ENGINE_GROUP, id="$", mkstream=True)
    entries = blocked_read_of_one_write(redis_url, r)
    assert [len(decode_ticks(f)) for _id, f in entries] == [10, 10, 10]


def test_writer_queue_is_bounded_in_ticks_not_frames() -> None:
    stats = Stats("t")
    writer = TickWriter(None, stats, shards=1, batch_max=10,  # type: ignore[arg-type]
                        flush_ms=0, queue_max_ticks=1_000)
    writer.offer([tick("NSE:A", n) for n in range(900)])
    writer.offer([tick("NSE:B", n) for n in range(200)])  # would pass 1000: dropped whole
    writer.offer([tick("NSE:C", n) for n in range(100)])  # fits exactly
    assert writer.queued == 1_000 and stats.counters["drops"] == 200
