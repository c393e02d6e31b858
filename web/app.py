"""The ASGI application: ``create_app(settings)`` wires routes, sessions, CSRF, templates and
error pages; its lifespan owns the Redis clients and the background tasks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import redis
import redis.asyncio as aredis
from litestar import Litestar
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import CacheControlHeader, ResponseHeader, State
from litestar.di import Provide
from litestar.middleware.base import DefineMiddleware
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.stores.redis import RedisStore
from litestar.template.config import TemplateConfig

from proto import keys
from proto.bus import aconnect, connect
from proto.runtime import Stats, heartbeat_loop
from web import (
    admin,
    api,
    backtest,
    detail,
    feeds,
    history,
    metrics,
    openapi,
    pages,
    rules,
    rules_api,
    settings_page,
    symbol_search,
    symbols,
    testmsg,
    watchlist,
)
from web.errors import EXCEPTION_HANDLERS
from web.live import AlertHub, Drain, QuoteBoard
from web.session import Sessions, derived_secret, jwt_secret
from web.settings import WebSettings
from web.tokens import CSRFUnlessToken

log = logging.getLogger("stormalert.web")

HERE = Path(__file__).resolve().parent
PROCESS = "web"


def heartbeat_name(settings: WebSettings) -> str:
    """``web``, or ``web-INSTANCE`` with ``STORMALERT_WEB_INSTANCE`` set (a Kubernetes pod sets
    its name there), so that each of several web processes beats under its own name and its
    ``--check`` watches that one."""
    instance = settings.web_instance
    if not instance:
        return PROCESS
    return instance if instance.startswith(f"{PROCESS}-") else f"{PROCESS}-{instance}"

# Everything the pages use comes from this origin; nothing is fetched from elsewhere.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def _ar(state: State) -> aredis.Redis:
    return state.ar


def _r(state: State) -> redis.Redis:
    return state.r


def _board(state: State) -> QuoteBoard:
    return state.board


def _hub(state: State) -> AlertHub:
    return state.hub


def create_app(settings: WebSettings, *, drain: Drain | None = None,
               secret_wait_s: float = 0.0) -> Litestar:
    """The app. Without a configured JWT secret, reads (or creates) the shared one in Redis
    first, waiting up to ``secret_wait_s`` for Redis; raises RedisUnavailable if it cannot.
    The server calls ``drain.start()`` when it begins to stop, to end open event streams."""
    drain = drain or Drain()
    secret = jwt_secret(settings, wait_s=secret_wait_s)
    sessions = Sessions(settings, secret)
    stats = Stats(heartbeat_name(settings))

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        ar = aconnect(settings.redis_url)
        r = connect(settings.redis_url)
        board = QuoteBoard(ar, settings.quotes_interval_s)
        hub = AlertHub(ar)
        app.state.update({"ar": ar, "r": r, "board": board, "hub": hub})
        # The rate limits count in Redis: shared by every web process, kept across restarts
        # (registered here, on this lifespan's client: the middleware looks them up by name).
        for name in (pages.LOGIN_ATTEMPTS, settings_page.PASSWORD_CHANGES):
            app.stores.register(name, RedisStore(ar, namespace=f"{keys.RATE_LIMITS}:{name}"),
                                allow_override=True)
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(board.run(), name="web-quotes"),
                    tg.create_task(hub.run(), name="web-alerts"),
                    tg.create_task(heartbeat_loop(stats.process, ar, stats,
                                                  settings.stats_interval_s),
                                   name="web-heartbeat"),
                ]
                try:
                    yield
                finally:
                    for task in tasks:
                        task.cancel()
        finally:
            await ar.aclose()
            r.close()

    return Litestar(
        # Only the JSON API goes into the OpenAPI document (web.openapi).
        route_handlers=openapi.documented([
            pages.login_page, pages.login, pages.logout, pages.dashboard,
            api.healthz, api.api_quotes, api.api_alerts, api.events,
            detail.alert_page, detail.api_alert,
            testmsg.request_test, testmsg.test_page, testmsg.api_test,
            watchlist.watchlist_add, watchlist.watchlist_remove, feeds.feed_banner,
            symbols.symbol_page, symbols.api_bars, *symbol_search.ROUTES,
            *backtest.ROUTES,
            admin.router, metrics.metrics,
            *rules.ROUTES,
            *rules_api.ROUTES,
            *history.ROUTES,
            create_static_files_router(path="/static", directories=[HERE / "static"],
                                       opt={"exclude_from_auth": True},
                                       cache_control=CacheControlHeader(max_age=300)),
            *settings_page.ROUTES,
        ]),
        dependencies={
            "ar": Provide(_ar, sync_to_thread=False),
            "r": Provide(_r, sync_to_thread=False),
            "board": Provide(_board, sync_to_thread=False),
            "hub": Provide(_hub, sync_to_thread=False),
            "stats": Provide(lambda: stats, sync_to_thread=False, use_cache=True),
            "drain": Provide(lambda: drain, sync_to_thread=False, use_cache=True),
            "settings": Provide(lambda: settings, sync_to_thread=False, use_cache=True),
            "sessions": Provide(lambda: sessions, sync_to_thread=False, use_cache=True),
        },
        middleware=[
            pages.login_rate_limit(settings.login_attempts_per_minute).middleware,
            settings_page.password_rate_limit().middleware,
            # After authentication, so that requests an API token authenticated can skip it.
            DefineMiddleware(CSRFUnlessToken, config=CSRFConfig(
                secret=derived_secret(secret, "csrf"), cookie_secure=settings.cookie_secure,
                cookie_samesite="lax")),
        ],
        lifespan=[lifespan],
        on_app_init=[sessions.auth.on_app_init],
        template_config=TemplateConfig(directory=HERE / "templates", engine=JinjaTemplateEngine),
        exception_handlers=EXCEPTION_HANDLERS,
        # Pages and API answers hold one user's data: never kept by a browser or proxy.
        cache_control=CacheControlHeader(no_store=True),
        response_headers=[ResponseHeader(name=k, value=v) for k, v in SECURITY_HEADERS.items()],
        openapi_config=openapi.openapi_config(),
        logging_config=None,  # the process's own logging (proto.runtime.setup_logging)
        debug=False,
    )
