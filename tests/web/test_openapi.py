"""The OpenAPI document at /schema: the JSON API only, public, and true to the app, checked by
schemathesis against a real server process with an API token (no 5xx, every answer's status,
content type and body as documented)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aredis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.routes import HTTPRoute
from litestar.testing import TestClient
from schemathesis import Case, GenerationMode, checks

from proto import keys
from tests.web.conftest import add_alert, set_quote
from tests.web.server import WebServer
from web import openapi, tokens
from web.app import create_app
from web.settings import WebSettings

# Small and bounded: a few examples per operation keeps the whole run well under a minute.
# schemathesis probes every successful call with an invalid token too, and past
# tokens.FAILURES_PER_MINUTE of those the server rightly answers 429, not the 401 the probe
# expects: each example starts with the count cleared.
MAX_EXAMPLES = 8
METHODS = {"get", "put", "post", "delete", "patch"}


def api_paths(app: Any) -> set[str]:
    """The documented paths as the app has them: /api/... and /healthz, '{name}' params."""
    paths = set()
    for route in app.routes:
        if isinstance(route, HTTPRoute) and openapi.is_documented(route.path):
            paths.add(route.path_format)
    return paths


def test_schema_documents_the_json_api_only(client: TestClient[Any]) -> None:
    response = client.get("/schema/openapi.json")  # public: no session, no token
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["openapi"].startswith("3.1") and doc["info"]["title"] == "StormAlert API"
    assert set(doc["paths"]) == api_paths(client.app)
    assert {"/api/alerts", "/api/quotes", "/api/channels", "/api/prefs", "/healthz"} <= set(
        doc["paths"])
    assert client.get("/schema").json() == doc
    schemes = doc["components"]["securitySchemes"]
    assert schemes[tokens.TOKEN_SCHEME] == {
        "type": "http", "scheme": "bearer", "description": schemes["ApiToken"]["description"]}
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    alerts = doc["paths"]["/api/alerts"]["get"]["responses"]
    assert alerts["401"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"}
    assert "status_code" not in str(alerts["400"])  # Litestar's own error shape is not ours


def test_every_route_is_either_documented_or_a_page(client: TestClient[Any]) -> None:
    """A page answers HTML for a person; anything under /api/ must be in the document."""
    for route in client.app.routes:
        if isinstance(route, HTTPRoute) and route.path.startswith("/api"):
            assert openapi.is_documented(route.path), route.path


async def _make_token(redis_url: str, user: str) -> str:
    ar = aredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        token, _info = await tokens.create_token(ar, user, "schemathesis")
    finally:
        await ar.aclose()
    return token


@pytest.fixture(scope="module")
def server(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    web = WebServer(redis_url, tmp_path_factory.mktemp("web-openapi")).start()
    try:
        yield web
    finally:
        web.kill()


@pytest.fixture(scope="module")
def token(server: WebServer, redis_url: str,
          user_records: dict[str, dict[str, str]]) -> str:
    """alice with a token, an alert, a channel and a quote, made once for the module."""
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        r.flushdb()
        for name, record in user_records.items():
            r.sadd(keys.USERS, name)
            r.hset(keys.user(name), mapping=record)
        add_alert(r, "alice", "for the schema test")
        set_quote(r, "NSE:INFY", 1500.0, pc=1490.0)
    finally:
        r.close()
    return asyncio.run(_make_token(redis_url, "alice"))


@pytest.fixture(scope="module")
def api_schema(server: WebServer, token: str) -> Any:
    loaded = schemathesis.openapi.from_url(f"{server.url}/schema/openapi.json")
    loaded.config.update(base_url=server.url, headers={"Authorization": f"Bearer {token}"})
    return loaded


def operations() -> list[tuple[str, str]]:
    """(method, path) of every documented operation, from the app as built for the tests."""
    app = create_app(WebSettings(redis_url="redis://127.0.0.1:1/0", jwt_secret="t" * 40))
    return sorted((method.upper(), path) for path, item in app.openapi_schema.to_schema()[
        "paths"].items() for method in item if method in METHODS)


@pytest.mark.parametrize(("method", "path"), operations())
def test_api_conforms_to_its_schema(api_schema: Any, server: WebServer, redis_url: str,
                                    method: str, path: str) -> None:
    """Positive and negative cases of one operation; every check schemathesis has for a
    single call (no 5xx, status code, content type, headers and body as documented, bad
    input refused, authentication not ignored) but one: "schema-valid input is accepted"
    cannot hold for an API that checks meaning no JSON schema can express (an apprise URL,
    a known symbol), where a 400 naming the problem is the right answer."""
    operation = api_schema[path][method]
    strategy = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                         operation.as_strategy(GenerationMode.NEGATIVE))

    @given(case=strategy)
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case: Case) -> None:
        # Each example starts with a clean count of invalid tokens from this address.
        r.delete(keys.token_failures("127.0.0.1"))
        response = case.call_and_validate(excluded_checks=[checks.positive_data_acceptance])
        assert response.status_code < 500, response.text

    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        check()
    finally:
        r.close()
    assert httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200
