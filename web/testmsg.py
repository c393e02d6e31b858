"""The test-message button: the web process asks, the notifier sends.

The web process never sends a message (nor imports notify). A press creates the request's
result hash (``keys.notify_test``) and appends the request to ``keys.NOTIFY_TESTS``; the
notifier sends one try to each of the user's channels and writes each outcome into that
hash. The result page reloads itself (a meta refresh: no script needed) until every channel
has answered, or says that no notifier picked the request up within ``test_message_wait_s``.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any, cast

import orjson
import redis.asyncio as aredis
from litestar import MediaType, Request, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER

from proto import keys
from web.settings import WebSettings
from web.views import User

REQUEST_ID_RE = re.compile(r"[A-Za-z0-9_-]{16}")
# A notifier that picked a request up answers within its send timeout (10 s by default);
# past this, it stopped on the way.
STALLED_S = 60.0
REFRESH_S = 1

MESSAGES = {
    "waiting": "Waiting for the notifier to pick the request up…",
    "sending": "Sending…",
    "done": "Done.",
    "no_notifier": "No notifier answered: the notifier is not running, so no test message "
                   "was sent. Start it and press the button again.",
    "stalled": "The notifier stopped answering before every channel was tried.",
}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_state(request_id: str, raw: dict[str, str], at_ms: int, wait_s: float) -> dict[str, Any]:
    """The view of a request's result hash at ``at_ms``: ``state`` (waiting | sending |
    done | no_notifier | stalled), ``pending`` (the page should look again) and the outcome
    of each channel that answered so far."""
    results = []
    for field, value in sorted(raw.items()):
        if field.startswith("ch:"):
            try:
                row = orjson.loads(value)
                results.append({"channel": str(row["channel"]), "tag": str(row.get("tag", "")),
                                "ok": bool(row["ok"]), "error": str(row.get("error", ""))})
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
    if "done_ms" in raw:
        state = "done"
    elif "picked_ms" in raw:
        stalled = at_ms - int(raw["picked_ms"]) > STALLED_S * 1000
        state = "stalled" if stalled else "sending"
    else:
        waited_ms = at_ms - int(raw.get("requested_ms") or 0)
        state = "no_notifier" if waited_ms > wait_s * 1000 else "waiting"
    channels = int(raw["channels"]) if raw.get("channels", "").isdigit() else None
    return {"id": request_id, "state": state, "message": MESSAGES[state],
            "pending": state in ("waiting", "sending"), "channels": channels,
            "results": results}


@post("/test-message")
async def request_test(request: Request[User, Any, Any],
                       ar: NamedDependency[aredis.Redis]) -> Redirect:
    """Ask the notifier for a test message to each of the user's channels."""
    user = request.user.name
    request_id = secrets.token_urlsafe(12)  # 16 characters of REQUEST_ID_RE
    at_ms = now_ms()
    result = keys.notify_test(user, request_id)
    # The result hash first: the notifier skips requests whose hash is gone (expired).
    # Not a transaction: the two keys live in different hash slots of a cluster.
    async with ar.pipeline(transaction=False) as pipe:
        pipe.hset(result, mapping={"requested_ms": at_ms})
        pipe.expire(result, keys.NOTIFY_TEST_TTL_S)
        pipe.xadd(keys.NOTIFY_TESTS, {"id": request_id, "user": user, "at_ms": at_ms},
                  maxlen=keys.NOTIFY_TESTS_MAXLEN, approximate=True)
        await pipe.execute()
    return Redirect(f"/test-message/{request_id}", status_code=HTTP_303_SEE_OTHER)


async def load_state(ar: aredis.Redis, user: User, request_id: str,
                     settings: WebSettings) -> dict[str, Any]:
    """The state of one of this user's requests; NotFoundException for any other id."""
    if not REQUEST_ID_RE.fullmatch(request_id):
        raise NotFoundException()
    raw = cast(dict[str, str], await ar.hgetall(keys.notify_test(user.name, request_id)))
    if not raw:
        raise NotFoundException()
    return test_state(request_id, raw, now_ms(), settings.test_message_wait_s)


@get("/test-message/{request_id:str}")
async def test_page(request: Request[User, Any, Any], request_id: FromPath[str],
                    ar: NamedDependency[aredis.Redis],
                    settings: NamedDependency[WebSettings]) -> Template:
    state = await load_state(ar, request.user, request_id, settings)
    return Template("test_message.html", media_type=MediaType.HTML,
                    context={"user": request.user, "t": state, "refresh_s": REFRESH_S})


@get("/api/test-message/{request_id:str}")
async def api_test(request: Request[User, Any, Any], request_id: FromPath[str],
                   ar: NamedDependency[aredis.Redis],
                   settings: NamedDependency[WebSettings]) -> dict[str, Any]:
    return await load_state(ar, request.user, request_id, settings)
