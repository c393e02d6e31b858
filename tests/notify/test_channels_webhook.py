"""Webhooks (``json://``, ``form://``) through the Deliverer's own HTTP path to a loopback
server: the payload, 5xx bursts, a 429 with Retry-After, one slow hook not delaying another,
and a refused connection given up without the URL's secrets in the reason."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from notify import http11
from notify.send import warm_up
from proto.runtime import Stats
from tests.notify.apiserver import Answer, ApiServer, serving
from tests.notify.channels import deliver, record, settings
from tests.notify.conftest import dead_letters, free_port, make_alert, make_user


def test_json_and_form_payloads(r: redis.Redis, redis_url: str, api: ApiServer) -> None:
    cids = make_user(r, "kiran", {f"json://127.0.0.1:{api.port}/j": "default",
                                  f"form://127.0.0.1:{api.port}/f?+X-Token=t0k": "default"})
    alert = make_alert("kiran", sym="NSE:TCS", ltp=3999.95)
    stats = Stats("t")
    assert deliver(settings(redis_url, {}), [alert], stats) == [True]
    [j] = api.under("/j")
    [f] = api.under("/f")
    assert j.headers["Content-Type"] == "application/json"
    payload = j.json()
    assert payload["title"] == "NSE:TCS crossed above at 3999.95"
    assert payload["message"].endswith(f"https://dash.example/alerts/{alert.id}")
    assert (payload["type"], payload["version"]) == ("info", "1.0")
    form = {k: v[0] for k, v in f.form().items()}
    assert form["title"] == payload["title"]
    assert form["message"] == payload["message"]
    assert f.headers["X-Token"] == "t0k"
    for cid in cids.values():
        rec = record(r, alert.id, cid)
        assert rec["status"] == "sent"
        assert 0 < float(rec["latency_ms"]) < 5000  # type: ignore[arg-type]
    assert stats.counters["sent"] == 2


def test_5xx_burst_then_success_and_429_retry_after(r: redis.Redis, redis_url: str,
                                                    api: ApiServer) -> None:
    api.script["/burst"] = [Answer(500), Answer(502), Answer(503)]
    api.script["/limited"] = [Answer(429, b"", (("Retry-After", "1"),))]
    cids = make_user(r, "kiran", {f"json://127.0.0.1:{api.port}/burst": "default",
                                  f"json://127.0.0.1:{api.port}/limited": "default"})
    alert = make_alert("kiran")
    assert deliver(settings(redis_url, {}), [alert]) == [True]
    assert len(api.under("/burst")) == 4
    first, second = api.under("/limited")
    assert second.at - first.at >= 1.0
    attempts = [record(r, alert.id, cid)["attempts"] for cid in cids.values()]
    assert attempts == [4, 2]


def test_a_slow_hook_does_not_delay_another(r: redis.Redis, redis_url: str,
                                            api: ApiServer) -> None:
    api.script["/slow"] = [Answer(delay_s=1.5)]
    make_user(r, "kiran", {f"json://127.0.0.1:{api.port}/slow": "default",
                           f"json://127.0.0.1:{api.port}/fast": "default"})
    started = time.monotonic()
    assert deliver(settings(redis_url, {}), [make_alert("kiran")]) == [True]
    [fast] = api.under("/fast")
    [slow] = api.under("/slow")
    assert fast.at - started < 1.0
    assert slow.at - started < 1.0  # both went out at once


def test_refused_connection_is_given_up_without_secrets(r: redis.Redis,
                                                        redis_url: str) -> None:
    url = f"json://bob:Pa55w0rdXyz@127.0.0.1:{free_port()}/hook/K3yInPath9?-token=S3cr3tT0k"
    [cid] = make_user(r, "kiran", {url: "default"}).values()
    alert = make_alert("kiran")
    assert deliver(settings(redis_url, {}, notify_max_tries=2), [alert]) == [True]
    [dead] = dead_letters(r)
    assert dead["channel"] == cid
    assert "gave up after 2 tries" in dead["reason"]
    assert "cannot connect" in dead["reason"]
    for secret in ("Pa55w0rdXyz", "K3yInPath9", "S3cr3tT0k"):
        assert secret not in dead["reason"]


@pytest.fixture
def tls_api(tmp_path: Path) -> Iterator[ApiServer]:
    """An HTTPS ApiServer with a self-signed certificate for 127.0.0.1."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    warm_up()
    with serving(tls=context) as server:
        yield server


def test_https_hooks_check_certificates_unless_the_url_says_not_to(
        r: redis.Redis, redis_url: str, tls_api: ApiServer) -> None:
    cids = make_user(r, "kiran", {f"jsons://127.0.0.1:{tls_api.port}/checked": "a",
                                  f"jsons://127.0.0.1:{tls_api.port}/trusted?verify=no": "b"})
    alert = make_alert("kiran", channels=["a", "b"])
    assert deliver(settings(redis_url, {}, notify_max_tries=1), [alert]) == [True]
    assert [h.path for h in tls_api.requests] == ["/trusted"]
    by_url = {url: record(r, alert.id, cid) for url, cid in cids.items()}
    statuses = sorted(str(rec["status"]) for rec in by_url.values())
    assert statuses == ["failed", "sent"]
    [dead] = dead_letters(r)
    assert "CERTIFICATE_VERIFY_FAILED" in dead["reason"]


def test_an_unverified_connection_is_never_reused_for_a_verified_request(
        tls_api: ApiServer) -> None:
    async def main() -> tuple[int, str]:
        client = http11.Client(4)
        try:
            trusted = await client.request("POST", f"https://127.0.0.1:{tls_api.port}/t",
                                           verify=False)
            try:
                await client.request("POST", f"https://127.0.0.1:{tls_api.port}/c")
            except http11.HTTPError as exc:
                return trusted.status, str(exc)
            return trusted.status, "verified request was sent"
        finally:
            await client.aclose()

    status, error = asyncio.run(main())
    assert status == 200
    assert "CERTIFICATE_VERIFY_FAILED" in error
    assert [h.path for h in tls_api.requests] == ["/t"]
