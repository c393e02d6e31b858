"""proto.delivery: the readers of the delivery log, driven by a blocking and by an asyncio
client from one definition, against a real Redis."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aredis

from proto import delivery, keys, store
from proto.delivery import FOLDED_FIELD, Record
from tests.notify.conftest import PASSWORD, make_alert, publish

URL = "json://bot:pw-not-shown@127.0.0.1:9/x"


def arun(redis_url: str, reader: delivery.Reader[Any]) -> Any:
    async def main() -> Any:
        ar = aredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            return await delivery.arun(ar, reader)
        finally:
            await ar.aclose()
    return asyncio.run(main())


def filler(r: redis.Redis, n: int, user: str = "zed") -> None:
    for _ in range(n):
        publish(r, make_alert(user))


def test_report_is_the_same_from_both_clients(r: redis.Redis, redis_url: str) -> None:
    store.add_user(r, "alice", PASSWORD)
    cid = store.add_channel(r, "alice", URL)
    alert = make_alert("alice")
    publish(r, alert)
    r.hset(keys.delivery(alert.id), mapping={
        cid: Record("sent", 1, latency_ms=4.5, at=7).to_json(), "0123456789ab": "garbage"})
    sync = delivery.run(r, delivery.alert_report(alert.id))
    assert arun(redis_url, delivery.alert_report(alert.id)) == sync
    assert sync["user"] == "alice" and sync["alert"]["id"] == alert.id
    assert sync["deliveries"] == [
        {"channel": "?:0123456789ab", "tag": "", "status": "unreadable", "attempts": 0,
         "error": "", "latency_ms": None, "at": 0},
        {"channel": f"json:{cid}", "tag": "default", "status": "sent", "attempts": 1,
         "error": "", "latency_ms": 4.5, "at": 7},
    ]
    assert "pw-not-shown" not in orjson.dumps(sync).decode()


def test_an_engine_id_is_found_from_its_tick_time_within_a_small_scan(
        r: redis.Redis) -> None:
    filler(r, 30)
    time.sleep(0.005)  # the tick's entry comes after those (they are then older ids)
    tick_ms = time.time_ns() // 1_000_000
    engine_made = make_alert("alice", id=f"rule-1:{tick_ms}-0:2")
    old_style = make_alert("alice", id="rule-1@legacy")
    publish(r, engine_made)
    publish(r, old_style)
    filler(r, 30)
    found = delivery.run(r, delivery.find_alert(engine_made.id, scan=5))
    assert found is not None and found["id"] == engine_made.id
    # Without a tick in its id, only the newest ``scan`` entries are looked at.
    assert delivery.run(r, delivery.find_alert(old_style.id, scan=5)) is None
    found = delivery.run(r, delivery.find_alert(old_style.id))
    assert found is not None and found["id"] == old_style.id


def test_digest_and_folded_alert(r: redis.Redis) -> None:
    alert = make_alert("alice")
    publish(r, alert)
    digest = "digest:alice:m42"
    r.hset(keys.delivery(alert.id), FOLDED_FIELD, digest)
    r.rpush(keys.user_digest_items("alice", "m42"), orjson.dumps(
        {"id": alert.id, "sym": "NSE:INFY", "kind": "cross_above", "ltp": 1.5, "ts": 9,
         "ch": ["default"]}), "not json")
    folded = delivery.run(r, delivery.alert_report(alert.id))
    assert folded["folded_into"] == digest and folded["deliveries"] == []
    report = delivery.run(r, delivery.alert_report(digest))
    assert report["alert"] is None and report["user"] == "alice"
    assert report["digest_of"] == [alert.id]
    assert report["digest_items"] == [{"id": alert.id, "sym": "NSE:INFY",
                                       "kind": "cross_above", "ltp": 1.5, "ts": 9}]


def test_nothing_stored_is_not_found(r: redis.Redis) -> None:
    filler(r, 3)
    with pytest.raises(delivery.NotFound):
        delivery.run(r, delivery.alert_report("nope:1-0:0"))
    with pytest.raises(ValueError):
        delivery.parse_digest_id("digest:alice")
    assert delivery.parse_digest_id(delivery.digest_id("bob", "q7")) == ("bob", "q7")


def test_newest_alerts_of_one_user(r: redis.Redis) -> None:
    mine = [make_alert("alice") for _ in range(3)]
    for alert in mine:
        publish(r, alert)
        filler(r, 2)
    newest = delivery.run(r, delivery.newest_alerts("alice", 2))
    assert [f["id"] for f in newest] == [mine[2].id, mine[1].id]
    assert len(delivery.run(r, delivery.newest_alerts(None, 100))) == 9


def test_record_round_trip_and_unreadable() -> None:
    record = Record("failed", 3, "boom", 1.5, 10, "notify-1", 99)
    assert Record.from_json(record.to_json()) == record
    assert Record.from_json("[1, 2]").status == "unreadable"
    assert Record.from_json("{").status == "unreadable"
