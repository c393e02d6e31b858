"""``stormalert status``: feeds, ticks/s, stream lengths, consumer lag and pending per group,
tick→alert latency percentiles. Reads only Redis (heartbeats, streams, groups)."""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis

from proto import keys

LATENCY_SAMPLE = 1000
FEED_TROUBLE = ("reconnects", "decode_errors", "drops", "write_errors")
FEEDS = ("kite", "upstox", "sim")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def collect(r: redis.Redis) -> dict[str, Any]:
    beats = {}
    for key in r.scan_iter(match=keys.HEARTBEAT_PATTERN, count=500):
        raw = r.get(key)
        if raw:
            beat = orjson.loads(raw)  # type: ignore[arg-type]
            beat["age_s"] = round(time.time() - beat.get("at", 0), 1)
            beats[beat.get("process", key)] = beat
    tick_streams = sorted(r.scan_iter(match="sa:ticks:{*}", count=500),
                          key=lambda k: int(k.split("{")[1].rstrip("}")))
    streams = {}
    for stream in [*tick_streams, keys.ALERTS, keys.ALERTS_DEAD]:
        if not r.exists(stream):
            continue
        groups = {}
        for g in r.xinfo_groups(stream):  # type: ignore[union-attr]
            groups[g["name"]] = {"pending": g["pending"], "lag": g.get("lag"),
                                 "consumers": g["consumers"]}
        streams[stream] = {"length": r.xlen(stream), "groups": groups}
    feeds = {}
    for feed in FEEDS:
        state = r.hgetall(keys.feed_state(feed))
        if state:
            feeds[feed] = state
    latencies = []
    recent: Any = r.xrevrange(keys.ALERTS, count=LATENCY_SAMPLE)
    for _id, fields in recent:
        try:
            latencies.append((int(fields["at"]) - int(fields["rx"])) / 1000)
        except (KeyError, ValueError):
            continue
    return {
        "processes": beats,
        "feeds": feeds,
        "streams": streams,
        "latency_ms": {"samples": len(latencies), "p50": percentile(latencies, 0.50),
                       "p99": percentile(latencies, 0.99)},
        "rules": r.hlen(keys.RULES),
        "users": r.scard(keys.USERS),
    }


def render(status: dict[str, Any]) -> str:
    lines = ["Processes:"]
    if not status["processes"]:
        lines.append("  (none alive: no heartbeat keys)")
    for name, beat in sorted(status["processes"].items()):
        rates = beat.get("rates", {})
        rate_text = " ".join(f"{k}={v}/s" for k, v in sorted(rates.items()) if v)
        extra = ""
        if "connected" in beat:  # a feed: is it up, and what has it lost
            counters = beat.get("counters", {})
            extra = (f" connected={beat['connected']} subscribed={beat.get('subscribed', 0)}"
                     + "".join(f" {k}={counters[k]}" for k in FEED_TROUBLE if counters.get(k)))
        lines.append(f"  {name:<14} pid={beat.get('pid')} up={beat.get('up_s')}s "
                     f"beat={beat['age_s']}s ago{extra} {rate_text}".rstrip())
    for feed, state in status.get("feeds", {}).items():
        since = state.get("since")
        ago = f" for {time.time() - float(since):.0f} s" if since else ""
        reason = f": {state['reason']}" if state.get("reason") else ""
        action = (" — log in to the broker again (the daily token expired or was refused)"
                  if state.get("state") == "needs_login" else "")
        lines.append(f"Feed {feed}: {state.get('state', '?')}{ago}{reason}{action}")
    lines.append("Streams:")
    for stream, info in status["streams"].items():
        groups = ", ".join(f"group {g}: lag={v['lag']} pending={v['pending']}"
                           for g, v in info["groups"].items())
        lines.append(f"  {stream:<16} length={info['length']}" + (f"  {groups}" if groups else ""))
    lat = status["latency_ms"]
    if lat["samples"]:
        lines.append(f"Tick→alert latency (last {lat['samples']} alerts): "
                     f"p50={lat['p50']:.2f} ms p99={lat['p99']:.2f} ms")
    else:
        lines.append("Tick→alert latency: no alerts yet")
    lines.append(f"Users: {status['users']}  Rules: {status['rules']}")
    return "\n".join(lines)
