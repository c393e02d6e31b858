"""The HTML pages: sign in, sign out and the dashboard."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any

import redis
import redis.asyncio as aredis
from litestar import MediaType, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.params import Body, QueryParameter
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_401_UNAUTHORIZED, HTTP_422_UNPROCESSABLE_ENTITY

from proto import store
from proto.runtime import Stats
from web import watchlist
from web.alerts import recent_alerts
from web.feeds import banner_context, read_problems
from web.session import Sessions, safe_next
from web.settings import WebSettings
from web.views import User, alert_view

log = logging.getLogger("stormalert.web")

LOGIN_FAILED = "Incorrect user name or password."


@dataclass
class LoginForm:
    username: str = ""
    password: str = ""
    next: str = "/"


def _login_page(error: str | None, target: str, status: int = 200) -> Template:
    return Template("login.html", status_code=status, media_type=MediaType.HTML,
                    context={"error": error, "next": safe_next(target)})


@get("/login", exclude_from_auth=True)
async def login_page(next_: Annotated[str | None, QueryParameter(name="next")] = None) -> Template:
    return _login_page(None, next_ or "/")


def _is_sign_in(request: Request[Any, Any, Any]) -> bool:
    return request.method == "POST" and request.url.path == "/login"


LOGIN_ATTEMPTS = "login_attempts"  # the rate limit's store (a RedisStore: web.app)


def login_rate_limit(attempts_per_minute: int) -> RateLimitConfig:
    """Counts sign-in posts only, in a store of their own (the middleware keys by client
    address alone, so any other limit must not share it)."""
    return RateLimitConfig(rate_limit=("minute", attempts_per_minute), store=LOGIN_ATTEMPTS,
                           check_throttle_handler=_is_sign_in)


@post("/login", exclude_from_auth=True, sync_to_thread=True)
def login(
    data: Annotated[LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
    r: NamedDependency[redis.Redis],
    sessions: NamedDependency[Sessions],
    stats: NamedDependency[Stats],
) -> Response[Any]:
    name = data.username.strip().lower()  # user names are lowercase (proto.store.USER_RE)
    # argon2 verification is deliberately slow: this handler runs in a worker thread.
    record = store.check_password(r, name, data.password) if name and data.password else None
    if record is None:
        stats.inc("login_failures")
        log.info("login failed for a user name of %d characters", len(name))
        return _login_page(LOGIN_FAILED, data.next, HTTP_401_UNAUTHORIZED)
    stats.inc("logins")
    log.info("login: %s", record["name"])
    return sessions.sign_in(record["name"], safe_next(data.next))


@post("/logout")
async def logout(request: Request[User, Any, Any], sessions: NamedDependency[Sessions]) -> Redirect:
    log.info("logout: %s", request.user.name)
    return sessions.sign_out()


async def dashboard_page(request: Request[User, Any, Any], ar: aredis.Redis,
                         settings: WebSettings, *, watch_error: str | None = None,
                         entered: str = "") -> Template:
    """The dashboard: the user's watchlist, the feed banner and the live alerts feed; with
    ``watch_error`` (a refused watchlist form without script) it answers 422."""
    user = request.user
    alerts, cursor = await recent_alerts(ar, user, limit=settings.history_alerts,
                                         scan=settings.history_scan)
    return Template("dashboard.html", media_type=MediaType.HTML,
                    status_code=HTTP_422_UNPROCESSABLE_ENTITY if watch_error else 200,
                    context={
        "user": user,
        **await watchlist.watchlist_context(ar, user),
        "watch_error": watch_error,
        "entered": entered,
        "alerts": [alert_view(entry_id, alert) for entry_id, alert in alerts],
        "cursor": cursor,
        **banner_context(await read_problems(ar)),
    })


@get("/")
async def dashboard(
    request: Request[User, Any, Any],
    ar: NamedDependency[aredis.Redis],
    settings: NamedDependency[WebSettings],
) -> Template:
    return await dashboard_page(request, ar, settings)
