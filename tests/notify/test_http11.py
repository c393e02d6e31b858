"""notify.http11 against a real loopback server: connections kept and reused, a connection
the server closed while idle replaced, redirects as requests follows them, chunked answers,
and a timed-out request never sent twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from notify import http11
from tests.notify.apiserver import Answer, serving

T = TypeVar("T")


def run(body: Callable[[http11.Client], Awaitable[T]], max_connections: int = 4) -> T:
    async def main() -> T:
        client = http11.Client(max_connections)
        try:
            return await body(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_requests_reuse_kept_connections_up_to_the_limit() -> None:
    with serving() as api:
        async def body(client: http11.Client) -> list[int]:
            for i in range(10):
                await client.request("POST", f"{api.base}/seq/{i}", body=b"x")
            replies = await asyncio.gather(*(
                client.request("POST", f"{api.base}/par/{i}", body=b"y") for i in range(30)))
            return [r.status for r in replies]

        assert run(body, max_connections=3) == [200] * 30
        assert len({r.peer_port for r in api.under("/seq/")}) == 1
        assert len({r.peer_port for r in api.under("/")}) <= 3
        assert [r.body for r in api.under("/par/")] == [b"y"] * 30


def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    with serving(idle_timeout_s=0.2) as api:
        async def body(client: http11.Client) -> list[int]:
            first = await client.request("POST", f"{api.base}/a", body=b"1")
            await asyncio.sleep(0.5)
            second = await client.request("POST", f"{api.base}/b", body=b"2")
            return [first.status, second.status]

        assert run(body) == [200, 200]
        first, second = api.requests
        assert first.peer_port != second.peer_port
        assert (first.body, second.body) == (b"1", b"2")


@pytest.mark.parametrize(("status", "method", "body"), [
    (302, "GET", b""), (303, "GET", b""), (307, "POST", b"data"), (308, "POST", b"data"),
])
def test_redirects_are_followed_as_requests_does(status: int, method: str,
                                                 body: bytes) -> None:
    with serving() as api:
        api.script["/from"] = [Answer(status, b"", (("Location", "/to?x=1"),))]

        async def go(client: http11.Client) -> http11.Response:
            return await client.request("POST", f"{api.base}/from", body=b"data",
                                        headers={"Content-Type": "text/plain"},
                                        auth=("u", "p"))

        assert run(go).status == 200
        _first, second = api.requests
        assert (second.method, second.path, second.query) == (method, "/to", {"x": ["1"]})
        assert second.body == body
        assert second.headers["Authorization"] == "Basic dTpw"  # same host: kept


def test_redirects_are_not_followed_when_the_url_says_so() -> None:
    with serving() as api:
        api.script["/from"] = [Answer(302, b"", (("Location", "/to"),))]
        reply = run(lambda c: c.request("POST", f"{api.base}/from", follow_redirects=False))
        assert reply.status == 302
        assert len(api.requests) == 1


def test_chunked_answers_are_read_whole_and_the_connection_kept() -> None:
    with serving() as api:
        api.script["/c"] = [Answer(200, b'{"ok": true, "n": 12345}', chunked=True)] * 2

        async def body(client: http11.Client) -> list[bytes]:
            return [(await client.request("POST", f"{api.base}/c")).body for _ in range(2)]

        assert run(body) == [b'{"ok": true, "n": 12345}'] * 2
        assert len({r.peer_port for r in api.requests}) == 1


def test_a_timed_out_request_is_not_sent_again() -> None:
    with serving() as api:
        api.script["/slow"] = [Answer(delay_s=0.8)]

        async def body(client: http11.Client) -> None:
            await client.request("POST", f"{api.base}/warm")  # a kept connection exists
            await client.request("POST", f"{api.base}/slow", body=b"once", timeout_s=0.2)

        started = time.monotonic()
        with pytest.raises(TimeoutError):
            run(body)
        assert time.monotonic() - started < 0.7
        time.sleep(1.0)
        assert [r.body for r in api.under("/slow")] == [b"once"]


def test_refused_connection_is_an_http_error() -> None:
    with serving() as api:
        port = api.port
    with pytest.raises(http11.HTTPError, match="cannot connect"):
        run(lambda c: c.request("POST", f"http://127.0.0.1:{port}/gone", timeout_s=1.0))


def test_a_hanging_path_does_not_hold_up_other_paths_of_its_host() -> None:
    """Many users' webhooks share a host: one endpoint that hangs takes at most its share of
    the host's connections, and another path on the same host is answered meanwhile."""
    with serving() as api:
        api.script["/hangs"] = [Answer(delay_s=2.0)] * 20

        async def body(client: http11.Client) -> tuple[float, int]:
            stuck = [asyncio.create_task(client.request("POST", f"{api.base}/hangs/x",
                                                        timeout_s=5.0)) for _ in range(20)]
            await asyncio.sleep(0.3)  # the hanging path holds what it may
            started = time.monotonic()
            other = await client.request("POST", f"{api.base}/other", timeout_s=5.0)
            waited = time.monotonic() - started
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
            return waited, other.status

        waited, status = run(body, max_connections=20)
        assert status == 200
        assert waited < 1.0, f"another path of the host waited {waited:.2f} s"
        # the hanging path had its share (20 // PATH_SHARE) at once, never more
        assert len(api.under("/hangs/")) == 20 // http11.PATH_SHARE


def test_one_path_still_uses_its_share_of_connections_at_once() -> None:
    with serving() as api:
        api.script["/p"] = [Answer(delay_s=0.3)] * 10

        async def body(client: http11.Client) -> float:
            started = time.monotonic()
            await asyncio.gather(*(client.request("POST", f"{api.base}/p") for _ in range(10)))
            return time.monotonic() - started

        assert run(body, max_connections=100) < 0.9  # 10 at once, not one after another
        assert len({r.peer_port for r in api.under("/p")}) == 10
