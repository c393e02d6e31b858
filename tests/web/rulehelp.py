"""Helpers for the rules and alert-history tests: a loaded instrument master, signed-in
clients, form posts with the page's CSRF token, and reading what the store wrote."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import redis
from litestar.testing import TestClient

from proto import keys
from tests.web.conftest import csrf_token, login

HTML = {"Accept": "text/html,application/xhtml+xml"}
SYMBOLS = ("NSE:INFY", "NSE:TCS", "NSE:RELIANCE", "NSE:NIFTY 50")

Client = TestClient[Any]


def load_instruments(r: redis.Redis) -> None:
    r.hset(keys.INSTRUMENTS, mapping={sym: orjson.dumps({"tok": str(i), "src": "sim"})
                                      for i, sym in enumerate(SYMBOLS, 1)})


def sign_in(client: Client, name: str, password: str) -> Client:
    client.cookies.clear()
    assert login(client, name, password).status_code == 303
    return client


def post_form(client: Client, path: str, fields: dict[str, Any], *,
              htmx: bool = False) -> httpx.Response:
    """POST a form as the browser does, with the CSRF token of a page the user can open."""
    token = csrf_token(client.get("/rules/new", headers=HTML).text)
    headers = {**HTML, **({"HX-Request": "true"} if htmx else {})}
    return client.post(path, data={"_csrf_token": token, **fields}, headers=headers,
                       follow_redirects=False)


def api_headers(client: Client) -> dict[str, str]:
    """What a script signed in with the session cookie sends: the CSRF header."""
    client.get("/rules/new", headers=HTML)  # sets the CSRF cookie
    return {"x-csrftoken": client.cookies["csrftoken"], "Accept": "application/json"}


def stored(r: redis.Redis, rule_id: str) -> dict[str, Any] | None:
    body = r.hget(keys.RULES, rule_id)
    return None if body is None else dict(orjson.loads(body))  # type: ignore[arg-type]


def changes(r: redis.Redis) -> list[tuple[str, str]]:
    """(op, rule id) of every ``sa:rules:changes`` entry, oldest first."""
    entries: Any = r.xrange(keys.RULE_CHANGES)
    return [(fields["op"], fields["id"]) for _eid, fields in entries]
