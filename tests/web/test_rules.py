"""The rules pages against the in-process app and a real Redis: create, edit, pause, resume
and delete through the forms (with and without htmx), errors shown beside their fields,
and nobody but the owner sees or touches a rule."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import orjson
import pytest
import redis

from proto import keys
from proto.display import IST, alert_path
from tests.web.conftest import add_alert
from tests.web.rulehelp import (
    HTML,
    Client,
    api_headers,
    changes,
    load_instruments,
    post_form,
    sign_in,
    stored,
)

SAVED_RE = re.compile(r"^/rules\?saved=(r[0-9a-f]{8})$")
EXPIRY = "2026-12-31T15:30"
EXPIRY_MS = int(datetime(2026, 12, 31, 15, 30, tzinfo=IST).timestamp() * 1000)


@pytest.fixture
def alice(client: Client, users: dict[str, str], r: redis.Redis) -> Client:
    load_instruments(r)
    # A channel of alice's under the tag "phone" (written as the store writes it).
    r.hset(keys.user_channels("alice"), "0123456789ab",
           orjson.dumps({"url": "json://127.0.0.1:9/hook", "tag": "phone"}))
    return sign_in(client, "alice", users["alice"])


def create(client: Client, fields: dict[str, Any]) -> str:
    response = post_form(client, "/rules", fields)
    assert response.status_code == 303, response.text[-3000:]
    match = SAVED_RE.match(response.headers["location"])
    assert match, response.headers["location"]
    return match.group(1)


KINDS: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"symbol": "nse:infy", "kind": "window_pct", "params.pct": "1.5", "params.window_s": "300",
      "params.direction": "up", "frequency": "once", "cooldown_s": "60", "expires_at": EXPIRY,
      "market_hours_only": "on", "channels": ["default", "phone"]},
     {"symbol": "NSE:INFY", "kind": "window_pct",
      "params": {"pct": 1.5, "window_s": 300.0, "direction": "up"}, "frequency": "once",
      "cooldown_s": 60.0, "expires_at": EXPIRY_MS, "market_hours_only": True,
      "channels": ["default", "phone"]}),
    ({"symbol": "NSE:TCS", "kind": "channel", "params.low": "3900", "params.high": "4100.5",
      "params.on": "exit", "channels": "phone"},
     {"symbol": "NSE:TCS", "kind": "channel",
      "params": {"low": 3900.0, "high": 4100.5, "on": "exit"}, "frequency": "every",
      "cooldown_s": 0.0, "expires_at": None, "market_hours_only": False, "channels": ["phone"]}),
    ({"symbol": "NSE:RELIANCE", "kind": "rsi", "params.above": "70", "channels": "default"},
     {"kind": "rsi", "params": {"period": 14, "above": 70.0, "below": None}}),
    ({"symbol": "NSE:INFY", "kind": "volume_spike", "params.window_s": "60",
      "params.factor": "3", "channels": "default"},
     {"kind": "volume_spike", "params": {"window_s": 60, "factor": 3.0, "baseline_windows": 20}}),
    ({"symbol": "NSE:NIFTY 50", "kind": "sma_cross", "params.fast": "5", "params.slow": "20",
      "params.direction": "down", "frequency": "once_per_bar", "channels": "default"},
     {"symbol": "NSE:NIFTY 50", "kind": "sma_cross",
      "params": {"fast": 5, "slow": 20, "direction": "down"}, "frequency": "once_per_bar"}),
]


@pytest.mark.parametrize(("form", "expected"), KINDS, ids=[k[0]["kind"] for k in KINDS])
def test_create_through_the_form(alice: Client, r: redis.Redis, form: dict[str, Any],
                                 expected: dict[str, Any]) -> None:
    rule_id = create(alice, form)
    rule = stored(r, rule_id)
    assert rule is not None and rule["user"] == "alice" and rule["active"] is True
    assert {k: rule[k] for k in expected} == expected
    assert r.smembers(keys.user_rules("alice")) == {rule_id}
    assert changes(r) == [("put", rule_id)]  # what the engine shards apply live

    page = alice.get(f"/rules?saved={rule_id}", headers=HTML).text
    row = page[page.index(f'id="rule-{rule_id}"'):]
    row = row[:row.index("</tr>")]
    assert expected["kind"] in row and "active" in row and "saved" in row
    assert f'href="/rules/{rule_id}/test"' in row  # Test on history
    assert f'action="/rules/{rule_id}/pause"' in row


def test_the_form_offers_every_kind_and_the_users_channel_tags(alice: Client) -> None:
    page = alice.get("/rules/new?kind=window_pct", headers=HTML).text
    for kind in ("cross_above", "window_pct", "channel", "volume_spike", "rsi", "orb",
                 "ema_cross", "above", "below", "trailing_pct", "change_pct"):
        assert f'<option value="{kind}"' in page
    assert '<option value="window_pct" selected>' in page
    assert 'name="params.window_s"' in page and 'name="params.level"' not in page
    assert 'value="phone"' in page and 'value="default" checked' in page
    assert 'hx-get="/rules/params"' in page


def test_kind_fields_without_script_and_with_htmx(alice: Client, r: redis.Redis) -> None:
    # Without script: "Show this kind's fields" posts the form back; nothing is stored and
    # what was typed stays.
    response = post_form(alice, "/rules", {"_action": "kind", "symbol": "NSE:TCS",
                                           "kind": "channel", "cooldown_s": "30"})
    assert response.status_code == 200
    assert 'name="params.low"' in response.text and 'name="params.high"' in response.text
    assert 'value="NSE:TCS"' in response.text and 'value="30"' in response.text
    assert 'class="field-error"' not in response.text
    assert r.hlen(keys.RULES) == 0 and changes(r) == []
    # With htmx: the kind's fieldset alone.
    fragment = alice.get("/rules/params?kind=rsi", headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and fragment.text.lstrip().startswith("<fieldset")
    assert 'name="params.period"' in fragment.text and "<html" not in fragment.text
    assert alice.get("/rules/params?kind=nope").status_code == 404


def test_errors_are_shown_beside_their_fields(alice: Client, r: redis.Redis) -> None:
    response = post_form(alice, "/rules", {
        "symbol": "infy", "kind": "window_pct", "params.pct": "abc", "params.window_s": "-5",
        "cooldown_s": "-1", "expires_at": "soon", "channels": "default"})
    assert response.status_code == 422
    page = response.text
    errors = dict(re.findall(r'<p class="field-error" id="([\w-]+)-error">([^<]*)</p>', page))
    assert errors == {
        "symbol": "symbol must look like EXCHANGE:TRADINGSYMBOL, e.g. NSE:INFY",
        "p-pct": "Input should be a valid number, unable to parse string as a number",
        "p-window_s": "window_s must be a finite number &gt; 0",
        "cooldown_s": "cooldown_s must be a finite number &gt;= 0",
        "expires_at": "expires_at must be epoch ms or ISO-8601 with an offset",
    }
    assert 'aria-describedby="p-window_s-error"' in page
    assert 'value="abc"' in page and 'value="-5"' in page  # what was typed stays
    assert r.hlen(keys.RULES) == 0 and changes(r) == []


@pytest.mark.parametrize(("fields", "where", "message"), [
    ({"symbol": "NSE:NOPE", "kind": "cross_above", "params.level": "10",
      "channels": "default"}, "symbol", "unknown symbol &#39;NSE:NOPE&#39;"),
    ({"symbol": "NSE:INFY", "kind": "cross_above", "params.level": "10"},
     "channels", "channels must be a non-empty list of tag names without commas"),
    ({"symbol": "NSE:INFY", "kind": "cross_above", "channels": "default"},
     "p-level", "Field required"),
    ({"symbol": "NSE:INFY", "kind": "channel", "params.low": "10", "params.high": "5",
      "channels": "default"}, "p-high", "high must be above low (10)"),
    ({"symbol": "NSE:INFY", "kind": "rsi", "channels": "default"},
     "params", "give above, below or both (RSI thresholds between 0 and 100)"),
])
def test_store_and_kind_errors(alice: Client, r: redis.Redis, fields: dict[str, Any],
                               where: str, message: str) -> None:
    response = post_form(alice, "/rules", fields)
    assert response.status_code == 422
    assert f'<p class="field-error" id="{where}-error">{message}</p>' in response.text
    assert r.hlen(keys.RULES) == 0


def test_edit_keeps_the_id_and_the_paused_state(alice: Client, r: redis.Redis) -> None:
    rule_id = create(alice, KINDS[0][0])
    form = alice.get(f"/rules/{rule_id}/edit", headers=HTML).text
    assert f'action="/rules/{rule_id}"' in form
    assert 'value="NSE:INFY"' in form and 'name="params.pct" id="p-pct" value="1.5"' in form
    assert f'value="{EXPIRY}:00"' in form and 'id="market_hours_only" name="market_hours_only"' \
        ' checked' in form
    assert '<option value="once" selected>' in form
    assert f'href="/rules/{rule_id}/test"' in form

    assert post_form(alice, f"/rules/{rule_id}/pause", {}).status_code == 303
    response = post_form(alice, f"/rules/{rule_id}", {
        "symbol": "NSE:TCS", "kind": "trailing_pct", "params.pct": "2",
        "channels": "default"})
    assert response.headers["location"] == f"/rules?saved={rule_id}"
    rule = stored(r, rule_id)
    assert rule is not None
    assert (rule["symbol"], rule["kind"], rule["params"], rule["active"]) == (
        "NSE:TCS", "trailing_pct", {"pct": 2.0, "direction": "down"}, False)
    assert rule["expires_at"] is None and rule["market_hours_only"] is False
    assert r.hlen(keys.RULES) == 1
    assert changes(r) == [("put", rule_id)] * 3

    bad = post_form(alice, f"/rules/{rule_id}", {"symbol": "NSE:TCS", "kind": "trailing_pct",
                                                 "params.pct": "100", "channels": "default"})
    assert bad.status_code == 422 and "pct must be below 100" in bad.text
    assert f'action="/rules/{rule_id}"' in bad.text
    assert stored(r, rule_id) == rule


def test_pause_resume_and_delete(alice: Client, r: redis.Redis) -> None:
    rule_id = create(alice, KINDS[1][0])
    # A plain form goes back to the list.
    response = post_form(alice, f"/rules/{rule_id}/pause", {})
    assert (response.status_code, response.headers["location"]) == (303, "/rules")
    assert stored(r, rule_id)["active"] is False  # type: ignore[index]
    page = alice.get("/rules", headers=HTML).text
    assert f'action="/rules/{rule_id}/resume"' in page and ">paused<" in page
    # htmx gets the row alone to swap in.
    row = post_form(alice, f"/rules/{rule_id}/resume", {}, htmx=True)
    assert row.status_code == 200 and row.text.lstrip().startswith(f'<tr id="rule-{rule_id}"')
    assert ">active<" in row.text and f'action="/rules/{rule_id}/pause"' in row.text
    assert 'name="_csrf_token"' in row.text
    assert stored(r, rule_id)["active"] is True  # type: ignore[index]

    gone = post_form(alice, f"/rules/{rule_id}/delete", {}, htmx=True)
    assert gone.status_code == 200 and gone.text == ""
    assert stored(r, rule_id) is None and r.smembers(keys.user_rules("alice")) == set()
    assert changes(r) == [("put", rule_id)] * 3 + [("rm", rule_id)]
    assert post_form(alice, f"/rules/{rule_id}/delete", {}).status_code == 404
    assert 'id="no-rules"' in alice.get("/rules", headers=HTML).text


def test_save_and_test_stores_a_new_rule_paused(alice: Client, r: redis.Redis) -> None:
    response = post_form(alice, "/rules", {**KINDS[2][0], "_action": "test"})
    assert response.status_code == 303
    rule_id = response.headers["location"].split("/")[2]
    assert response.headers["location"] == f"/rules/{rule_id}/test"
    assert stored(r, rule_id)["active"] is False  # type: ignore[index]


def test_the_list_shows_when_a_rule_last_fired(alice: Client, r: redis.Redis) -> None:
    rule_id = create(alice, KINDS[0][0])
    quiet_id = create(alice, KINDS[1][0])
    add_alert(r, "alice", "older")
    r.xadd(keys.ALERTS, {**_alert_fields(rule_id, "alice", 1764480600000), "msg": "first"})
    r.xadd(keys.ALERTS, {**_alert_fields(rule_id, "alice", 1764480700000), "msg": "newest"})
    r.xadd(keys.ALERTS, _alert_fields(quiet_id, "bob", 1764480800000))  # not alice's
    page = alice.get("/rules", headers=HTML).text
    row = page[page.index(f'id="rule-{rule_id}"'):]
    assert f'href="{alert_path(f"{rule_id}:9-0:0")}"' in row[:row.index("</tr>")]
    assert "30 Nov 2025 11:01:40.000 IST" in row[:row.index("</tr>")]
    quiet = page[page.index(f'id="rule-{quiet_id}"'):]
    assert "not recently" in quiet[:quiet.index("</tr>")]


def _alert_fields(rule_id: str, user: str, ts: int) -> dict[Any, Any]:
    return {"id": f"{rule_id}:9-0:0", "rule": rule_id, "user": user, "sym": "NSE:INFY",
            "kind": "window_pct", "ltp": "1500", "ts": str(ts), "rx": str(ts * 1000),
            "at": str(ts * 1000 + 900), "msg": "fired"}


def test_nobody_else_sees_or_changes_a_rule(client: Client, users: dict[str, str],
                                             r: redis.Redis) -> None:
    load_instruments(r)
    sign_in(client, "alice", users["alice"])
    rule_id = create(client, KINDS[1][0])
    before = stored(r, rule_id)
    for intruder in ("bob", "root"):  # an admin too: rules are their owner's alone
        sign_in(client, intruder, users[intruder])
        page = client.get("/rules", headers=HTML)
        assert page.status_code == 200 and rule_id not in page.text
        assert client.get(f"/rules/{rule_id}/edit", headers=HTML).status_code == 404
        for action in ("", "/pause", "/resume", "/delete"):
            response = post_form(client, f"/rules/{rule_id}{action}", KINDS[0][0])
            assert response.status_code == 404, action
        headers = api_headers(client)
        assert client.get(f"/api/rules/{rule_id}").status_code == 404
        assert client.put(f"/api/rules/{rule_id}", json={"symbol": "NSE:INFY",
                          "kind": "cross_above", "params": {"level": 1}},
                          headers=headers).status_code == 404
        assert client.delete(f"/api/rules/{rule_id}", headers=headers).status_code == 404
        for action in ("pause", "resume"):
            assert client.post(f"/api/rules/{rule_id}/{action}",
                               headers=headers).status_code == 404
        assert client.get("/api/rules").json() == {"rules": []}
    assert stored(r, rule_id) == before
    assert changes(r) == [("put", rule_id)]


def test_signed_out_and_forged_requests(client: Client, users: dict[str, str],
                                        r: redis.Redis) -> None:
    response = client.get("/rules", headers=HTML, follow_redirects=False)
    assert response.headers["location"] == "/login?next=/rules"
    assert client.get("/api/rules").status_code == 401
    load_instruments(r)
    sign_in(client, "alice", users["alice"])
    forged = client.post("/rules", data={"symbol": "NSE:INFY", "kind": "cross_above",
                                         "params.level": "1", "channels": "default"},
                         headers=HTML, follow_redirects=False)
    assert forged.status_code == 403 and r.hlen(keys.RULES) == 0


def test_a_rule_whose_kind_is_not_installed(client: Client, users: dict[str, str],
                                            r: redis.Redis) -> None:
    """A stored rule of a plug-in kind this server lacks: its owner is told why it cannot be
    opened and can still delete it; anybody else still gets 404."""
    load_instruments(r)
    body = {"id": "r0badc0de", "user": "alice", "symbol": "NSE:INFY", "kind": "my_plugin",
            "params": {}, "active": True}
    r.hset(keys.RULES, "r0badc0de", orjson.dumps(body))
    r.sadd(keys.user_rules("alice"), "r0badc0de")
    sign_in(client, "bob", users["bob"])
    assert client.get("/rules/r0badc0de/edit", headers=HTML).status_code == 404
    assert post_form(client, "/rules/r0badc0de/delete", {}).status_code == 404
    assert client.get("/api/rules/r0badc0de").status_code == 404
    sign_in(client, "alice", users["alice"])
    page = client.get("/rules/r0badc0de/edit", headers=HTML)
    assert page.status_code == 400 and "my_plugin" in page.text, page.text[-2000:]
    api = client.get("/api/rules/r0badc0de")
    assert api.status_code == 400 and "unknown kind 'my_plugin'" in api.json()["detail"]
    assert stored(r, "r0badc0de") is not None
    response = post_form(client, "/rules/r0badc0de/delete", {})
    assert (response.status_code, response.headers["location"]) == (303, "/rules")
    assert stored(r, "r0badc0de") is None and r.smembers(keys.user_rules("alice")) == set()
    assert changes(r) == [("rm", "r0badc0de")]
