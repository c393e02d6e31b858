"""The Settings page: channels (shown redacted, added with a checked apprise URL, removed,
tested), quiet hours and storm limit with inline errors, the password change; and its JSON
twin /api/channels and /api/prefs."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from litestar.testing import TestClient

from proto import keys, store
from tests.web.conftest import csrf_token, login
from web import settings_page
from web.app import create_app
from web.session import COOKIE
from web.settings import WebSettings

HTML = {"Accept": "text/html,application/xhtml+xml"}
SECRET_URL = "json://hook-user:s3cret-pw@127.0.0.1:9/path"


@pytest.fixture
def alice(client: TestClient[Any], users: dict[str, str]) -> TestClient[Any]:
    assert login(client, "alice", users["alice"]).status_code == 303
    return client


def post_form(client: TestClient[Any], path: str, **fields: str) -> Any:
    page = client.get("/settings", headers=HTML)
    return client.post(path, headers=HTML, follow_redirects=False,
                       data={**fields, "_csrf_token": csrf_token(page.text)})


def test_page_lists_channels_redacted(alice: TestClient[Any], r: redis.Redis) -> None:
    cid = store.add_channel(r, "alice", SECRET_URL, "urgent")
    store.add_channel(r, "bob", "json://127.0.0.1:9/bob-only", "default")
    page = alice.get("/settings", headers=HTML)
    assert page.status_code == 200
    assert f"json:{cid}" in page.text and "urgent" in page.text
    assert "s3cret-pw" not in page.text and "hook-user" not in page.text
    assert "bob-only" not in page.text
    assert 'href="/settings"' in page.text  # the nav link
    assert 'action="/test-message"' in page.text  # the existing test-message button


def test_settings_needs_a_session(client: TestClient[Any]) -> None:
    page = client.get("/settings", headers=HTML, follow_redirects=False)
    assert page.status_code in (302, 303) and page.headers["location"] == "/login?next=/settings"


def test_add_and_remove_a_channel(alice: TestClient[Any], r: redis.Redis) -> None:
    added = post_form(alice, "/settings/channels", url=SECRET_URL, tag="urgent")
    assert added.status_code == 303 and added.headers["location"] == "/settings?done=channel"
    [channel] = store.list_channels(r, "alice")
    assert channel == {"id": store.channel_id(SECRET_URL), "url": SECRET_URL, "tag": "urgent"}
    assert "Channel added." in alice.get(added.headers["location"], headers=HTML).text

    removed = post_form(alice, f"/settings/channels/{channel['id']}/delete")
    assert removed.status_code == 303
    assert store.list_channels(r, "alice") == []
    assert post_form(alice, f"/settings/channels/{channel['id']}/delete").status_code == 404


@pytest.mark.parametrize(("url", "tag", "problem"), [
    ("nope://s3cret-pw@host", "default", "apprise does not accept this URL"),
    ("just text s3cret-pw", "default", "not a notification URL"),
    (SECRET_URL, "bad tag!", "tag: 1-32 letters"),
])
def test_refused_channel_is_explained_and_not_echoed(alice: TestClient[Any], r: redis.Redis,
                                                     url: str, tag: str, problem: str) -> None:
    response = post_form(alice, "/settings/channels", url=url, tag=tag)
    assert response.status_code == 422
    assert problem in response.text and 'id="channel-error"' in response.text
    assert "s3cret-pw" not in response.text
    assert store.list_channels(r, "alice") == []


def test_forms_need_their_csrf_token(alice: TestClient[Any], r: redis.Redis) -> None:
    for path, data in (("/settings/channels", {"url": SECRET_URL}),
                       ("/settings/prefs", {"quiet": "22:00-07:00"}),
                       ("/settings/tokens", {"name": "bot"})):
        assert alice.post(path, data=data, headers=HTML).status_code == 403
    assert store.list_channels(r, "alice") == [] and store.get_prefs(r, "alice").quiet is None


def test_prefs_are_saved_validated_and_cleared(alice: TestClient[Any], r: redis.Redis) -> None:
    saved = post_form(alice, "/settings/prefs", quiet="22:30-07:00", max_per_minute="12")
    assert saved.status_code == 303
    assert store.get_prefs(r, "alice") == store.NotifyPrefs(12, (22 * 60 + 30, 7 * 60))
    page = alice.get("/settings", headers=HTML).text
    assert 'value="22:30-07:00"' in page and 'value="12"' in page

    refused = post_form(alice, "/settings/prefs", quiet="25:00-01:00", max_per_minute="3")
    assert refused.status_code == 422
    assert 'id="quiet-error"' in refused.text and "hours 00-23" in refused.text
    assert 'value="25:00-01:00"' in refused.text  # what was typed stays in the field
    assert store.get_prefs(r, "alice").max_per_minute == 12  # nothing written
    both = post_form(alice, "/settings/prefs", quiet="soon", max_per_minute="-1")
    assert 'id="quiet-error"' in both.text and 'id="max_per_minute-error"' in both.text

    cleared = post_form(alice, "/settings/prefs", quiet="", max_per_minute="0")
    assert cleared.status_code == 303
    assert store.get_prefs(r, "alice") == store.NotifyPrefs(0, None)
    assert store.get_prefs(r, "bob") == store.NotifyPrefs()


def test_password_change(client: TestClient[Any], settings: WebSettings, r: redis.Redis,
                         users: dict[str, str]) -> None:
    login(client, "alice", users["alice"])
    with TestClient(app=create_app(settings)) as other_device:  # another browser
        login(other_device, "alice", users["alice"])
        # Sessions count from the second after a change (whole seconds, like JWT's iat).
        signed_in_s = int(time.time())
        while int(time.time()) == signed_in_s:
            time.sleep(0.05)
        for fields, problem in (
            ({"current": "wrong-password", "new": "n3w-password", "confirm": "n3w-password"},
             "current password is not right"),
            ({"current": users["alice"], "new": "n3w-password", "confirm": "other-pass"},
             "differ"),
            ({"current": users["alice"], "new": "short", "confirm": "short"},
             "at least 8 characters"),
        ):
            response = post_form(client, "/settings/password", **fields)
            assert response.status_code == 422 and problem in response.text
            assert 'id="password-error"' in response.text and fields["new"] not in response.text
        assert store.check_password(r, "alice", users["alice"]) is not None

        old_cookie = client.cookies[COOKIE]
        changed = post_form(client, "/settings/password", current=users["alice"],
                            new="n3w-password", confirm="n3w-password")
        assert changed.status_code == 303
        assert changed.headers["location"] == "/settings?done=password"
        assert client.cookies[COOKIE] != old_cookie
        assert client.get("/settings", headers=HTML).status_code == 200  # still signed in
        assert other_device.get("/api/prefs").status_code == 401  # the other session ended
    assert store.check_password(r, "alice", "n3w-password") is not None
    assert store.check_password(r, "alice", users["alice"]) is None


def test_api_prefs(alice: TestClient[Any], r: redis.Redis) -> None:
    assert alice.get("/api/prefs").json() == {"max_per_minute": None, "quiet": None}
    headers = {"x-csrftoken": alice.cookies["csrftoken"]}
    put = alice.put("/api/prefs", json={"max_per_minute": 5, "quiet": "9:00-10:00"},
                    headers=headers)
    assert put.status_code == 200 and put.json() == {"max_per_minute": 5, "quiet": "09:00-10:00"}
    bad = alice.put("/api/prefs", json={"quiet": "nope"}, headers=headers)
    assert bad.status_code == 400 and "bad quiet hours" in bad.json()["detail"]
    assert store.get_prefs(r, "alice").quiet == (9 * 60, 10 * 60)
    assert alice.put("/api/prefs", json={}, headers=headers).json() == {
        "max_per_minute": None, "quiet": None}


def test_api_channels(alice: TestClient[Any], r: redis.Redis) -> None:
    headers = {"x-csrftoken": alice.cookies["csrftoken"]}
    added = alice.post("/api/channels", json={"url": SECRET_URL, "tag": "urgent"},
                       headers=headers)
    assert added.status_code == 201 and "s3cret" not in added.text
    cid = added.json()["id"]
    assert alice.get("/api/channels").json() == {
        "channels": [{"id": cid, "channel": f"json:{cid}", "tag": "urgent"}]}
    refused = alice.post("/api/channels", json={"url": "nope://x"}, headers=headers)
    assert refused.status_code == 400 and "apprise does not accept" in refused.json()["detail"]
    assert alice.delete(f"/api/channels/{cid}", headers=headers).status_code == 204
    assert alice.delete(f"/api/channels/{cid}", headers=headers).status_code == 404
    assert r.hlen(keys.user_channels("alice")) == 0


def test_password_changes_are_rate_limited(alice: TestClient[Any]) -> None:
    statuses = [post_form(alice, "/settings/password", current="wrong-password", new="x" * 9,
                          confirm="y" * 9).status_code
                for _ in range(settings_page.PASSWORD_CHANGES_PER_MINUTE + 1)]
    assert statuses == [422] * settings_page.PASSWORD_CHANGES_PER_MINUTE + [429]
