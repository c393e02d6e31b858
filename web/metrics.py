"""``/metrics`` in Prometheus' text format, read from Redis at each scrape.

Who may read it: a request with ``Authorization: Bearer <STORMALERT_METRICS_TOKEN>`` (a
Prometheus scraper's ``authorization`` setting), or a signed-in admin. Every figure comes
from what the processes already publish (``proto.status``: heartbeats, streams, consumer
groups); nothing here counts on its own except the tick→alert latency histogram, which
this web process fills from the ``sa:alerts`` entries appended since its previous scrape
(``at - rx`` of each alert), so it is a proper cumulative histogram per web process.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
from collections.abc import Iterator
from typing import Any

import redis
from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException
from litestar.security.jwt import Token
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from proto import keys
from proto.status import FEEDS, heartbeats, streams
from web.session import COOKIE, Sessions, retrieve_user
from web.settings import WebSettings

LATENCY_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
FIRST_SCRAPE_ALERTS = 1000  # the first scrape starts this far back in sa:alerts
PAGE = 1000
MAX_ALERTS_PER_SCRAPE = 20_000  # a longer backlog is read over the following scrapes
DELIVERY_STATUSES = ("sent", "failed", "retries", "dead", "skipped_duplicate", "folded",
                     "no_channel")
FEED_STATES = ("connected", "reconnecting", "needs_login", "stopped")


class LatencyHistogram:
    """Cumulative tick→alert latency of the alerts read so far, in buckets of seconds."""

    def __init__(self) -> None:
        self.cursor: str | None = None
        self.counts = [0] * len(LATENCY_BUCKETS_S)
        self.count = 0
        self.sum_s = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.sum_s += seconds
        for i, bound in enumerate(LATENCY_BUCKETS_S):
            if seconds <= bound:
                self.counts[i] += 1

    def update(self, r: redis.Redis) -> None:
        """Read the alerts appended since the last call."""
        with self._lock:
            if self.cursor is None:
                newest: Any = r.xrevrange(keys.ALERTS, count=FIRST_SCRAPE_ALERTS)
                self.cursor = "0-0"
                for _id, fields in reversed(newest):
                    self._add(fields)
                if newest:
                    self.cursor = newest[0][0]
                return
            read = 0
            while read < MAX_ALERTS_PER_SCRAPE:
                page: Any = r.xrange(keys.ALERTS, min=f"({self.cursor}", count=PAGE)
                for entry_id, fields in page:
                    self._add(fields)
                    self.cursor = entry_id
                read += len(page)
                if len(page) < PAGE:
                    break

    def _add(self, fields: dict[str, str]) -> None:
        try:
            latency_us = int(fields["at"]) - int(fields["rx"])
        except (KeyError, ValueError):
            return
        self.observe(max(latency_us, 0) / 1e6)

    def family(self) -> HistogramMetricFamily:
        with self._lock:
            buckets = [(repr(bound), float(n)) for bound, n in zip(LATENCY_BUCKETS_S, self.counts,
                                                                    strict=True)]
            buckets.append(("+Inf", float(self.count)))
            return HistogramMetricFamily(
                "stormalert_alert_latency_seconds",
                "Tick receive (ingest) to alert emit (engine) of the alerts this web process "
                "has read from sa:alerts", buckets=buckets, sum_value=self.sum_s)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


class RedisCollector:
    """A prometheus_client collector that reads Redis when it is collected."""

    def __init__(self, r: redis.Redis, latency: LatencyHistogram) -> None:
        self.r = r
        self.latency = latency

    def collect(self) -> Iterator[Metric]:
        beats = heartbeats(self.r)
        yield from self._processes(beats)
        yield from self._feeds(beats)
        yield from self._engine(beats)
        yield from self._deliveries(beats)
        yield from self._streams()
        self.latency.update(self.r)
        yield self.latency.family()

    def _processes(self, beats: dict[str, dict[str, Any]]) -> Iterator[Metric]:
        age = GaugeMetricFamily("stormalert_heartbeat_age_seconds",
                                "Seconds since the process last wrote its heartbeat",
                                labels=["process"])
        up = GaugeMetricFamily("stormalert_process_uptime_seconds",
                               "Seconds since the process started", labels=["process"])
        for name, beat in beats.items():
            age.add_metric([name], float(beat["age_s"]))
            if (value := _number(beat.get("up_s"))) is not None:
                up.add_metric([name], value)
        yield age
        yield up

    def _feeds(self, beats: dict[str, dict[str, Any]]) -> Iterator[Metric]:
        rate = GaugeMetricFamily("stormalert_ingest_ticks_per_second",
                                 "Ticks decoded per second by an ingest worker",
                                 labels=["process", "feed"])
        ticks = CounterMetricFamily("stormalert_ingest_ticks", "Ticks decoded by an ingest "
                                    "worker since it started", labels=["process", "feed"])
        drops = CounterMetricFamily("stormalert_ingest_dropped_ticks", "Ticks an ingest worker "
                                    "dropped (overload or a failed write)",
                                    labels=["process", "feed"])
        connected = GaugeMetricFamily("stormalert_ingest_connections",
                                      "Feed connections an ingest worker has open",
                                      labels=["process", "feed"])
        for name, beat in beats.items():
            if not name.startswith("ingest"):
                continue
            feed = str(beat.get("feed", name.removeprefix("ingest-")))
            rate.add_metric([name, feed], _number(beat.get("rates", {}).get("ticks")) or 0.0)
            counters = beat.get("counters", {})
            ticks.add_metric([name, feed], _number(counters.get("ticks")) or 0.0)
            drops.add_metric([name, feed], _number(counters.get("drops")) or 0.0)
            if (value := _number(beat.get("connected"))) is not None:
                connected.add_metric([name, feed], value)
        state = GaugeMetricFamily("stormalert_feed_state",
                                  "1 for the state each feed is in (sa:feed:FEED)",
                                  labels=["feed", "state"])
        with self.r.pipeline(transaction=False) as pipe:
            for feed in FEEDS:
                pipe.hget(keys.feed_state(feed), "state")
            states = pipe.execute()
        for feed, current in zip(FEEDS, states, strict=True):
            if current:
                for name in sorted({*FEED_STATES, current}):
                    state.add_metric([feed, name], 1.0 if name == current else 0.0)
        yield from (rate, ticks, drops, connected, state)

    def _engine(self, beats: dict[str, dict[str, Any]]) -> Iterator[Metric]:
        rate = GaugeMetricFamily("stormalert_engine_ticks_per_second",
                                 "Ticks evaluated per second by an engine shard",
                                 labels=["process", "shard"])
        ticks = CounterMetricFamily("stormalert_engine_ticks", "Ticks evaluated by an engine "
                                    "shard since it started", labels=["process", "shard"])
        alerts = CounterMetricFamily("stormalert_engine_alerts", "Alerts written by an engine "
                                     "shard since it started", labels=["process", "shard"])
        for name, beat in beats.items():
            if not name.startswith("engine"):
                continue
            shard = str(beat.get("shard", name.removeprefix("engine-")))
            rate.add_metric([name, shard], _number(beat.get("rates", {}).get("ticks")) or 0.0)
            counters = beat.get("counters", {})
            ticks.add_metric([name, shard], _number(counters.get("ticks")) or 0.0)
            alerts.add_metric([name, shard], _number(counters.get("alerts")) or 0.0)
        yield from (rate, ticks, alerts)

    def _deliveries(self, beats: dict[str, dict[str, Any]]) -> Iterator[Metric]:
        deliveries = CounterMetricFamily(
            "stormalert_deliveries", "Channel deliveries of a notifier since it started, by "
            "outcome", labels=["process", "status"])
        for name, beat in beats.items():
            if not name.startswith("notify"):
                continue
            counters = beat.get("counters", {})
            for status in DELIVERY_STATUSES:
                if (value := _number(counters.get(status))) is not None:
                    deliveries.add_metric([name, status], value)
        yield deliveries

    def _streams(self) -> Iterator[Metric]:
        length = GaugeMetricFamily("stormalert_stream_length", "Entries in a stream",
                                   labels=["stream"])
        lag = GaugeMetricFamily("stormalert_consumer_lag", "Entries of a stream its consumer "
                                "group has not read yet", labels=["stream", "group"])
        pending = GaugeMetricFamily("stormalert_consumer_pending", "Entries a consumer group "
                                    "has read but not acknowledged", labels=["stream", "group"])
        for stream, info in streams(self.r).items():
            length.add_metric([stream], float(info["length"]))
            for group, figures in info["groups"].items():
                pending.add_metric([stream, group], float(figures["pending"]))
                if figures["lag"] is not None:
                    lag.add_metric([stream, group], float(figures["lag"]))
        dead = GaugeMetricFamily("stormalert_dead_letters",
                                 "Alerts given up on, in sa:alerts:dead")
        dead.add_metric([], float(self.r.xlen(keys.ALERTS_DEAD)))
        yield from (length, lag, pending, dead)


def render(r: redis.Redis, latency: LatencyHistogram) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(r, latency))  # type: ignore[arg-type]
    return generate_latest(registry)


_state_lock = threading.Lock()


def latency_of(state: State) -> LatencyHistogram:
    """This app's histogram, made on the first scrape."""
    with _state_lock:
        if "metrics_latency" not in state:
            state["metrics_latency"] = LatencyHistogram()
        histogram: LatencyHistogram = state["metrics_latency"]
        return histogram


def _bearer_ok(request: Request[Any, Any, Any], settings: WebSettings) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if settings.metrics_token is None or scheme.lower() != "bearer" or not given:
        return False
    expected = settings.metrics_token.get_secret_value()
    return hmac.compare_digest(given.strip().encode(), expected.encode())


async def _admin_session(request: Request[Any, Any, Any], sessions: Sessions) -> bool:
    encoded = request.cookies.get(COOKIE, "").split(" ")[-1]
    if not encoded:
        return False
    auth = sessions.auth
    try:
        token = Token.decode(encoded, secret=auth.token_secret, algorithm=auth.algorithm)
    except NotAuthorizedException:
        return False
    user = await retrieve_user(token, request)
    return user is not None and user.admin


@get("/metrics", exclude_from_auth=True, include_in_schema=False)
async def metrics(
    request: Request[Any, Any, Any],
    r: NamedDependency[redis.Redis],
    settings: NamedDependency[WebSettings],
    sessions: NamedDependency[Sessions],
) -> Response[bytes]:
    if not (_bearer_ok(request, settings) or await _admin_session(request, sessions)):
        raise NotAuthorizedException("metrics need the metrics token (Authorization: Bearer) "
                                     "or an admin's session")
    body = await asyncio.to_thread(render, r, latency_of(request.app.state))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
