"""Broker connections: credentials sealed at rest, and the Kite and Upstox logins completed
against a real loopback HTTP server standing in for the brokers' APIs (the official SDKs,
KiteConnect and upstox_client, talk to it over a socket)."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import redis
from litestar.testing import TestClient

from ingest.tokens import read_stored
from proto import keys
from proto.secrets import SecretBox, load_credentials
from tests.web.conftest import csrf_token, login
from web.app import create_app
from web.brokers import NO_KEY
from web.settings import WebSettings

HTML = {"Accept": "text/html"}
SECRETS_KEY = "a test passphrase that is long enough"
KITE_KEY, KITE_SECRET = "kitekey1234abcd", "kite-api-secret-9f8e7d"
UPSTOX_ID, UPSTOX_SECRET = "upstox-client-5678", "upstox-secret-1a2b3c"
KITE_REQUEST_TOKEN, UPSTOX_CODE = "req-token-1", "auth-code-1"


class Broker(ThreadingHTTPServer):
    """Kite's ``POST /session/token`` and Upstox's ``POST /v2/login/authorization/token``,
    checking what the real APIs check; issued tokens and seen requests are kept. The login
    pages (``GET /connect/login``, ``GET /v2/login/authorization/dialog``) sign the user in
    at once and send the browser back as the brokers do."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), BrokerHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.requests: list[tuple[str, dict[str, str], dict[str, str]]] = []
        self.issued: list[str] = []
        self.kite_redirect_url = ""  # registered in Kite's developer console


class BrokerHandler(BaseHTTPRequestHandler):
    server: Broker

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        self.server.requests.append((self.path, dict(self.headers), form))
        if self.path == "/session/token":
            self.kite(form)
        elif self.path == "/v2/login/authorization/token":
            self.upstox(form)
        else:
            self.answer(404, {"status": "error", "message": "no route"})

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/connect/login" and query.get("api_key") == KITE_KEY:
            back = {"action": "login", "type": "login", "status": "success",
                    "request_token": KITE_REQUEST_TOKEN,
                    **{k: v[0] for k, v in parse_qs(query.get("redirect_params", "")).items()}}
            self.redirect(f"{self.server.kite_redirect_url}?{urlencode(back)}")
        elif url.path == "/v2/login/authorization/dialog" and query.get("client_id") == UPSTOX_ID:
            back = {"code": UPSTOX_CODE, "state": query.get("state", "")}
            self.redirect(f"{query['redirect_uri']}?{urlencode(back)}")
        else:
            self.answer(404, {"status": "error", "message": "no route"})

    def redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def kite(self, form: dict[str, str]) -> None:
        expected = hashlib.sha256(
            (KITE_KEY + form.get("request_token", "") + KITE_SECRET).encode()).hexdigest()
        if form.get("api_key") != KITE_KEY or form.get("checksum") != expected:
            self.answer(403, {"status": "error", "message": "Invalid `checksum`.",
                              "error_type": "TokenException"})
            return
        token = self.issue()
        self.answer(200, {"status": "success", "data": {
            "user_id": "AB1234", "user_name": "Test Trader", "api_key": KITE_KEY,
            "access_token": token, "public_token": "p", "refresh_token": "",
            "login_time": "2026-11-30 09:00:00", "exchanges": ["NSE"], "products": ["CNC"],
            "order_types": ["LIMIT"], "email": "t@example.invalid", "user_type": "individual",
            "broker": "ZERODHA", "meta": {"demat_consent": "physical"}}})

    def upstox(self, form: dict[str, str]) -> None:
        good = (form.get("client_id") == UPSTOX_ID and form.get("client_secret") == UPSTOX_SECRET
                and form.get("grant_type") == "authorization_code" and form.get("redirect_uri"))
        if not good:
            self.answer(401, {"status": "error", "errors": [{
                "errorCode": "UDAPI100016", "message": "Invalid Credentials",
                "propertyPath": None, "invalidValue": None}]})
            return
        if form.get("code") != UPSTOX_CODE:
            self.answer(400, {"status": "error", "errors": [{
                "errorCode": "UDAPI100057", "message": "Invalid Auth code",
                "propertyPath": None, "invalidValue": None}]})
            return
        self.answer(200, {"email": "u@example.invalid", "exchanges": ["NSE"],
                          "products": ["D"], "broker": "UPSTOX", "user_id": "UP9876",
                          "user_name": "Test Trader", "order_types": ["LIMIT"],
                          "user_type": "individual", "poa": False, "is_active": True,
                          "access_token": self.issue(), "extended_token": None})

    def issue(self) -> str:
        token = secrets.token_urlsafe(16)
        self.server.issued.append(token)
        return token

    def answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def running_broker() -> Iterator[Broker]:
    server = Broker()
    thread = threading.Thread(target=server.serve_forever, name="broker", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def broker() -> Iterator[Broker]:
    with running_broker() as server:
        yield server


@pytest.fixture
def settings(redis_url: str, broker: Broker) -> WebSettings:
    return WebSettings(
        redis_url=redis_url, stats_interval_s=3600, secrets_key=SECRETS_KEY,
        kite_api_url=broker.url, kite_login_url=f"{broker.url}/connect/login",
        upstox_api_url=broker.url)


@pytest.fixture
def root(client: TestClient[Any], users: dict[str, str]) -> TestClient[Any]:
    assert login(client, "root", users["root"]).status_code == 303
    return client


def post(client: TestClient[Any], path: str, **form: str) -> Any:
    token = csrf_token(client.get("/admin/brokers", headers=HTML).text)
    return client.post(path, data={**form, "_csrf_token": token}, headers=HTML,
                       follow_redirects=False)


def save(client: TestClient[Any], feed: str, key: str, secret: str) -> None:
    response = post(client, f"/admin/brokers/{feed}/credentials", key=key, secret=secret)
    assert response.status_code == 303, response.text


def start(client: TestClient[Any], feed: str) -> dict[str, str]:
    """Press the login button; the query of where it sends the browser."""
    response = client.get(f"/admin/brokers/{feed}/login", headers=HTML, follow_redirects=False)
    assert response.status_code == 303, response.text
    target = urlsplit(response.headers["location"])
    return {"url": f"{target.scheme}://{target.netloc}{target.path}",
            **{k: v[0] for k, v in parse_qs(target.query).items()}}


def test_credentials_are_sealed_and_never_shown(root: TestClient[Any], r: redis.Redis,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    save(root, "kite", KITE_KEY, KITE_SECRET)
    stored = r.hgetall(keys.broker("kite"))
    assert KITE_KEY not in str(stored) and KITE_SECRET not in str(stored)
    creds = load_credentials(r, SecretBox(SECRETS_KEY), "kite")
    assert creds is not None and (creds.key, creds.secret) == (KITE_KEY, KITE_SECRET)
    assert creds.updated_by == "root" and KITE_SECRET not in repr(creds)
    page = root.get("/admin/brokers", headers=HTML).text
    assert "ki••••••cd" in page  # the key masked
    assert KITE_KEY not in page and KITE_SECRET not in page
    assert "http://testserver.local/admin/brokers/kite/callback" in page
    assert KITE_SECRET not in caplog.text and KITE_KEY not in caplog.text
    refused = post(root, "/admin/brokers/kite/credentials", key="only-a-key", secret="")
    assert refused.status_code == 400 and "both the key and the secret" in refused.text
    assert post(root, "/admin/brokers/kite/remove").status_code == 303
    assert not r.exists(keys.broker("kite"))


def test_without_a_secrets_key_nothing_is_stored(redis_url: str, r: redis.Redis,
                                                 users: dict[str, str]) -> None:
    with TestClient(app=create_app(WebSettings(redis_url=redis_url,
                                               stats_interval_s=3600))) as client:
        login(client, "root", users["root"])
        assert NO_KEY in client.get("/admin/brokers", headers=HTML).text
        response = post(client, "/admin/brokers/kite/credentials", key=KITE_KEY,
                        secret=KITE_SECRET)
        assert response.status_code == 400 and NO_KEY in response.text
    assert not r.exists(keys.broker("kite"))


def test_kite_login(root: TestClient[Any], r: redis.Redis, broker: Broker,
                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    save(root, "kite", KITE_KEY, KITE_SECRET)
    sent = start(root, "kite")
    assert sent["url"] == f"{broker.url}/connect/login"
    assert sent["v"] == "3" and sent["api_key"] == KITE_KEY
    state = parse_qs(sent["redirect_params"])["state"][0]
    # Kite sends the browser back with the request token and our redirect_params.
    callback = ("/admin/brokers/kite/callback?action=login&type=login&status=success"
                f"&request_token={KITE_REQUEST_TOKEN}&state={state}")
    done = root.get(callback, headers=HTML, follow_redirects=False)
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/admin/brokers?done=connected&feed=kite"
    raw = r.get(keys.feed_token("kite"))
    assert read_stored(raw) == broker.issued[-1]  # what ingest will connect with
    record = json.loads(raw)  # type: ignore[arg-type]
    assert record["user_id"] == "AB1234" and record["by"] == "root"
    assert record["api_key"] == KITE_KEY  # the app ingest must connect as
    ttl = r.ttl(keys.feed_token("kite"))
    assert 0 < ttl <= 24 * 3600 and abs(record["expires_at"] - time.time() - ttl) < 5
    page = root.get(done.headers["location"], headers=HTML).text
    assert "connected" in page and "AB1234" in page and broker.issued[-1] not in page
    assert broker.issued[-1] not in caplog.text and KITE_SECRET not in caplog.text
    # The state is good once.
    again = root.get(callback, headers=HTML)
    assert again.status_code == 400 and "start again" in again.text
    assert len(broker.issued) == 1


def test_kite_refusal_is_shown_and_stores_nothing(root: TestClient[Any], r: redis.Redis,
                                                  broker: Broker) -> None:
    save(root, "kite", KITE_KEY, "not-the-right-secret")
    state = parse_qs(start(root, "kite")["redirect_params"])["state"][0]
    response = root.get("/admin/brokers/kite/callback?status=success"
                        f"&request_token={KITE_REQUEST_TOKEN}&state={state}", headers=HTML)
    assert response.status_code == 502
    assert "Kite refused the login: Invalid `checksum`." in response.text.replace("&#96;", "`")
    assert "not-the-right-secret" not in response.text
    assert not r.exists(keys.feed_token("kite"))
    assert broker.requests and broker.requests[-1][0] == "/session/token"


@pytest.mark.parametrize("query", [
    f"status=success&request_token={KITE_REQUEST_TOKEN}",  # no state
    f"status=success&request_token={KITE_REQUEST_TOKEN}&state=forged",
])
def test_kite_callback_needs_a_state_started_here(root: TestClient[Any], r: redis.Redis,
                                                  broker: Broker, query: str) -> None:
    save(root, "kite", KITE_KEY, KITE_SECRET)
    response = root.get(f"/admin/brokers/kite/callback?{query}", headers=HTML)
    assert response.status_code == 400 and "start again" in response.text
    assert not broker.requests and not r.exists(keys.feed_token("kite"))


def test_kite_cancelled_login(root: TestClient[Any], r: redis.Redis, broker: Broker) -> None:
    save(root, "kite", KITE_KEY, KITE_SECRET)
    state = parse_qs(start(root, "kite")["redirect_params"])["state"][0]
    response = root.get(f"/admin/brokers/kite/callback?status=cancelled&state={state}",
                        headers=HTML)
    assert response.status_code == 400 and "status cancelled" in response.text
    assert not broker.requests


def test_upstox_login(root: TestClient[Any], r: redis.Redis, broker: Broker) -> None:
    save(root, "upstox", UPSTOX_ID, UPSTOX_SECRET)
    sent = start(root, "upstox")
    assert sent["url"] == f"{broker.url}/v2/login/authorization/dialog"
    assert sent["response_type"] == "code" and sent["client_id"] == UPSTOX_ID
    redirect_uri = "http://testserver.local/admin/brokers/upstox/callback"
    assert sent["redirect_uri"] == redirect_uri
    done = root.get(f"/admin/brokers/upstox/callback?code={UPSTOX_CODE}&state={sent['state']}",
                    headers=HTML, follow_redirects=False)
    assert done.status_code == 303, done.text
    assert read_stored(r.get(keys.feed_token("upstox"))) == broker.issued[-1]
    path, headers, form = broker.requests[-1]
    assert path == "/v2/login/authorization/token"
    assert headers["Api-Version"] == "2.0"
    assert form == {"code": UPSTOX_CODE, "client_id": UPSTOX_ID, "client_secret": UPSTOX_SECRET,
                    "redirect_uri": redirect_uri, "grant_type": "authorization_code"}
    assert "UP9876" in root.get("/admin/brokers", headers=HTML).text


def test_upstox_refusal(root: TestClient[Any], r: redis.Redis, broker: Broker) -> None:
    save(root, "upstox", UPSTOX_ID, UPSTOX_SECRET)
    state = start(root, "upstox")["state"]
    response = root.get(f"/admin/brokers/upstox/callback?code=stale&state={state}",
                        headers=HTML)
    assert response.status_code == 502
    assert "Upstox refused the login: Invalid Auth code (UDAPI100057)" in response.text
    assert UPSTOX_SECRET not in response.text
    assert not r.exists(keys.feed_token("upstox"))


def test_login_needs_stored_credentials(root: TestClient[Any], broker: Broker) -> None:
    response = root.get("/admin/brokers/upstox/login", headers=HTML)
    assert response.status_code == 400 and "no Upstox credentials stored" in response.text
    unknown = root.get("/admin/brokers/angel/login", headers=HTML)
    assert unknown.status_code == 400 and "unknown broker" in unknown.text


def test_callbacks_are_for_admins_only(client: TestClient[Any], users: dict[str, str],
                                       broker: Broker) -> None:
    login(client, "alice", users["alice"])
    for path in ("/admin/brokers/kite/callback?status=success&request_token=x&state=y",
                 "/admin/brokers/upstox/callback?code=x&state=y"):
        assert client.get(path, headers=HTML).status_code == 404
    assert not broker.requests
