"""Every error becomes an HTTP response here, and only here.

Browsers get a small HTML page (or a redirect to the login page); API and stream clients
get JSON. Nothing from an unexpected exception reaches the client: it is logged with its
traceback and answered with a generic 500.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import redis
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException
from litestar.response import Redirect, Template
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_401_UNAUTHORIZED,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from litestar.types import ExceptionHandlersMap

from proto.store import StoreError
from web.session import LOGIN_PATH
from web.tokens import TokenExpired

log = logging.getLogger("stormalert.web")

TITLES = {
    400: "Bad request",
    401: "Please sign in",
    403: "Forbidden",
    404: "Page not found",
    405: "Method not allowed",
    429: "Too many requests",
    500: "Something went wrong",
    503: "Temporarily unavailable",
}
EXPLANATIONS = {
    403: "The form has expired or was not sent from this site. Go back, reload and try again.",
    404: "There is nothing at this address.",
    500: "The error has been logged.",
    503: "The data store is not answering. The page will work again once it is back.",
}

Req = Request[Any, Any, Any]


def wants_html(request: Req) -> bool:
    path = request.url.path
    if path.startswith(("/api/", "/events", "/healthz")):
        return False
    return "text/html" in request.headers.get("accept", "")


def error_response(request: Req, status: int, detail: str | None = None,
                   headers: dict[str, str] | None = None) -> Response[Any]:
    """The error page for a browser, else ``{"status", "detail"}`` as JSON (also from a route
    that answers another type, such as CSV)."""
    title = TITLES.get(status, "Error")
    if wants_html(request):
        return Template(
            "error.html", status_code=status, media_type=MediaType.HTML, headers=headers,
            context={"status": status, "title": title,
                     "explanation": detail or EXPLANATIONS.get(status, "")},
        )
    return Response({"status": status, "detail": detail or title}, status_code=status,
                    media_type=MediaType.JSON, headers=headers)


def on_not_authorized(request: Req, exc: NotAuthorizedException) -> Response[Any]:
    if request.headers.get("hx-request"):
        return Response(None, status_code=HTTP_401_UNAUTHORIZED,
                        headers={"HX-Redirect": LOGIN_PATH})
    if wants_html(request):
        target = request.url.path
        if request.url.query:
            target += "?" + request.url.query
        return Redirect(LOGIN_PATH if target == "/" else f"{LOGIN_PATH}?next={quote(target)}")
    # An expired API token is told apart, so its script's owner knows to make a new one.
    detail = exc.detail if isinstance(exc, TokenExpired) else "authentication required"
    return error_response(request, HTTP_401_UNAUTHORIZED, detail)


def on_http_error(request: Req, exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    if status >= HTTP_500_INTERNAL_SERVER_ERROR:
        log.error("%s %s: %s", request.method, request.url.path, exc.detail)
        return error_response(request, status)
    # Litestar's own 4xx details name what was wrong with the request and hold no secrets.
    return error_response(request, status, None if wants_html(request) else exc.detail)


def on_store_error(request: Req, exc: StoreError) -> Response[Any]:
    return error_response(request, HTTP_400_BAD_REQUEST, str(exc))


def on_redis_error(request: Req, exc: redis.RedisError) -> Response[Any]:
    log.warning("%s %s: Redis unavailable: %s", request.method, request.url.path, exc)
    return error_response(request, HTTP_503_SERVICE_UNAVAILABLE)


def on_unexpected(request: Req, exc: Exception) -> Response[Any]:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(request, HTTP_500_INTERNAL_SERVER_ERROR)


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    NotAuthorizedException: on_not_authorized,
    HTTPException: on_http_error,
    StoreError: on_store_error,
    redis.RedisError: on_redis_error,
    Exception: on_unexpected,
}
