"""The apprise edge with real plugin code against the loopback receiver: Telegram and
WhatsApp (their request URL pointed at it, see PITFALLS), limits, and concurrency."""

from __future__ import annotations

import asyncio
import time

import apprise
import pytest
import redis
from apprise.plugins.telegram import NotifyTelegram
from apprise.plugins.whatsapp import NotifyWhatsApp

from notify.deliver import Deliverer
from notify.render import render
from notify.send import Answer as HttpAnswer
from notify.send import (
    Channel,
    apply_api_base,
    pace_limits,
    retry_after_s,
    send_blocking,
    warm_up,
)
from notify.settings import NotifySettings
from proto.bus import aconnect
from proto.runtime import Stats
from tests.notify.apiserver import Answer, ApiServer
from tests.notify.conftest import Webhook, make_alert, make_user

TG_TOKEN = "123456789:AAHabcdefghijklmnopqrstuvwxyz012345"


@pytest.fixture(autouse=True)
def _plugins_loaded() -> None:
    warm_up()



def test_telegram_gets_at_most_4096_chars_with_the_link(webhook: Webhook,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(NotifyTelegram, "notify_url", f"http://127.0.0.1:{webhook.port}/tg/bot")
    alert = make_alert("asha", msg="long reason " * 1000)
    message = render(alert, "https://dash.example")
    channel = Channel("c1", f"tgram://{TG_TOKEN}/12345", "default")
    for _ in range(2):
        assert send_blocking(channel, message, 2.0).ok
    hits = webhook.at("/tg/")
    assert [h.path for h in hits] == [f"/tg/bot{TG_TOKEN}/sendMessage"] * 2
    text = hits[0].body["text"]
    assert len(text) <= 4096
    assert text.startswith(message.title)
    assert text.endswith(f"/alerts/{alert.id}")
    assert hits[1].at - hits[0].at < 0.2  # apprise's per-instance throttle is off


def test_whatsapp_gets_at_most_1024_chars(webhook: Webhook,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(NotifyWhatsApp, "notify_url",
                        f"http://127.0.0.1:{webhook.port}/wa/{{fb_ver}}/{{phone_id}}/messages")
    alert = make_alert("asha", msg="long reason " * 200)
    channel = Channel("c2", "whatsapp://EAAGtoken987654321@1234567890/+919876543210", "default")
    started = time.monotonic()
    for _ in range(3):
        assert send_blocking(channel, render(alert, "https://dash.example"), 2.0).ok
    assert time.monotonic() - started < 0.5  # no 0.2 s pause between sends
    hits = webhook.at("/wa/")
    assert len(hits) == 3
    assert hits[0].headers["Authorization"] == "Bearer EAAGtoken987654321"
    text = hits[0].body["text"]["body"]
    assert len(text) <= 1024
    assert text.endswith(f"/alerts/{alert.id}")


def test_unusable_url_fails_at_once_without_retries() -> None:
    outcome = send_blocking(Channel("c3", "tgram://not-a-token", "default"),
                            render(make_alert("asha")), 1.0)
    assert not outcome.ok
    assert outcome.permanent
    assert "not-a-token" not in outcome.error


def test_slow_channels_are_sent_concurrently(r: redis.Redis, redis_url: str,
                                             api: ApiServer) -> None:
    """Twelve one-second channels of one alert take about one second, not two or more:
    webhooks (on the event loop) and Telegram chats (apprise in threads) alike."""
    api.script["/slow"] = [Answer(delay_s=1.0)] * 12
    api.script["/tg"] = [Answer(delay_s=1.0)] * 12
    urls = {f"json://127.0.0.1:{api.port}/slow/{i}": "default" for i in range(12)}
    urls |= {f"tgram://{TG_TOKEN}/{1000 + i}": "default" for i in range(12)}
    make_user(r, "asha", urls)
    settings = NotifySettings(redis_url=redis_url, notify_send_timeout_s=3.0,
                              notify_api_base={"tgram": f"{api.base}/tg"})

    async def main() -> bool:
        ar = aconnect(redis_url)
        try:
            deliverer = Deliverer(settings, ar, Stats("t"))
            try:
                return await deliverer.deliver(make_alert("asha"))
            finally:
                await deliverer.aclose()
        finally:
            await ar.aclose()

    started = time.monotonic()
    assert asyncio.run(main())
    elapsed = time.monotonic() - started
    for prefix in ("/slow/", "/tg/"):
        arrivals = [h.at for h in api.under(prefix)]
        assert len(arrivals) == 12
        assert max(arrivals) - min(arrivals) < 0.5
    assert elapsed < 1.9


@pytest.mark.parametrize(("answers", "wait_s"), [
    ([HttpAnswer(429, body=b'{"ok":false,"error_code":429,"parameters":{"retry_after":7}}')], 7.0),
    ([HttpAnswer(429, "3")], 3.0),  # a Retry-After header (Meta, Twilio, webhooks)
    ([HttpAnswer(503, "2"), HttpAnswer(429, "5")], 5.0),  # several targets: the longest
    ([HttpAnswer(429, "Wed, 21 Oct 2026 07:28:00 GMT")], None),  # a date: our backoff
    ([HttpAnswer(429, body=b"not json")], None),
    ([HttpAnswer(500, "9")], None),  # only 429 and 503 ask us to wait
    ([HttpAnswer(200)], None),
    ([], None),
])
def test_retry_after(answers: list[HttpAnswer], wait_s: float | None) -> None:
    assert retry_after_s(answers) == wait_s


def test_api_base_is_set_on_the_instance_only() -> None:
    url = f"tgram://{TG_TOKEN}/12345"
    plugin = apprise.Apprise.instantiate(url)
    apply_api_base(plugin, "tgram", {"tgram": "http://127.0.0.1:8081/"})
    assert plugin.notify_url == "http://127.0.0.1:8081/bot"
    assert apprise.Apprise.instantiate(url).notify_url == "https://api.telegram.org/bot"
    twilio = apprise.Apprise.instantiate(
        "twilio://AC0123456789abcdef0123456789abcdef:abcdef0123456789abcdef0123456789"
        "@+14155550100/+919876543210")
    apply_api_base(twilio, "twilio", {"twilio": "http://t"})
    assert twilio.notify_sms_url == "http://t/2010-04-01/Accounts/{sid}/Messages.json"
    apply_api_base(twilio, "twilio", {"tgram": "http://other"})  # no entry: unchanged
    assert twilio.notify_sms_url.startswith("http://t/")


def test_pacing_keys_per_chat_bot_and_sender() -> None:
    s = NotifySettings(notify_pace_tgram_chat_per_s=1.0, notify_pace_tgram_bot_per_s=30.0,
                       notify_pace_whatsapp_number_per_s=80.0)
    two_chats = apprise.Apprise.instantiate(f"tgram://{TG_TOKEN}/111/222")
    chat1, chat2, bot = pace_limits(two_chats, "tgram", s)
    assert (chat1.rate_per_s, chat1.burst, chat1.held_by_429) == (1.0, 1.0, True)
    assert (bot.rate_per_s, bot.burst, bot.held_by_429) == (30.0, 30.0, False)
    assert len({chat1.key, chat2.key, bot.key}) == 3
    [*_chats, same_bot] = pace_limits(apprise.Apprise.instantiate(f"tgram://{TG_TOKEN}/333"),
                                      "tgram", s)
    assert same_bot.key == bot.key
    assert TG_TOKEN not in bot.key
    wa = apprise.Apprise.instantiate("whatsapp://EAAGtoken987654321@1234567890/+919876543210")
    [number] = pace_limits(wa, "whatsapp", s)
    assert (number.rate_per_s, number.burst) == (80.0, 80.0)
    assert pace_limits(apprise.Apprise.instantiate("json://localhost"), "json", s) == []
