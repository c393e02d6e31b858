"""``/metrics``: who may read it, and that it parses as Prometheus text with the figures the
processes published to Redis."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from proto import keys
from tests.web.conftest import login
from tests.web.test_admin import add_alerts, beat
from web.settings import WebSettings

TOKEN = "scrape-token-for-tests"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def settings(redis_url: str) -> WebSettings:
    return WebSettings(redis_url=redis_url, stats_interval_s=3600, metrics_token=TOKEN)


def scrape(client: TestClient[Any]) -> dict[str, list[Sample]]:
    response = client.get("/metrics", headers=BEARER)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    families = text_string_to_metric_families(response.text)
    return {family.name: family.samples for family in families}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


def test_metrics_need_the_token_or_an_admin(client: TestClient[Any],
                                            users: dict[str, str]) -> None:
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": TOKEN}).status_code == 401
    login(client, "alice", users["alice"])
    assert client.get("/metrics").status_code == 401
    login(client, "root", users["root"])
    assert client.get("/metrics").status_code == 200
    assert client.get("/metrics", headers=BEARER).status_code == 200


def test_without_a_token_setting_bearer_is_refused(redis_url: str, r: redis.Redis) -> None:
    from web.app import create_app

    with TestClient(app=create_app(WebSettings(redis_url=redis_url))) as client:
        assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401
        assert client.get("/metrics", headers=BEARER).status_code == 401


def test_metrics_figures(client: TestClient[Any], r: redis.Redis) -> None:
    beat(r, "ingest-sim", counters={"ticks": 5000, "drops": 7}, rate=1234.5, feed="sim",
         connected=1)
    beat(r, "engine-0", counters={"ticks": 3000, "alerts": 9}, rate=700.0, shard=0, shards=2)
    beat(r, "engine-1", counters={"ticks": 2000}, rate=534.5, shard=1, shards=2)
    beat(r, "notify", counters={"sent": 41, "failed": 2, "retries": 5, "dead": 1})
    r.xgroup_create(keys.ticks(0), keys.ENGINE_GROUP, id="0", mkstream=True)
    for i in range(5):
        r.xadd(keys.ticks(0), {"n": str(i)})
    r.xreadgroup(keys.ENGINE_GROUP, "c0", {keys.ticks(0): ">"}, count=3)  # lag 2, pending 3
    r.xadd(keys.ALERTS_DEAD, {"id": "x", "reason": "gave up"})
    r.xadd(keys.ALERTS_DEAD, {"id": "y", "reason": "gave up"})
    r.hset(keys.feed_state("sim"), "state", "needs_login")
    add_alerts(r, [0.5, 1.5, 3.0, 30.0])  # ms

    m = scrape(client)
    assert value(m["stormalert_ingest_ticks_per_second"], "stormalert_ingest_ticks_per_second",
                 process="ingest-sim", feed="sim") == 1234.5
    assert value(m["stormalert_ingest_ticks"], "stormalert_ingest_ticks_total",
                 process="ingest-sim", feed="sim") == 5000
    assert value(m["stormalert_engine_ticks_per_second"], "stormalert_engine_ticks_per_second",
                 process="engine-1", shard="1") == 534.5
    assert value(m["stormalert_engine_ticks"], "stormalert_engine_ticks_total",
                 process="engine-0", shard="0") == 3000
    assert value(m["stormalert_engine_alerts"], "stormalert_engine_alerts_total",
                 process="engine-0", shard="0") == 9
    assert value(m["stormalert_ingest_dropped_ticks"], "stormalert_ingest_dropped_ticks_total",
                 process="ingest-sim", feed="sim") == 7
    assert value(m["stormalert_ingest_connections"], "stormalert_ingest_connections",
                 process="ingest-sim", feed="sim") == 1
    assert value(m["stormalert_stream_length"], "stormalert_stream_length",
                 stream="sa:ticks:{0}") == 5
    assert value(m["stormalert_consumer_lag"], "stormalert_consumer_lag",
                 stream="sa:ticks:{0}", group="engine") == 2
    assert value(m["stormalert_consumer_pending"], "stormalert_consumer_pending",
                 stream="sa:ticks:{0}", group="engine") == 3
    assert value(m["stormalert_dead_letters"], "stormalert_dead_letters") == 2
    deliveries = m["stormalert_deliveries"]
    assert value(deliveries, "stormalert_deliveries_total", process="notify", status="sent") == 41
    assert value(deliveries, "stormalert_deliveries_total", process="notify",
                 status="failed") == 2
    feed = m["stormalert_feed_state"]
    assert value(feed, "stormalert_feed_state", feed="sim", state="needs_login") == 1
    assert value(feed, "stormalert_feed_state", feed="sim", state="connected") == 0
    assert "web" in {s.labels["process"] for s in m["stormalert_heartbeat_age_seconds"]}

    hist = m["stormalert_alert_latency_seconds"]
    bucket = "stormalert_alert_latency_seconds_bucket"
    assert value(hist, bucket, le="0.001") == 1
    assert value(hist, bucket, le="0.002") == 2
    assert value(hist, bucket, le="0.005") == 3
    assert value(hist, bucket, le="0.05") == 4
    assert value(hist, bucket, le="+Inf") == 4
    assert value(hist, "stormalert_alert_latency_seconds_count") == 4
    assert value(hist, "stormalert_alert_latency_seconds_sum") == pytest.approx(0.035)

    # Cumulative: the next scrape adds only the alerts appended since.
    add_alerts(r, [0.7, 200.0])
    hist = scrape(client)["stormalert_alert_latency_seconds"]
    assert value(hist, "stormalert_alert_latency_seconds_count") == 6
    assert value(hist, bucket, le="0.001") == 2
    assert value(hist, bucket, le="0.1") == 5
    assert value(hist, bucket, le="0.25") == 6
    assert value(scrape(client)["stormalert_alert_latency_seconds"],
                 "stormalert_alert_latency_seconds_count") == 6
