"""The notifier's consumer of dashboard test-message requests, in-process against the real
Redis: each channel's outcome is written, a stale or expired request is skipped, and every
request is acked."""

from __future__ import annotations

import asyncio
import time

import orjson
import redis

from notify.deliver import Deliverer
from notify.render import Message
from notify.send import Channel, SendOutcome
from notify.settings import NotifySettings
from notify.testmsg import MAX_REQUEST_AGE_MS, TestRequests
from proto import keys
from proto.bus import aconnect
from proto.runtime import Stats
from tests.notify.conftest import make_user


def request(r: redis.Redis, user: str, request_id: str, age_ms: int = 0,
            with_result: bool = True) -> None:
    now_ms = time.time_ns() // 1_000_000
    if with_result:
        r.hset(keys.notify_test(user, request_id), "requested_ms", now_ms - age_ms)
    r.xadd(keys.NOTIFY_TESTS, {"id": request_id, "user": user, "at_ms": now_ms - age_ms})


def test_outcomes_are_written_and_stale_requests_skipped(r: redis.Redis,
                                                         redis_url: str) -> None:
    ids = make_user(r, "alice", {"json://127.0.0.1:9/ok": "default",
                                 "json://127.0.0.1:9/bad": "urgent"})
    sent: list[tuple[str, str]] = []

    def send(channel: Channel, message: Message, _timeout_s: float) -> SendOutcome:
        sent.append((channel.id, message.body))
        if channel.url.endswith("/bad"):
            return SendOutcome(False, "HTTP 500")
        return SendOutcome(True)

    request(r, "alice", "old-request-0000", age_ms=MAX_REQUEST_AGE_MS + 1000)
    request(r, "alice", "gone-request-000", with_result=False)
    request(r, "alice", "fresh-request-00")
    settings = NotifySettings(redis_url=redis_url, notify_block_ms=50)
    stats = Stats("notify")

    async def main() -> None:
        ar = aconnect(redis_url)
        deliverer = Deliverer(settings, ar, stats, send=send)
        stop = asyncio.Event()
        task = asyncio.create_task(TestRequests(settings, ar, stats, deliverer).run(stop))
        deadline = time.monotonic() + 10
        while not r.hexists(keys.notify_test("alice", "fresh-request-00"), "done_ms"):
            assert time.monotonic() < deadline, "the request was not answered"
            await asyncio.sleep(0.05)
        stop.set()
        await task
        deliverer.close()
        await ar.aclose()

    asyncio.run(main())
    assert sorted(cid for cid, _body in sent) == sorted(ids.values())
    assert all("Test message for alice" in body for _cid, body in sent)
    result = r.hgetall(keys.notify_test("alice", "fresh-request-00"))
    assert result["channels"] == "2" and r.ttl(keys.notify_test("alice", "fresh-request-00")) > 0
    outcomes = {orjson.loads(v)["channel"]: orjson.loads(v) for k, v in result.items()
                if k.startswith("ch:")}
    ok_cid, bad_cid = ids["json://127.0.0.1:9/ok"], ids["json://127.0.0.1:9/bad"]
    assert outcomes[f"json:{ok_cid}"]["ok"] is True
    assert outcomes[f"json:{bad_cid}"] == {"channel": f"json:{bad_cid}", "tag": "urgent",
                                           "ok": False, "error": "HTTP 500"}
    assert "picked_ms" not in r.hgetall(keys.notify_test("alice", "old-request-0000"))
    assert not r.exists(keys.notify_test("alice", "gone-request-000"))
    assert r.xpending(keys.NOTIFY_TESTS, keys.NOTIFY_GROUP)["pending"] == 0
    assert stats.counters["test_messages"] == 1
