"""The system's status as Redis shows it: process heartbeats, feed states, stream lengths,
consumer lag and pending per group, dead letters, tick→alert latency of recent alerts.

Read by ``stormalert status`` (deploy) and the web admin's status page and ``/metrics``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis

from proto import keys

LATENCY_SAMPLE = 1000
FEEDS = ("kite", "upstox", "sim")
TICK_STREAM_PATTERN = "sa:ticks:{*}"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def heartbeats(r: redis.Redis) -> dict[str, dict[str, Any]]:
    """Process name -> its last heartbeat (``proto.runtime``), with ``age_s`` added."""
    beats: dict[str, dict[str, Any]] = {}
    names = sorted(r.scan_iter(match=keys.HEARTBEAT_PATTERN, count=500))
    with r.pipeline(transaction=False) as pipe:  # one GET each: the keys share no slot
        for name in names:
            pipe.get(name)
        values = pipe.execute()
    for name, raw in zip(names, values, strict=True):
        if not raw:
            continue  # expired between the scan and the read
        try:
            beat = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(beat, dict):
            continue
        beat["age_s"] = round(time.time() - float(beat.get("at", 0)), 1)
        beats[str(beat.get("process", name))] = beat
    return beats


def _shard_number(key: str) -> int:
    try:
        return int(key.split("{", 1)[1].rstrip("}"))
    except (IndexError, ValueError):
        return -1


def streams(r: redis.Redis) -> dict[str, dict[str, Any]]:
    """Stream -> {length, groups: {group: {pending, lag, consumers}}}, tick shards first."""
    tick_streams = sorted(r.scan_iter(match=TICK_STREAM_PATTERN, count=500), key=_shard_number)
    found = {}
    for stream in [*tick_streams, keys.ALERTS, keys.ALERTS_DEAD]:
        if not r.exists(stream):
            continue
        groups = {}
        for g in r.xinfo_groups(stream):  # type: ignore[union-attr]
            groups[g["name"]] = {"pending": g["pending"], "lag": g.get("lag"),
                                 "consumers": g["consumers"]}
        found[stream] = {"length": r.xlen(stream), "groups": groups}
    return found


def recent_latencies_ms(r: redis.Redis, sample: int = LATENCY_SAMPLE) -> list[float]:
    """Tick receive → alert emit, in ms, of the newest ``sample`` alerts (fields ``at - rx``)."""
    latencies = []
    recent: Any = r.xrevrange(keys.ALERTS, count=sample)
    for _id, fields in recent:
        try:
            latencies.append((int(fields["at"]) - int(fields["rx"])) / 1000)
        except (KeyError, ValueError):
            continue
    return latencies


def collect(r: redis.Redis) -> dict[str, Any]:
    feeds = {}
    for feed in FEEDS:
        state = r.hgetall(keys.feed_state(feed))
        if state:
            feeds[feed] = state
    latencies = recent_latencies_ms(r)
    return {
        "processes": heartbeats(r),
        "feeds": feeds,
        "streams": streams(r),
        "dead_letters": r.xlen(keys.ALERTS_DEAD),
        "latency_ms": {"samples": len(latencies), "p50": percentile(latencies, 0.50),
                       "p99": percentile(latencies, 0.99)},
        "rules": r.hlen(keys.RULES),
        "users": r.scard(keys.USERS),
    }
