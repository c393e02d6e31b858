"""The test-message button: the web app asks through sa:notify:tests, a real notifier sends
to a loopback webhook and the result page shows each channel's outcome; without a notifier
the page says so instead of waiting forever."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from litestar.testing import TestClient

from proto import keys, store
from tests.notify.conftest import NotifierProc, Webhook
from tests.web.conftest import csrf_token, login
from web import testmsg
from web.app import create_app
from web.settings import WebSettings

HTML = {"Accept": "text/html,application/xhtml+xml"}
SECRET = "s3cret-hook-pw"
STATE = re.compile(r'data-state="(\w+)"')


def press_button(client: TestClient[Any]) -> str:
    """Press the dashboard's button as a browser does; returns the result page's path."""
    page = client.get("/", headers=HTML)
    response = client.post("/test-message", data={"_csrf_token": csrf_token(page.text)},
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    location = str(response.headers["location"])
    assert re.fullmatch(r"/test-message/[A-Za-z0-9_-]{16}", location)
    return location


def state_of(client: TestClient[Any], path: str) -> tuple[str, str]:
    page = client.get(path, headers=HTML)
    assert page.status_code == 200, page.text
    match = STATE.search(page.text)
    assert match, page.text
    return match.group(1), page.text


def wait_state(client: TestClient[Any], path: str, wanted: str,
               timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        state, text = state_of(client, path)
        if state == wanted:
            return text
        assert time.monotonic() < deadline, f"still {state!r}:\n{text}"
        time.sleep(0.2)


def test_the_button_needs_a_csrf_token_and_a_session(client: TestClient[Any],
                                                     users: dict[str, str]) -> None:
    assert client.post("/test-message", follow_redirects=False).status_code in (302, 303, 401,
                                                                                 403)
    login(client, "alice", users["alice"])
    assert client.post("/test-message", follow_redirects=False).status_code == 403


def test_without_a_notifier_the_page_says_so(settings: WebSettings, r: redis.Redis,
                                             users: dict[str, str]) -> None:
    quick = settings.model_copy(update={"test_message_wait_s": 0.5})
    with TestClient(app=create_app(quick)) as client:
        login(client, "alice", users["alice"])
        path = press_button(client)
        state, text = state_of(client, path)
        assert state == "waiting" and 'http-equiv="refresh"' in text
        text = wait_state(client, path, "no_notifier", timeout_s=5)
        assert "not running" in text and 'http-equiv="refresh"' not in text
        assert client.get(f"/api{path}").json()["state"] == "no_notifier"
    [(_eid, fields)] = r.xrange(keys.NOTIFY_TESTS)  # type: ignore[misc]
    assert fields["user"] == "alice" and path.endswith(fields["id"])


def test_another_users_request_is_not_found(client: TestClient[Any],
                                            users: dict[str, str]) -> None:
    login(client, "alice", users["alice"])
    path = press_button(client)
    login(client, "bob", users["bob"])
    assert client.get(path, headers=HTML).status_code == 404
    assert client.get(f"/api{path}").status_code == 404
    assert client.get("/test-message/not-an-id", headers=HTML).status_code == 404


def test_the_notifier_sends_and_the_page_shows_each_outcome(
        client: TestClient[Any], r: redis.Redis, users: dict[str, str], webhook: Webhook,
        notifier: Callable[..., NotifierProc]) -> None:
    ok_url = webhook.url("/hook").replace("json://", f"json://bot:{SECRET}@")
    ok_cid = store.add_channel(r, "alice", ok_url)
    bad_cid = store.add_channel(r, "alice", webhook.url("/fail"), "urgent")
    store.add_channel(r, "bob", webhook.url("/bob"))
    proc = notifier()
    login(client, "alice", users["alice"])
    path = press_button(client)
    text = wait_state(client, path, "done", timeout_s=30)

    [hit] = webhook.at("/hook")
    assert "Test message for alice" in str(hit.body.get("message"))
    assert len(webhook.at("/fail")) == 1 and webhook.at("/bob") == []
    assert f"json:{ok_cid}" in text and f"json:{bad_cid}" in text
    assert re.search(rf"json:{ok_cid}</th>\s*<td>default</td>\s*<td class=\"up\">ok", text)
    assert re.search(rf"json:{bad_cid}</th>\s*<td>urgent</td>\s*<td class=\"down\">failed: ", text)
    assert SECRET not in text and f"127.0.0.1:{webhook.port}" not in text
    assert 'http-equiv="refresh"' not in text
    body = client.get(f"/api{path}").json()
    assert body["channels"] == 2
    assert {row["channel"]: row["ok"] for row in body["results"]} == {
        f"json:{ok_cid}": True, f"json:{bad_cid}": False}
    assert SECRET not in str(body)
    # Acked: a restarted notifier would not send it again.
    assert r.xpending(keys.NOTIFY_TESTS, keys.NOTIFY_GROUP)["pending"] == 0  # type: ignore[index]
    assert proc.stop() == 0
    assert proc.final_stats()["test_messages"] == 1


@pytest.mark.parametrize(("raw", "at_ms", "state", "pending"), [
    ({"requested_ms": "1000"}, 1500, "waiting", True),
    ({"requested_ms": "1000"}, 12_000, "no_notifier", False),
    ({"requested_ms": "1000", "picked_ms": "1100", "channels": "1"}, 12_000, "sending", True),
    ({"requested_ms": "1000", "picked_ms": "1100"}, 100_000, "stalled", False),
    ({"requested_ms": "1000", "picked_ms": "1100", "channels": "0", "done_ms": "1200"}, 1300,
     "done", False),
])
def test_state(raw: dict[str, str], at_ms: int, state: str, pending: bool) -> None:
    view = testmsg.test_state("x" * 16, raw, at_ms, wait_s=10.0)
    assert (view["state"], view["pending"]) == (state, pending)


def test_state_lists_each_channel_and_skips_unreadable_rows() -> None:
    raw = {"requested_ms": "1", "picked_ms": "2", "channels": "2", "done_ms": "3",
           "ch:aaa": '{"channel": "json:aaa", "tag": "default", "ok": true, "error": ""}',
           "ch:bbb": "not json"}
    view = testmsg.test_state("x" * 16, raw, 4, wait_s=10.0)
    assert view["results"] == [{"channel": "json:aaa", "tag": "default", "ok": True,
                                "error": ""}]
    assert view["channels"] == 2
