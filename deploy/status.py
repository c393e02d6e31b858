"""``stormalert status``: feeds, ticks/s, stream lengths, consumer lag and pending per group,
tick→alert latency percentiles, as text. What it shows is read by ``proto.status``."""

from __future__ import annotations

import time
from typing import Any

from proto.status import collect

__all__ = ["collect", "render"]

FEED_TROUBLE = ("reconnects", "decode_errors", "drops", "write_errors")


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
