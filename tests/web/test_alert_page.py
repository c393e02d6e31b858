"""The alert page messages link to, and its JSON: the alert, its delivery log per channel,
digests and folded alerts, visibility per user, and no channel secret on any page."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
import redis
from litestar.testing import TestClient

from proto import keys, store
from proto.delivery import FOLDED_FIELD, Record
from proto.display import alert_path as alert_href
from proto.events import Alert
from tests.web.conftest import login

HTML = {"Accept": "text/html,application/xhtml+xml"}
SECRET = "hunter2-webhook-pw"
HOOK = f"json://bot:{SECRET}@127.0.0.1:9/hook"
WINDOW = "m29000000"
DIGEST = f"digest:alice:{WINDOW}"


def publish(r: redis.Redis, user: str, sym: str = "NSE:INFY", n: int = 1) -> Alert:
    now_us = time.time_ns() // 1000
    tick_entry = f"{now_us // 1000}-{n}"
    alert = Alert(id=f"r{n}-{user}:{tick_entry}:0", rule=f"r{n}-{user}", user=user, sym=sym,
                  kind="cross_above", ltp=1523.4, ts=now_us // 1000 - 5, rx=now_us - 2500,
                  at=now_us, msg="crossed above 1520", ref={"level": 1520.0, "prev": 1519.5})
    r.xadd(keys.ALERTS, alert.to_fields())  # type: ignore[arg-type]
    return alert


@pytest.fixture
def alice_alert(r: redis.Redis, users: dict[str, str]) -> tuple[Alert, str, str]:
    """An alice alert sent on one channel and failed on another; (alert, ok cid, bad cid)."""
    ok_cid = store.add_channel(r, "alice", HOOK)
    bad_cid = store.add_channel(r, "alice", "json://127.0.0.1:9/down", "urgent")
    alert = publish(r, "alice")
    r.hset(keys.delivery(alert.id), mapping={
        ok_cid: Record("sent", 2, latency_ms=12.5, at=alert.at + 12_500).to_json(),
        bad_cid: Record("failed", 5, error="ConnectError: connection refused",
                        at=alert.at + 90_000).to_json(),
    })
    return alert, ok_cid, bad_cid


def signed_in(client: TestClient[Any], users: dict[str, str], name: str) -> TestClient[Any]:
    assert login(client, name, users[name]).status_code == 303
    return client


def test_own_alert_page_shows_the_alert_and_its_delivery_log(
        client: TestClient[Any], users: dict[str, str],
        alice_alert: tuple[Alert, str, str]) -> None:
    alert, ok_cid, bad_cid = alice_alert
    page = signed_in(client, users, "alice").get(alert_href(alert.id), headers=HTML)
    assert page.status_code == 200, page.text
    text = page.text
    for shown in ("NSE:INFY", "cross_above", "1,523.40", "crossed above 1520", "IST",
                  "2.50 ms", "1,520.00", "1,519.50", f"json:{ok_cid}", f"json:{bad_cid}",
                  "sent", "failed", "ConnectError: connection refused", "12.5 ms", "urgent"):
        assert shown in text, shown
    assert '<td class="num">5</td>' in text and '<td class="num">2</td>' in text
    assert SECRET not in text and "127.0.0.1:9" not in text


def test_another_users_alert_is_not_found_but_an_admin_sees_it(
        client: TestClient[Any], users: dict[str, str],
        alice_alert: tuple[Alert, str, str]) -> None:
    alert = alice_alert[0]
    signed_in(client, users, "bob")
    assert client.get(alert_href(alert.id), headers=HTML).status_code == 404
    assert client.get(f"/api{alert_href(alert.id)}").status_code == 404
    signed_in(client, users, "root")
    page = client.get(alert_href(alert.id), headers=HTML)
    assert page.status_code == 200 and "alice" in page.text


def test_unknown_alert_is_not_found_and_anonymous_is_sent_to_sign_in(
        client: TestClient[Any], users: dict[str, str],
        alice_alert: tuple[Alert, str, str]) -> None:
    response = client.get(alert_href(alice_alert[0].id), headers=HTML, follow_redirects=False)
    assert response.status_code in (302, 303, 307)
    assert response.headers["location"].startswith("/login?next=/alerts/")
    signed_in(client, users, "alice")
    assert client.get("/alerts/nope:1-0:0", headers=HTML).status_code == 404
    assert client.get("/api/alerts/nope:1-0:0").status_code == 404


def test_json_endpoint_has_the_same_report(
        client: TestClient[Any], users: dict[str, str],
        alice_alert: tuple[Alert, str, str]) -> None:
    alert, ok_cid, bad_cid = alice_alert
    body = signed_in(client, users, "alice").get(f"/api{alert_href(alert.id)}").json()
    assert body["id"] == alert.id and body["user"] == "alice"
    assert body["alert"]["sym"] == "NSE:INFY" and body["alert"]["latency_ms"] == "2.50"
    assert {ref["name"] for ref in body["alert"]["ref"]} == {"level", "prev"}
    rows = {row["channel"]: row for row in body["deliveries"]}
    assert rows[f"json:{ok_cid}"]["status"] == "sent"
    assert rows[f"json:{ok_cid}"]["attempts"] == 2
    assert rows[f"json:{bad_cid}"]["error"] == "ConnectError: connection refused"
    assert body["folded_into"] is None and body["digest_of"] is None
    assert SECRET not in orjson.dumps(body).decode()


@pytest.fixture
def digest(r: redis.Redis, users: dict[str, str]) -> tuple[Alert, Alert]:
    """Two alice alerts folded into one digest that was sent on her channel."""
    cid = store.add_channel(r, "alice", HOOK)
    folded = [publish(r, "alice", sym, n) for n, sym in enumerate(("NSE:TCS", "NSE:SBIN"), 10)]
    for alert in folded:
        r.hset(keys.delivery(alert.id), FOLDED_FIELD, DIGEST)
        r.rpush(keys.user_digest_items("alice", WINDOW), orjson.dumps({
            "id": alert.id, "sym": alert.sym, "kind": alert.kind, "ltp": alert.ltp,
            "ts": alert.ts, "ch": ["default"]}))
    r.hset(keys.delivery(DIGEST), cid, Record("sent", 1, latency_ms=3.0, at=1).to_json())
    return folded[0], folded[1]


def test_digest_links_to_its_alerts_and_they_link_back(
        client: TestClient[Any], users: dict[str, str], digest: tuple[Alert, Alert]) -> None:
    signed_in(client, users, "alice")
    page = client.get(alert_href(DIGEST), headers=HTML)
    assert page.status_code == 200, page.text
    assert "Digest of 2 alerts" in page.text
    for alert in digest:
        assert f'href="{alert_href(alert.id)}"' in page.text
        folded_page = client.get(alert_href(alert.id), headers=HTML)
        assert folded_page.status_code == 200
        assert f'href="{alert_href(DIGEST)}"' in folded_page.text
        assert alert.sym in folded_page.text
    body = client.get(f"/api{alert_href(DIGEST)}").json()
    assert [item["id"] for item in body["digest_of"]] == [a.id for a in digest]
    assert body["deliveries"][0]["status"] == "sent"
    assert client.get(f"/api{alert_href(digest[0].id)}").json()["folded_into"]["id"] == DIGEST
    signed_in(client, users, "bob")
    assert client.get(alert_href(DIGEST), headers=HTML).status_code == 404


def test_dashboard_rows_link_to_the_alert_page(
        client: TestClient[Any], users: dict[str, str],
        alice_alert: tuple[Alert, str, str]) -> None:
    page = signed_in(client, users, "alice").get("/", headers=HTML)
    assert f'href="{alert_href(alice_alert[0].id)}"' in page.text
    assert 'action="/test-message"' in page.text
