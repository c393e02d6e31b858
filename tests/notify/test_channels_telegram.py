"""Telegram through apprise's real tgram plugin against a loopback Bot API server
(``notify_api_base``): the request, 429 with ``retry_after``, 5xx bursts, pacing."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import orjson
import redis

from proto.runtime import Stats
from tests.notify.apiserver import Answer, ApiServer
from tests.notify.channels import deliver, record, settings
from tests.notify.conftest import (
    NotifierProc,
    dead_letters,
    make_alert,
    make_user,
    pending_count,
    publish,
    wait_until,
)

TOKEN = "123456789:AAHabcdefghijklmnopqrstuvwxyz012345"
SEND = f"/bot{TOKEN}/sendMessage"


def too_many(retry_after_s: int) -> Answer:
    return Answer(429, orjson.dumps({
        "ok": False, "error_code": 429,
        "description": f"Too Many Requests: retry after {retry_after_s}",
        "parameters": {"retry_after": retry_after_s}}))




def test_the_bot_api_gets_the_chat_and_the_rendered_text(r: redis.Redis, redis_url: str,
                                                          api: ApiServer) -> None:
    [cid] = make_user(r, "asha", {f"tgram://{TOKEN}/-100200300": "default"}).values()
    alert = make_alert("asha", sym="NSE:RELIANCE", ltp=2950.5)
    assert deliver(settings(redis_url, {"tgram": api.base}), [alert]) == [True]
    [hit] = api.under(SEND)
    payload = hit.json()
    assert hit.method == "POST"
    assert payload["chat_id"] == -100200300
    assert payload["text"].startswith("NSE:RELIANCE crossed above at 2950.50\r\n")
    assert payload["text"].endswith(f"https://dash.example/alerts/{alert.id}")
    assert "IST" in payload["text"]
    assert record(r, alert.id, cid)["status"] == "sent"


def test_429_retry_after_is_waited_out_before_the_next_try(r: redis.Redis, redis_url: str,
                                                            api: ApiServer) -> None:
    api.script[SEND] = [too_many(1)]
    [cid] = make_user(r, "asha", {f"tgram://{TOKEN}/555": "default"}).values()
    alert = make_alert("asha")
    stats = Stats("t")
    # Backoff alone would retry after 0.05-0.1 s; Telegram asked for 1 s.
    assert deliver(settings(redis_url, {"tgram": api.base}), [alert], stats) == [True]
    first, second = api.under(SEND)
    assert second.at - first.at >= 1.0
    rec = record(r, alert.id, cid)
    assert (rec["status"], rec["attempts"]) == ("sent", 2)
    assert stats.counters["retries"] == 1


def test_429_holds_the_chat_for_later_alerts_but_not_other_chats(r: redis.Redis,
                                                                  redis_url: str,
                                                                  api: ApiServer) -> None:
    """The second alert for chat 555 was booked after the 429: it waits too; chat 777 on the
    same bot does not."""
    api.script[SEND] = [too_many(1)]
    make_user(r, "asha", {f"tgram://{TOKEN}/555": "a", f"tgram://{TOKEN}/777": "b"})
    alerts = [make_alert("asha", channels=["a"]), make_alert("asha", channels=["a"]),
              make_alert("asha", channels=["b"])]
    started = time.monotonic()
    assert deliver(settings(redis_url, {"tgram": api.base},
                            notify_pace_tgram_chat_per_s=100.0),
                   alerts, stagger_s=0.2) == [True] * 3
    by_chat: dict[int, list[float]] = {}
    for hit in api.under(SEND):
        by_chat.setdefault(hit.json()["chat_id"], []).append(hit.at - started)
    assert len(by_chat[555]) == 3  # the 429, then both alerts
    assert min(by_chat[555][1:]) >= 1.0
    assert by_chat[777][0] < 0.8


def test_a_burst_of_5xx_then_success(r: redis.Redis, redis_url: str, api: ApiServer) -> None:
    api.script[SEND] = [Answer(502, b"Bad Gateway"), Answer(500, b'{"ok": false}'),
                        Answer(503, b"")]
    [cid] = make_user(r, "asha", {f"tgram://{TOKEN}/555": "default"}).values()
    alert = make_alert("asha")
    assert deliver(settings(redis_url, {"tgram": api.base}), [alert]) == [True]
    assert len(api.under(SEND)) == 4
    rec = record(r, alert.id, cid)
    assert (rec["status"], rec["attempts"]) == ("sent", 4)
    assert dead_letters(r) == []


def test_429s_count_as_tries_and_give_up(r: redis.Redis, redis_url: str,
                                         api: ApiServer) -> None:
    api.script[SEND] = [too_many(0)] * 2
    [cid] = make_user(r, "asha", {f"tgram://{TOKEN}/555": "default"}).values()
    alert = make_alert("asha")
    assert deliver(settings(redis_url, {"tgram": api.base}, notify_max_tries=2),
                   [alert]) == [True]
    assert len(api.under(SEND)) == 2
    [dead] = dead_letters(r)
    assert dead["channel"] == cid
    assert "gave up after 2 tries" in dead["reason"]
    assert "Too Many Requests" in dead["reason"]
    assert TOKEN not in dead["reason"]


def test_a_burst_for_one_chat_is_paced_and_other_chats_are_not(r: redis.Redis,
                                                              redis_url: str,
                                                              api: ApiServer) -> None:
    make_user(r, "asha", {f"tgram://{TOKEN}/555": "a", f"tgram://{TOKEN}/777": "b"})
    alerts = [make_alert("asha", channels=["a"]) for _ in range(5)]
    alerts.append(make_alert("asha", channels=["b"]))
    started = time.monotonic()
    assert deliver(settings(redis_url, {"tgram": api.base}, notify_pace_tgram_chat_per_s=5.0),
                   alerts) == [True] * 6
    at = {555: [], 777: []}  # type: dict[int, list[float]]
    for hit in api.under(SEND):
        at[hit.json()["chat_id"]].append(hit.at - started)
    gaps = [b - a for a, b in zip(at[555], at[555][1:], strict=False)]
    assert len(gaps) == 4
    assert min(gaps) >= 0.15  # 5/s: one every 0.2 s (scheduling jitter allowed)
    assert at[555][-1] >= 0.75
    assert at[777][0] < at[555][1]  # not queued behind chat 555


def test_the_notifier_process_takes_the_api_base_from_its_environment(
        r: redis.Redis, api: ApiServer, notifier: Callable[..., NotifierProc]) -> None:
    api.script[SEND] = [too_many(1)]
    [cid] = make_user(r, "asha", {f"tgram://{TOKEN}/555": "default"}).values()
    alert = make_alert("asha")
    proc = notifier(STORMALERT_NOTIFY_API_BASE=json.dumps({"tgram": api.base}))
    publish(r, alert)
    wait_until(lambda: pending_count(r) == 0 and len(api.under(SEND)) == 2,
               what="the 429 and the retry")
    first, second = api.under(SEND)
    assert second.at - first.at >= 1.0
    assert record(r, alert.id, cid)["status"] == "sent"
    assert proc.stop() == 0
    assert TOKEN not in proc.log()


def test_a_retry_after_a_partial_failure_goes_only_to_the_chats_that_missed_it(
        r: redis.Redis, redis_url: str, api: ApiServer) -> None:
    """One channel, two chats: the first accepts, the second answers 500; the retry must
    not send the alert to the first chat again."""
    api.script[SEND] = [Answer(200), Answer(500, b'{"ok": false}')]
    [cid] = make_user(r, "asha", {f"tgram://{TOKEN}/111/222": "default"}).values()
    alert = make_alert("asha")
    assert deliver(settings(redis_url, {"tgram": api.base},
                            notify_pace_tgram_chat_per_s=100.0), [alert]) == [True]
    chats = [hit.json()["chat_id"] for hit in api.under(SEND)]
    assert chats == [111, 222, 222]
    rec = record(r, alert.id, cid)
    assert (rec["status"], rec["attempts"]) == ("sent", 2)
