"""The web's one reader of ``sa:alerts`` for every event stream (web.live.AlertHub), against
a real Redis, and many more streams than the web's Redis connection pool holds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import redis

from proto.bus import aconnect
from tests.web.conftest import add_alert, session_cookie
from tests.web.server import WebServer
from web.live import AlertHub
from web.session import COOKIE


def test_the_hub_holds_what_follows_its_base(redis_url: str, r: redis.Redis) -> None:
    before = add_alert(r, "alice", "before the hub")

    async def scenario() -> None:
        ar = aconnect(redis_url)
        hub = AlertHub(ar, keep=3, block_ms=50)
        task = asyncio.create_task(hub.run())
        try:
            while hub.base is None:
                await asyncio.sleep(0.01)
            assert hub.covers(before) and not hub.covers("0-0")
            assert hub.after(before) == []
            ids = [add_alert(r, "alice", f"m{i}") for i in range(8)]
            while not hub.after(before) or hub.after(before)[-1][0] != ids[-1]:
                await hub.wait(1.0)
            # Keeps at least the newest ``keep``; what it dropped is no longer covered.
            held = [entry_id for entry_id, _f in hub.after("0-1")]
            assert held == ids[-len(held):] and 3 <= len(held) <= 6
            assert not hub.covers(before) and hub.covers(held[0])
            assert [e[0] for e in hub.after(ids[-2])] == [ids[-1]]
            assert [e[1]["msg"] for e in hub.after(ids[-3])] == ["m6", "m7"]
        finally:
            task.cancel()
            await ar.aclose()

    asyncio.run(scenario())


async def _stream(port: int, cookie: str, got: asyncio.Queue[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
                 f"Cookie: {COOKIE}={cookie}\r\n\r\n".encode())
    try:
        assert b" 200 " in await reader.readline()
        await got.put("open")
        while line := await reader.readline():
            if line.startswith(b"data:") and b'"msg":"for everyone"' in line:
                await got.put("alert")
    finally:
        writer.close()


def test_more_streams_than_redis_connections(redis_url: str, r: redis.Redis,
                                             users: dict[str, str], tmp_path: Path) -> None:
    """150 streams of one user (the web's pool holds 100 Redis connections): every one gets
    the alert, none waits for a connection of its own."""
    server = WebServer(redis_url, tmp_path).start()
    try:
        cookie = session_cookie(server.url, "alice", users["alice"])

        async def scenario() -> None:
            got: asyncio.Queue[str] = asyncio.Queue()
            tasks = [asyncio.create_task(_stream(server.port, cookie, got)) for _ in range(150)]
            try:
                for _ in range(150):
                    assert await asyncio.wait_for(got.get(), 20) == "open"
                await asyncio.sleep(0.5)
                add_alert(r, "alice", "for everyone")
                for _ in range(150):
                    assert await asyncio.wait_for(got.get(), 10) == "alert"
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run(scenario())
    finally:
        server.kill()
