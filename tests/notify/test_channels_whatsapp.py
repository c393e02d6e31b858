"""WhatsApp through Meta's Cloud API (``whatsapp://``, text and an approved template for
outside the 24-hour window) and SMS/WhatsApp through Twilio (``twilio://``): apprise's real
plugins against a loopback server standing in for each API (``notify_api_base``)."""

from __future__ import annotations

import base64
import json

import orjson
import redis

from proto import keys
from tests.notify.apiserver import Answer, ApiServer
from tests.notify.channels import deliver, settings
from tests.notify.conftest import dead_letters, make_alert, make_user

META_TOKEN, PHONE_ID = "EAAGtoken987654321", "1234567890"
SID = "AC0123456789abcdef0123456789abcdef"
TWILIO_TOKEN = "abcdef0123456789abcdef0123456789"
TWILIO_PATH = f"/2010-04-01/Accounts/{SID}/Messages.json"



def status(r: redis.Redis, alert_id: str, cid: str) -> str:
    return str(json.loads(str(r.hget(keys.delivery(alert_id), cid)))["status"])


def test_cloud_api_text_message(r: redis.Redis, redis_url: str, api: ApiServer) -> None:
    [cid] = make_user(r, "ravi", {
        f"whatsapp://{META_TOKEN}@{PHONE_ID}/+919876543210": "default"}).values()
    alert = make_alert("ravi", msg="long reason " * 200)
    assert deliver(settings(redis_url, {"whatsapp": api.base}), [alert]) == [True]
    [hit] = api.requests
    assert hit.path.endswith(f"/{PHONE_ID}/messages")
    assert hit.headers["Authorization"] == f"Bearer {META_TOKEN}"
    payload = hit.json()
    assert (payload["messaging_product"], payload["type"]) == ("whatsapp", "text")
    assert payload["to"] == "+919876543210"
    text = payload["text"]["body"]
    assert len(text) <= 1024
    assert text.startswith("NSE:INFY crossed above at 1523.40")
    assert text.endswith(f"/alerts/{alert.id}")
    assert status(r, alert.id, cid) == "sent"


def test_cloud_api_template_carries_the_alert_as_its_body_parameter(
        r: redis.Redis, redis_url: str, api: ApiServer) -> None:
    """Outside the 24-hour window only an approved template may be sent; ``:body=1`` puts
    the rendered alert in the template's parameter {{1}}."""
    url = (f"whatsapp://stormalert_alert:{META_TOKEN}@{PHONE_ID}/+919876543210"
           "?lang=en_IN&:body=1")
    make_user(r, "ravi", {url: "default"})
    alert = make_alert("ravi")
    assert deliver(settings(redis_url, {"whatsapp": api.base}), [alert]) == [True]
    payload = api.requests[0].json()
    assert payload["type"] == "template"
    template = payload["template"]
    assert template["name"] == "stormalert_alert"
    assert template["language"] == {"code": "en_IN"}
    [component] = template["components"]
    assert component["type"] == "body"
    [parameter] = component["parameters"]
    assert parameter["type"] == "text"
    assert parameter["text"].startswith("NSE:INFY crossed above at 1523.40")
    assert parameter["text"].endswith(f"/alerts/{alert.id}")


def test_cloud_api_throughput_error_is_retried_after_retry_after(
        r: redis.Redis, redis_url: str, api: ApiServer) -> None:
    error = orjson.dumps({"error": {"code": 130429, "message": "Rate limit hit"}})
    api.script["/"] = [Answer(429, error, (("Retry-After", "1"),))]
    make_user(r, "ravi", {f"whatsapp://{META_TOKEN}@{PHONE_ID}/+919876543210": "default"})
    assert deliver(settings(redis_url, {"whatsapp": api.base}), [make_alert("ravi")]) == [True]
    first, second = api.requests
    assert second.at - first.at >= 1.0


def twilio_url(*targets: str) -> str:
    return f"twilio://{SID}:{TWILIO_TOKEN}@+14155550100/{'/'.join(targets)}"


def test_twilio_sms_and_whatsapp(r: redis.Redis, redis_url: str, api: ApiServer) -> None:
    cids = make_user(r, "meera", {twilio_url("+919876543210"): "sms",
                                  twilio_url("w:+919876543211"): "wa"})
    alert = make_alert("meera", channels=["sms", "wa"], msg="long reason " * 200)
    assert deliver(settings(redis_url, {"twilio": api.base}), [alert]) == [True]
    hits = api.under(TWILIO_PATH)
    assert len(hits) == 2
    basic = base64.b64encode(f"{SID}:{TWILIO_TOKEN}".encode()).decode()
    forms = {}
    for hit in hits:
        assert hit.headers["Authorization"] == f"Basic {basic}"
        form = {k: v[0] for k, v in hit.form().items()}
        forms[form["To"]] = form
    sms, wa = forms["+919876543210"], forms["whatsapp:+919876543211"]
    assert sms["From"] == "+14155550100"
    assert wa["From"] == "whatsapp:+14155550100"
    assert len(sms["Body"]) <= 160  # one SMS segment, as apprise declares
    assert 160 < len(wa["Body"]) <= 1024  # WhatsApp's limit, not the SMS one
    for body in (sms["Body"], wa["Body"]):
        assert body.endswith(f"/alerts/{alert.id}")
    assert {status(r, alert.id, cid) for cid in cids.values()} == {"sent"}


def test_twilio_5xx_burst_then_success_and_4xx_given_up(r: redis.Redis, redis_url: str,
                                                         api: ApiServer) -> None:
    api.script[TWILIO_PATH] = [Answer(500), Answer(503), Answer(201)]
    make_user(r, "meera", {twilio_url("+919876543210"): "default"})
    ok = make_alert("meera")
    assert deliver(settings(redis_url, {"twilio": api.base}), [ok]) == [True]
    assert len(api.under(TWILIO_PATH)) == 3
    api.script[TWILIO_PATH] = [Answer(400, b'{"code": 21211, "message": "Invalid To"}')] * 4
    bad = make_alert("meera")
    assert deliver(settings(redis_url, {"twilio": api.base}), [bad]) == [True]
    [dead] = dead_letters(r)
    assert dead["id"] == bad.id
    assert TWILIO_TOKEN not in dead["reason"]
