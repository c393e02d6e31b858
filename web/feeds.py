"""The dashboard's feed banner: is any market feed live, stale, or waiting for the daily
broker login? Reads what ingest writes: the state hash ``keys.feed_state(feed)`` (see
ingest/feed_status.py) and its heartbeat ``keys.heartbeat("ingest-" + feed)``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import redis
import redis.asyncio as aredis
from litestar import MediaType, get
from litestar.di import NamedDependency
from litestar.response import Template

from proto import keys
from web.views import ist_time

# The feeds ingest can run (ingest.settings: --feed); web cannot import ingest.
FEEDS = ("sim", "kite", "upstox")
FEED_NAMES = {"sim": "Simulator", "kite": "Kite", "upstox": "Upstox"}
# A reconnect shorter than this is not worth a banner; a heartbeat older than this (ingest
# beats every couple of seconds) means the process has stalled.
RECONNECT_GRACE_S = 10.0
HEARTBEAT_STALE_S = 10.0
REASON_MAX = 160

Level = Literal["stale", "login"]


@dataclass(frozen=True, slots=True)
class Problem:
    level: Level
    feed: str
    text: str


def _since(state: dict[str, str]) -> float | None:
    try:
        return float(state["since"])
    except (KeyError, ValueError):
        return None


def _reason(state: dict[str, str]) -> str:
    reason = " ".join(state.get("reason", "").split())
    return reason if len(reason) <= REASON_MAX else reason[:REASON_MAX - 1] + "…"


def feed_problems(states: dict[str, dict[str, str]], beats: dict[str, float | None],
                  now_s: float) -> list[Problem]:
    """What the banner says, from each feed's state hash and the time of its ingest
    process's last heartbeat (None: no heartbeat key, so no live process). Pure."""
    live = [feed for feed in FEEDS if beats.get(feed) is not None
            or states.get(feed, {}).get("state") == "needs_login"]
    if not live:
        return [Problem("stale", "", "No market feed is running: prices and alerts are not live.")]
    problems = []
    for feed in live:
        name, state = FEED_NAMES[feed], states.get(feed, {})
        since = _since(state)
        at = f" since {ist_time(int(since * 1000))} IST" if since else ""
        beat = beats.get(feed)
        kind = state.get("state")
        if kind == "needs_login":
            problems.append(Problem("login", feed, (
                f"{name} needs the daily broker login{at}: an admin must sign in to the "
                f"broker again. ({_reason(state)})")))
        elif beat is None or now_s - beat > HEARTBEAT_STALE_S:
            problems.append(Problem("stale", feed, f"{name} feed is stale: its ingest process "
                                    "has stopped reporting. Prices are not live."))
        elif kind == "reconnecting" and (since is None or now_s - since > RECONNECT_GRACE_S):
            problems.append(Problem("stale", feed, (
                f"{name} feed is reconnecting{at}: prices may be stale. ({_reason(state)})")))
        elif kind == "stopped":
            problems.append(Problem("stale", feed, f"{name} feed has stopped{at}."))
    return problems


def _beat_time(raw: Any) -> float | None:
    if raw is None:
        return None
    try:
        return float(orjson.loads(raw)["at"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


async def read_problems(ar: aredis.Redis) -> list[Problem]:
    """The banner's problems from Redis (one round trip); none when Redis cannot be read
    (the page's own status line says that the data store is down)."""
    try:
        async with ar.pipeline(transaction=False) as pipe:
            for feed in FEEDS:
                pipe.hgetall(keys.feed_state(feed))
                pipe.get(keys.heartbeat(f"ingest-{feed}"))
            replies: list[Any] = await pipe.execute()
    except (redis.RedisError, OSError):
        return []
    states = {feed: replies[2 * i] or {} for i, feed in enumerate(FEEDS)}
    beats = {feed: _beat_time(replies[2 * i + 1]) for i, feed in enumerate(FEEDS)}
    return feed_problems(states, beats, time.time())


def banner_context(problems: list[Problem]) -> dict[str, Any]:
    level = "login" if any(p.level == "login" for p in problems) else (
        "stale" if problems else "ok")
    return {"feed_problems": problems, "feed_level": level}


@get("/feeds/banner")
async def feed_banner(ar: NamedDependency[aredis.Redis]) -> Template:
    """The banner alone, for the dashboard to poll with htmx."""
    return Template("_feed_banner.html", media_type=MediaType.HTML,
                    context=banner_context(await read_problems(ar)))
