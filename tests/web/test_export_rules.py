"""Rules export (/rules/export) and import (/rules/import) against the in-process app and a
real Redis: the export is what GET /api/rules gives; an import stores each good rule with a
new id (paused unless asked), rejects each bad one with its reason, skips the rules the user
has, refuses an unreadable file whole, needs the form's CSRF token, and touches only the
caller's rules."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx
import orjson
import pytest
import redis

from proto import keys, store
from tests.web.conftest import csrf_token
from tests.web.rulehelp import HTML, Client, api_headers, changes, load_instruments, sign_in
from web import export

FILENAME = re.compile(r'^attachment; filename="stormalert-rules-\d{8}\.json"$')
WINDOW = {"symbol": "NSE:INFY", "kind": "window_pct",
          "params": {"pct": 1.5, "window_s": 300, "direction": "up"}, "frequency": "once",
          "cooldown_s": 60, "market_hours_only": True, "channels": ["default", "phone"]}
CROSS = {"symbol": "NSE:NIFTY 50", "kind": "cross_below", "params": {"level": 24000}}


@pytest.fixture
def alice(client: Client, users: dict[str, str], r: redis.Redis) -> Client:
    load_instruments(r)
    sign_in(client, "alice", users["alice"])
    headers = api_headers(client)
    for body in (WINDOW, {**CROSS, "active": False}):
        assert client.post("/api/rules", json=body, headers=headers).status_code == 201
    return client


def upload(client: Client, content: bytes | str, *, active: bool = False,
           csrf: bool = True) -> httpx.Response:
    data = {"active": "1"} if active else {}
    if csrf:
        data["_csrf_token"] = csrf_token(client.get("/rules", headers=HTML).text)
    raw = content.encode() if isinstance(content, str) else content
    return client.post("/rules/import", data=data, headers=HTML, follow_redirects=False,
                       files={"file": ("rules.json", raw, "application/json")})


def report(page: str) -> str:
    match = re.search(r'<div id="import-report" role="status">(.*?)</div>', page, re.S)
    assert match, page[-3000:]
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", match.group(1))).split())


def content(rule: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rule.items() if k not in ("id", "active")}


def test_export_is_the_api_list(alice: Client, users: dict[str, str]) -> None:
    page = alice.get("/rules", headers=HTML).text
    assert 'href="/rules/export" id="export-rules" download' in page
    response = alice.get("/rules/export", headers=HTML)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert FILENAME.match(response.headers["content-disposition"])
    exported = response.json()
    assert exported == alice.get("/api/rules").json()
    assert [(rule["kind"], rule["active"]) for rule in exported["rules"]] in (
        [("window_pct", True), ("cross_below", False)],
        [("cross_below", False), ("window_pct", True)])
    sign_in(alice, "bob", users["bob"])
    assert alice.get("/rules/export", headers=HTML).json() == {"rules": []}


def test_round_trip_to_another_user(alice: Client, users: dict[str, str],
                                    r: redis.Redis) -> None:
    exported = alice.get("/rules/export").content
    alices = {rule.id: rule.to_json() for rule in store.list_rules(r, "alice")}
    sign_in(alice, "bob", users["bob"])
    response = upload(alice, exported)
    assert response.status_code == 200, response.text
    assert report(response.text).startswith("2 rules imported, paused.")
    bobs = [orjson.loads(rule.to_json()) for rule in store.list_rules(r, "bob")]
    def key(rule: dict[str, Any]) -> bytes:
        return orjson.dumps(content(rule), option=orjson.OPT_SORT_KEYS)

    assert sorted(map(key, bobs)) == sorted(key({**rule, "user": "bob"})
                                            for rule in orjson.loads(exported)["rules"])
    assert not {rule["id"] for rule in bobs} & set(alices)  # new ids
    assert {rule["active"] for rule in bobs} == {False}  # paused by default
    assert {rule.id: rule.to_json() for rule in store.list_rules(r, "alice")} == alices
    # The shards hear of each new rule.
    assert [op for op, rule_id in changes(r) if rule_id in {b["id"] for b in bobs}] == [
        "put", "put"]
    # The same file again adds nothing: bob has these rules.
    again = upload(alice, exported, active=True)
    assert again.status_code == 200
    assert report(again.text).startswith("0 rules imported; 2 skipped (you have them already).")
    assert len(store.list_rules(r, "bob")) == 2


def test_good_and_bad_rules(alice: Client, r: redis.Redis) -> None:
    before = {rule.id for rule in store.list_rules(r, "alice")}
    items: list[Any] = [
        {**CROSS, "symbol": "NSE:TCS", "id": "mine", "active": False},
        {**CROSS, "symbol": "NSE:NOPE"},
        {"symbol": "NSE:TCS", "kind": "window_pct", "params": {"pct": -1, "window_s": 300}},
        {"symbol": "NSE:TCS", "kind": "teleport", "params": {}},
        ["NSE:TCS", "cross_above"],
        {**CROSS, "symbol": "NSE:RELIANCE", "colour": "red"},
        {**CROSS, "symbol": "=NSE:TCS"},
        {**CROSS, "symbol": "NSE:TCS"},  # the first one again
        {"symbol": "NSE:RELIANCE", "kind": "change_pct", "params": {"pct": 2}},
        WINDOW,  # alice has it
    ]
    response = upload(alice, orjson.dumps(items), active=True)
    assert response.status_code == 200, response.text
    text = report(response.text)
    assert text.startswith("2 rules imported, active; 2 skipped (you have them already); "
                           "6 rejected."), text
    assert "#2 NSE:NOPE cross_below: symbol: unknown symbol 'NSE:NOPE'" in text
    assert "#3 NSE:TCS window_pct: params.pct:" in text
    assert "#4 NSE:TCS teleport: kind: unknown kind 'teleport'" in text
    assert "#5 not a rule: a rule must be a JSON object" in text
    assert "#6 NSE:RELIANCE cross_below: colour: Extra inputs are not permitted" in text
    assert "#7 =NSE:TCS cross_below: symbol: symbol must look like EXCHANGE:TRADINGSYMBOL" in text
    assert "#8 NSE:TCS cross_below: the same as" in text
    assert "#10 NSE:INFY window_pct: the same as" in text
    new = [rule for rule in store.list_rules(r, "alice") if rule.id not in before]
    assert sorted((rule.symbol, rule.kind, rule.active) for rule in new) == [
        ("NSE:RELIANCE", "change_pct", True), ("NSE:TCS", "cross_below", True)]
    assert "mine" not in {rule.id for rule in new} and r.hget(keys.RULES, "mine") is None


@pytest.mark.parametrize(("body", "reason"), [
    (b"", "the file is empty"),
    (b"{rules: []}", "the file is not JSON"),
    (b'{"rules": 5}', 'expected a list of rules, or {"rules": [...]} as exported'),
    (b"[]", "the file holds no rules"),
    (orjson.dumps([CROSS] * (export.IMPORT_MAX_RULES + 1)), "1001 rules: at most 1000 a file"),
    (b"[" + b" " * export.IMPORT_MAX_BYTES + b"]", "the file is larger than 1024 KiB"),
])
def test_an_unreadable_file_imports_nothing(alice: Client, r: redis.Redis, body: bytes,
                                            reason: str) -> None:
    before = {rule.id for rule in store.list_rules(r, "alice")}
    response = upload(alice, body)
    assert response.status_code == 422
    assert f"Nothing imported: {reason}" in html.unescape(response.text)
    assert {rule.id for rule in store.list_rules(r, "alice")} == before


def test_only_bad_rules_is_a_422_and_the_form_needs_its_token(alice: Client,
                                                              r: redis.Redis) -> None:
    before = {rule.id for rule in store.list_rules(r, "alice")}
    response = upload(alice, orjson.dumps([{**CROSS, "symbol": "NSE:NOPE"}]))
    assert response.status_code == 422
    assert "0 rules imported; 1 rejected." in report(response.text)
    forged = upload(alice, orjson.dumps([{**CROSS, "symbol": "NSE:TCS"}]), csrf=False)
    assert forged.status_code == 403
    assert {rule.id for rule in store.list_rules(r, "alice")} == before
