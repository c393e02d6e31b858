"""The live stream against a real server process (``python -m web``): TestClient buffers
whole responses, so an endless event stream needs a real socket."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import redis
from httpx_sse import ServerSentEvent

from proto import keys
from tests.web.conftest import add_alert, login, set_quote
from tests.web.server import WebServer, wait_for
from tests.web.sse import READ_TIMEOUT_S, next_event, stream


@pytest.fixture(scope="module")
def base_url(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = WebServer(redis_url, tmp_path_factory.mktemp("web")).start()
    try:
        yield server.url
    finally:
        server.kill()


@pytest.fixture
def alice(base_url: str, users: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=READ_TIMEOUT_S) as client:
        assert login(client, "alice", users["alice"]).status_code == 303
        yield client


def alert_ids(events: Iterator[ServerSentEvent], n: int) -> list[str]:
    return [next_event(events, "alert").id for _ in range(n)]


def test_alert_reaches_its_user_only(alice: httpx.Client, r: redis.Redis) -> None:
    with stream(alice) as events:
        add_alert(r, "bob", "for bob")
        entry_id = add_alert(r, "alice", "for alice", sym="NSE:TCS", ltp=3999.5)
        event = next_event(events, "alert")
    data = orjson.loads(event.data)
    assert event.id == entry_id
    assert data["msg"] == "for alice" and data["sym"] == "NSE:TCS"
    assert data["ltp"] == "3,999.50" and data["latency_ms"] == "2.50"


def test_reconnect_with_last_event_id_resumes_exactly(alice: httpx.Client,
                                                      r: redis.Redis) -> None:
    with stream(alice) as events:
        sent = [add_alert(r, "alice", f"a{i}") for i in range(2)]
        received = alert_ids(events, 2)
    assert received == sent

    while_away = [add_alert(r, "alice", f"b{i}") for i in range(3)]
    add_alert(r, "bob", "not for alice")
    with stream(alice, headers={"Last-Event-ID": received[-1]}) as events:
        assert alert_ids(events, 3) == while_away
        after = add_alert(r, "alice", "after reconnect")
        assert alert_ids(events, 1) == [after]


def test_first_connection_starts_at_the_page_cursor(alice: httpx.Client,
                                                    r: redis.Redis) -> None:
    cursor = alice.get("/api/alerts").json()["cursor"]
    between_page_and_stream = add_alert(r, "alice", "written before the stream opened")
    with stream(alice, params={"since": cursor}) as events:
        assert alert_ids(events, 1) == [between_page_and_stream]


def test_cursor_moves_past_other_users_alerts(alice: httpx.Client, r: redis.Redis) -> None:
    with stream(alice) as events:
        others = add_alert(r, "bob", "bob only")
        event = next(e for e in events if e.id == others)
    assert event.data == "" and event.event == "message"


def test_changed_quotes_are_pushed(alice: httpx.Client, r: redis.Redis) -> None:
    set_quote(r, "NSE:INFY", 1500.0, pc=1500.0)
    with stream(alice) as events:
        first = orjson.loads(next_event(events, "quotes").data)
        assert [q["sym"] for q in first] == ["NSE:INFY"]
        set_quote(r, "NSE:RELIANCE", 2901.0)
        changed = orjson.loads(next_event(events, "quotes").data)
    assert [q["sym"] for q in changed] == ["NSE:RELIANCE"]
    assert changed[0]["ltp"] == "2,901.00"


def test_quiet_stream_sends_heartbeat_comments(alice: httpx.Client) -> None:
    with alice.stream("GET", "/events") as response:
        deadline = time.monotonic() + 3
        for line in response.iter_lines():
            if line == ": hb":
                break
            assert time.monotonic() < deadline, "no heartbeat within 3 s"


def open_streams(r: redis.Redis) -> int | None:
    beat = r.get(keys.heartbeat("web"))
    return orjson.loads(beat).get("sse_open") if beat else None


def test_closed_streams_end_their_server_side_reader(alice: httpx.Client,
                                                     r: redis.Redis) -> None:
    with stream(alice):
        assert wait_for(lambda: (open_streams(r) or 0) >= 1), "heartbeat never counted the stream"
    assert wait_for(lambda: open_streams(r) == 0), "the stream's reader outlived its client"


def test_stream_requires_login(base_url: str) -> None:
    response = httpx.get(f"{base_url}/events", headers={"Accept": "text/event-stream"})
    assert response.status_code == 401


def test_server_stops_promptly_with_an_open_stream(redis_url: str, r: redis.Redis,
                                                   users: dict[str, str],
                                                   tmp_path: Path) -> None:
    server = WebServer(redis_url, tmp_path).start()
    try:
        with httpx.Client(base_url=server.url, timeout=READ_TIMEOUT_S) as client:
            login(client, "alice", users["alice"])
            with stream(client):
                started = time.monotonic()
                assert server.terminate() == 0
                assert time.monotonic() - started < 2.5  # streams end without the 3 s backstop
        output = server.output()
        assert "Application shutdown complete" in output, output
        assert "stopped by SIGTERM" in output and "Traceback" not in output, output
    finally:
        server.kill()


def test_a_disabled_users_stream_ends(alice: httpx.Client, r: redis.Redis) -> None:
    """Disabling a user (or resetting their password) ends their open streams within a
    heartbeat interval (0.5 s here); the reconnection is refused."""
    from proto import store

    with stream(alice) as events:
        store.set_disabled(r, "alice", True)
        event = next_event(events, "status")
        assert orjson.loads(event.data) == {"session": "ended"}
        assert next(events, None) is None  # the server closed the stream
    assert alice.get("/events").status_code == 401
