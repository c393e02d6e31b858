"""The apprise edge with real plugin code against the loopback receiver: Telegram and
WhatsApp (their request URL pointed at it, see PITFALLS), limits, and concurrency."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import redis
from apprise.plugins.telegram import NotifyTelegram
from apprise.plugins.whatsapp import NotifyWhatsApp

from notify.deliver import Deliverer
from notify.render import render
from notify.send import Channel, send_blocking, warm_up
from notify.settings import NotifySettings
from proto.bus import aconnect
from proto.runtime import Stats
from tests.notify.apiserver import Answer, ApiServer, serving
from tests.notify.conftest import Webhook, make_alert, make_user

TG_TOKEN = "123456789:AAHabcdefghijklmnopqrstuvwxyz012345"


@pytest.fixture(autouse=True)
def _plugins_loaded() -> None:
    warm_up()


@pytest.fixture
def api() -> Iterator[ApiServer]:
    with serving() as server:
        yield server


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
