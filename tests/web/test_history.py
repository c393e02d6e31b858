"""The alert history (/alerts and /api/alerts) against the in-process app and a real Redis:
filters by symbol, rule and date, pages, the scan budget, delivery per channel, and each
user's own alerts only."""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any

import orjson
import pytest
import redis
from litestar.testing import TestClient

from proto import keys, store
from proto.delivery import Record
from proto.display import IST
from tests.web.rulehelp import HTML, Client, sign_in
from web.alerts import START_ID
from web.app import create_app
from web.history import AlertQuery, QueryError, parse_time, upper_bound
from web.settings import WebSettings


def ist_ms(day: int, hour: int, minute: int = 0) -> int:
    return int(datetime(2026, 11, day, hour, minute, tzinfo=IST).timestamp() * 1000)


def add(r: redis.Redis, at_ms: int, user: str, sym: str, rule: str, msg: str) -> str:
    """An alert as the engine writes it, raised at ``at_ms`` (its entry id)."""
    alert_id = f"{rule}:{at_ms - 3}-0:0"
    fields = {"id": alert_id, "rule": rule, "user": user, "sym": sym, "kind": "cross_above",
              "ltp": "1500.5", "ts": str(at_ms - 2), "rx": str((at_ms - 2) * 1000),
              "at": str(at_ms * 1000 - 500), "msg": msg, "channels": "default"}
    r.xadd(keys.ALERTS, fields, id=f"{at_ms}-0")  # type: ignore[arg-type]
    return alert_id


@pytest.fixture
def history(r: redis.Redis) -> dict[str, str]:
    """Alerts of alice and bob over three IST days, oldest first; message -> alert id."""
    rows = [(ist_ms(27, 10), "alice", "NSE:INFY", "ra", "a1 infy day1"),
            (ist_ms(28, 9, 30), "alice", "NSE:TCS", "rb", "a2 tcs day2"),
            (ist_ms(28, 11), "bob", "NSE:INFY", "rc", "b1 infy day2"),
            (ist_ms(28, 23, 59), "alice", "NSE:INFY", "ra", "a3 infy day2 late"),
            (ist_ms(29, 0, 1), "alice", "NSE:INFY", "ra", "a4 infy day3")]
    return {msg: add(r, at, user, sym, rule, msg) for at, user, sym, rule, msg in rows}


def messages(client: Client, query: str) -> list[str]:
    response = client.get(f"/api/alerts?{query}")
    assert response.status_code == 200, response.text
    return [a["msg"] for a in response.json()["alerts"]]


def test_parse_time_and_query() -> None:
    day = ist_ms(28, 0)
    assert parse_time("2026-11-28", "from", end=False) == day
    assert parse_time("2026-11-28", "to", end=True) == day + 86_400_000
    assert parse_time("2026-11-28T09:15+05:30", "from", end=False) == ist_ms(28, 9, 15)
    assert parse_time(" 1764300000000 ", "from", end=False) == 1764300000000
    for bad, reason in [("2026-11-28T09:15", "needs a UTC offset"), ("yesterday", "expected"),
                        ("2026-13-01", "expected"), ("9999-12-31", "expected")]:
        end = bad == "9999-12-31"  # the day after the last date there is
        with pytest.raises(QueryError, match=reason):
            parse_time(bad, "to", end=end)
    query = AlertQuery.parse(symbol=" nse:infy ", rule="", date_from="2026-11-28",
                             date_to="2026-11-28", before=" 5-1 ")
    assert (query.symbol, query.rule, query.before) == ("NSE:INFY", None, "5-1")
    assert (query.start_ms, query.end_ms) == (day, day + 86_400_000)
    with pytest.raises(QueryError, match="to: must be after from"):
        AlertQuery.parse(date_from="2026-11-29", date_to="2026-11-28")
    with pytest.raises(QueryError, match="before: not a page cursor"):
        AlertQuery.parse(before="1-2-3")
    # The page never goes past the live cursor handed out with it, nor its own bounds.
    assert upper_bound(AlertQuery(), "10-3") == "(10-4"
    assert upper_bound(AlertQuery(before="7-0", end_ms=9), "10-3") == "(7-0"
    assert upper_bound(AlertQuery(end_ms=5), "10-3") == "(5-0"


def test_filters(client: Client, users: dict[str, str], history: dict[str, str]) -> None:
    sign_in(client, "alice", users["alice"])
    everything = ["a4 infy day3", "a3 infy day2 late", "a2 tcs day2", "a1 infy day1"]
    assert messages(client, "") == everything
    assert messages(client, "symbol=nse:infy") == ["a4 infy day3", "a3 infy day2 late",
                                                    "a1 infy day1"]
    assert messages(client, "rule=rb") == ["a2 tcs day2"]
    assert messages(client, "from=2026-11-28&to=2026-11-28") == ["a3 infy day2 late",
                                                                 "a2 tcs day2"]
    assert messages(client, "from=2026-11-28") == everything[:3]
    assert messages(client, "to=2026-11-27") == ["a1 infy day1"]
    assert messages(client, "from=2026-11-28T10:00%2B05:30&symbol=NSE:INFY") == everything[:2]
    assert messages(client, "rule=rc") == []  # bob's rule: nothing of alice's
    assert messages(client, "from=2026-11-30") == []

    body = client.get("/api/alerts?rule=rb").json()
    assert body["next"] is None and body["cursor"] == f"{ist_ms(29, 0, 1)}-0"
    alert = body["alerts"][0]
    assert (alert["id"], alert["user"], alert["deliveries"], alert["folded_into"]) == (
        history["a2 tcs day2"], "alice", [], None)

    page = client.get("/alerts?symbol=NSE:TCS&from=2026-11-28", headers=HTML).text
    assert "a2 tcs day2" in page and "a1 infy day1" not in page and "a4 infy" not in page
    assert f'href="/alerts/{history["a2 tcs day2"]}"' in page
    assert 'value="NSE:TCS"' in page and 'value="2026-11-28"' in page
    assert "28 Nov 2026 09:29:59.998 IST" in page  # the tick's time, in IST
    assert 'id="no-history"' in client.get("/alerts?rule=zz", headers=HTML).text


def test_each_user_sees_their_own(client: Client, users: dict[str, str],
                                  history: dict[str, str]) -> None:
    sign_in(client, "bob", users["bob"])
    assert messages(client, "") == ["b1 infy day2"]
    assert messages(client, "rule=ra") == []
    page = client.get("/alerts", headers=HTML).text
    assert "b1 infy day2" in page and "a1 infy" not in page and history["a1 infy day1"] not in page
    sign_in(client, "root", users["root"])  # admins see every alert, as on the dashboard
    assert messages(client, "symbol=NSE:INFY&to=2026-11-28") == [
        "a3 infy day2 late", "b1 infy day2", "a1 infy day1"]
    assert '<td class="owner">bob</td>' in client.get("/alerts", headers=HTML).text


def test_pages_follow_each_other(client: Client, users: dict[str, str],
                                 history: dict[str, str]) -> None:
    sign_in(client, "alice", users["alice"])
    seen: list[str] = []
    query = "symbol=NSE:INFY&limit=2"
    pages = 0
    while True:
        body = client.get(f"/api/alerts?{query}").json()
        seen += [a["msg"] for a in body["alerts"]]
        pages += 1
        if body["next"] is None:
            break
        query = f"symbol=NSE:INFY&limit=2&before={body['next']}"
    assert pages == 2 and seen == ["a4 infy day3", "a3 infy day2 late", "a1 infy day1"]


def test_a_long_search_stops_at_the_scan_budget_and_goes_on(
        redis_url: str, users: dict[str, str], r: redis.Redis,
        history: dict[str, str]) -> None:
    settings = WebSettings(redis_url=redis_url, stats_interval_s=3600, history_scan=2)
    with TestClient(app=create_app(settings)) as client:
        sign_in(client, "alice", users["alice"])
        page = client.get("/alerts?symbol=NSE:TCS", headers=HTML).text
        assert "a2 tcs" not in page and 'id="searched-to"' in page
        assert "Searched back to 28 Nov 2026 23:59:00.000 IST" in page
        older = html.unescape(page.split('id="older"')[0].rsplit('href="', 1)[1].split('"')[0])
        assert older == f"/alerts?symbol=NSE%3ATCS&before={ist_ms(28, 23, 59)}-0"
        page = client.get(older, headers=HTML).text
        assert "a2 tcs day2" in page and 'id="newest"' in page
        assert 'href="/alerts?symbol=NSE%3ATCS"' in page


def test_delivery_per_channel(client: Client, users: dict[str, str], r: redis.Redis,
                              history: dict[str, str]) -> None:
    webhook, phone = "json://127.0.0.1:9/hook", "tgram://123456:secret-bot-token/42"
    r.hset(keys.user_channels("alice"), mapping={
        store.channel_id(webhook): orjson.dumps({"url": webhook, "tag": "default"}),
        store.channel_id(phone): orjson.dumps({"url": phone, "tag": "phone"})})
    sent = Record(status="sent", attempts=1, latency_ms=123.4, at=1)
    failed = Record(status="failed", attempts=5, error="HTTP 500 from the API", at=2)
    r.hset(keys.delivery(history["a4 infy day3"]), mapping={
        store.channel_id(webhook): sent.to_json(), store.channel_id(phone): failed.to_json()})
    r.hset(keys.delivery(history["a3 infy day2 late"]), "folded", "digest:alice:m29410000")
    sign_in(client, "alice", users["alice"])

    alerts: list[dict[str, Any]] = client.get("/api/alerts?limit=2").json()["alerts"]
    by_tag = {row["tag"]: row for row in alerts[0]["deliveries"]}
    assert by_tag == {
        "default": {"channel": f"json:{store.channel_id(webhook)}", "tag": "default",
                    "status": "sent", "attempts": 1, "error": "", "latency_ms": 123.4, "at": 1},
        "phone": {"channel": f"tgram:{store.channel_id(phone)}", "tag": "phone",
                  "status": "failed", "attempts": 5, "error": "HTTP 500 from the API",
                  "latency_ms": None, "at": 2},
    }
    assert alerts[1]["folded_into"] == "digest:alice:m29410000"

    page = client.get("/alerts", headers=HTML).text
    assert f'json:{store.channel_id(webhook)} <span class="muted">(default)</span>: ' \
           '<span class="status-sent">sent</span> 123 ms' in page
    assert '<span class="status-failed">failed</span> <span class="muted">after 5 tries' in page
    assert 'title="HTTP 500 from the API"' in page
    assert 'href="/alerts/digest:alice:m29410000" class="folded"' in page
    assert "secret-bot-token" not in page and "127.0.0.1:9" not in page


def test_bad_filters(client: Client, users: dict[str, str], history: dict[str, str]) -> None:
    sign_in(client, "alice", users["alice"])
    response = client.get("/api/alerts?from=someday")
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "from": "expected a date (YYYY-MM-DD), ISO-8601 with an offset or epoch ms"}
    assert client.get("/api/alerts?before=nope").status_code == 400
    assert client.get("/api/alerts?before=18446744073709551616-0").status_code == 400
    assert client.get("/api/alerts?limit=0").status_code == 400
    page = client.get("/alerts?from=2026-11-29&to=2026-11-28", headers=HTML)
    assert page.status_code == 200
    assert '<p class="field-error" id="to-error" role="alert">To: must be after from</p>' \
        in page.text
    assert 'id="history"' not in page.text


def test_an_empty_stream(client: Client, users: dict[str, str]) -> None:
    sign_in(client, "alice", users["alice"])
    assert client.get("/api/alerts").json() == {"alerts": [], "cursor": START_ID, "next": None}
    assert 'id="no-history"' in client.get("/alerts", headers=HTML).text
