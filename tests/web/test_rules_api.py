"""The rules JSON API against the in-process app and a real Redis: the same rules, checks
and store as the form, per-field errors as JSON, and only the owner's rules."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from proto import keys
from tests.web.rulehelp import Client, api_headers, changes, load_instruments, sign_in, stored


@pytest.fixture
def alice(client: Client, users: dict[str, str], r: redis.Redis) -> Client:
    load_instruments(r)
    sign_in(client, "alice", users["alice"])
    client.headers.update(api_headers(client))
    return client


@pytest.mark.parametrize(("body", "params"), [
    ({"symbol": "NSE:INFY", "kind": "cross_above", "params": {"level": 1510}},
     {"level": 1510.0}),
    ({"symbol": "NSE:TCS", "kind": "trailing_pct", "params": {"pct": 2, "direction": "up"},
      "frequency": "once", "cooldown_s": 30, "market_hours_only": True,
      "expires_at": "2026-12-31T15:30:00+05:30", "channels": ["phone", "default"]},
     {"pct": 2.0, "direction": "up"}),
    ({"symbol": "NSE:NIFTY 50", "kind": "orb", "params": {}},
     {"minutes": 15, "direction": "either"}),
    ({"symbol": "NSE:RELIANCE", "kind": "ema_cross", "params": {"fast": 9, "slow": 21},
      "active": False}, {"fast": 9, "slow": 21, "direction": "either"}),
])
def test_create_read_list(alice: Client, r: redis.Redis, body: dict[str, Any],
                          params: dict[str, Any]) -> None:
    response = alice.post("/api/rules", json=body)
    assert response.status_code == 201, response.text
    rule = response.json()
    assert rule["params"] == params and rule["symbol"] == body["symbol"]
    assert rule["active"] is body.get("active", True)
    for option in ("frequency", "cooldown_s", "market_hours_only", "channels"):
        if option in body:
            assert rule[option] == body[option]
    if "expires_at" in body:
        assert rule["expires_at"] == 1798711200000  # 10:00 UTC
    assert stored(r, rule["id"]) == {**rule, "user": "alice"}
    assert changes(r) == [("put", rule["id"])]
    assert alice.get(f"/api/rules/{rule['id']}").json() == rule
    assert alice.get("/api/rules").json() == {"rules": [rule]}


def test_replace_pause_resume_delete(alice: Client, r: redis.Redis) -> None:
    rule = alice.post("/api/rules", json={"symbol": "NSE:INFY", "kind": "window_pct",
                                          "params": {"pct": 1, "window_s": 60}}).json()
    url = f"/api/rules/{rule['id']}"
    paused = alice.post(f"{url}/pause")
    assert paused.status_code == 200 and paused.json() == {**rule, "active": False}
    # A replacement keeps the id, and the paused state unless "active" says otherwise.
    replaced = alice.put(url, json={"symbol": "NSE:TCS", "kind": "channel",
                                    "params": {"low": 10, "high": 20}})
    assert replaced.status_code == 200
    assert replaced.json() == {**rule, "symbol": "NSE:TCS", "kind": "channel", "active": False,
                               "params": {"low": 10.0, "high": 20.0, "on": "both"}}
    assert alice.put(url, json={"symbol": "NSE:TCS", "kind": "channel", "active": True,
                                "params": {"low": 10, "high": 20}}).json()["active"] is True
    assert alice.post(f"{url}/pause").json()["active"] is False
    assert alice.post(f"{url}/resume").json()["active"] is True
    assert r.hlen(keys.RULES) == 1

    assert alice.delete(url).status_code == 204
    assert stored(r, rule["id"]) is None
    assert changes(r)[-1] == ("rm", rule["id"]) and len(changes(r)) == 7
    for response in (alice.get(url), alice.delete(url), alice.post(f"{url}/pause"),
                     alice.put(url, json={"symbol": "NSE:TCS", "kind": "orb"})):
        assert response.status_code == 404
        assert response.json() == {"status": 404, "detail": "Not Found"}
    assert alice.get("/api/rules/has%20space").status_code == 404


@pytest.mark.parametrize(("body", "errors"), [
    ({"symbol": "infy", "kind": "window_pct", "params": {"pct": 0, "window_s": "x"},
      "cooldown_s": -1, "channels": []},
     {"symbol": "symbol must look like EXCHANGE:TRADINGSYMBOL, e.g. NSE:INFY",
      "cooldown_s": "cooldown_s must be a finite number >= 0",
      "channels": "channels must be a non-empty list of tag names without commas",
      "params.pct": "pct must be a finite number > 0",
      "params.window_s": "Input should be a valid number, unable to parse string as a number"}),
    ({"symbol": "NSE:INFY", "kind": "rsi", "params": {"above": 30, "below": 70}},
     {"params.below": "below must be less than above (30)"}),
    ({"symbol": "NSE:INFY", "kind": "gap_up", "params": {}},
     {"kind": "unknown kind 'gap_up'; known: above, below, change_pct, channel, cross_above, "
              "cross_below, ema_cross, orb, rsi, sma_cross, trailing_pct, volume_spike, "
              "window_pct"}),
    ({"symbol": "NSE:NOPE", "kind": "cross_above", "params": {"level": 1}},
     {"symbol": "unknown symbol 'NSE:NOPE'"}),
    ({"symbol": "NSE:INFY", "kind": "cross_above", "params": {"level": 1, "extra": 2}},
     {"params.extra": "Extra inputs are not permitted"}),
    ({"symbol": "NSE:INFY", "kind": "cross_above", "expires_at": "tomorrow",
      "params": {"level": 1}},
     {"expires_at": "expires_at must be epoch ms or ISO-8601 with an offset"}),
    # The wrong shape is refused before the rule is read, with the same answer's shape.
    ({"symbol": "NSE:INFY", "kind": "cross_above", "channels": "default"},
     {"channels": "Expected `array`, got `str`"}),
    ({"symbol": "NSE:INFY", "kind": "cross_above", "frequency": "hourly"},
     {"frequency": "Invalid enum value 'hourly'"}),
    ({"kind": "cross_above"}, {"": "Object missing required field `symbol`"}),
])
def test_errors_per_field(alice: Client, r: redis.Redis, body: dict[str, Any],
                          errors: dict[str, str]) -> None:
    response = alice.post("/api/rules", json=body)
    assert response.status_code == 400
    answer = response.json()
    assert answer["status"] == 400 and answer["errors"] == errors
    assert all(message in answer["detail"] for message in errors.values())
    assert r.hlen(keys.RULES) == 0 and changes(r) == []


def test_a_rejected_replacement_leaves_the_rule(alice: Client, r: redis.Redis) -> None:
    rule = alice.post("/api/rules", json={"symbol": "NSE:INFY", "kind": "cross_below",
                                          "params": {"level": 1400}}).json()
    response = alice.put(f"/api/rules/{rule['id']}", json={
        "symbol": "NSE:INFY", "kind": "cross_below", "params": {"level": -1}})
    assert response.status_code == 400
    assert response.json()["errors"] == {"params.level": "level must be a finite number > 0"}
    assert stored(r, rule["id"]) == {**rule, "user": "alice"}
    assert changes(r) == [("put", rule["id"])]


def test_malformed_json_and_writes_without_csrf(alice: Client, r: redis.Redis) -> None:
    response = alice.post("/api/rules", content=b"{not json",
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    csrf = alice.headers.pop("x-csrftoken")
    refused = alice.post("/api/rules", json={"symbol": "NSE:INFY", "kind": "cross_above",
                                             "params": {"level": 1}})
    assert refused.status_code == 403
    alice.headers["x-csrftoken"] = csrf
    assert r.hlen(keys.RULES) == 0
