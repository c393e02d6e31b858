"""Sessions: the JWT signing secret, the HttpOnly cookie that carries the token, and the
look-up of the signed-in user on every request."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from datetime import timedelta
from typing import Any

import redis
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.response import Redirect
from litestar.security.jwt import Token
from litestar.status_codes import HTTP_303_SEE_OTHER

from proto import keys, store
from proto.bus import RedisUnavailable, check, connect, redact_url
from web.settings import WebSettings
from web.tokens import SessionOrTokenAuth
from web.views import User

COOKIE = "sa_session"
LOGIN_PATH = "/login"


def jwt_secret(settings: WebSettings, *, wait_s: float = 0.0) -> str:
    """The configured secret, else the one kept in Redis (created once with SET NX, so
    every web process and every restart sign with the same key)."""
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    r = connect(settings.redis_url)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                check(r, settings.redis_url)
                break
            except RedisUnavailable:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)
        try:
            r.set(keys.JWT_SECRET, secrets.token_urlsafe(48), nx=True)
            value = r.get(keys.JWT_SECRET)
        except redis.RedisError as exc:
            raise RedisUnavailable(
                f"cannot read the session secret from {redact_url(settings.redis_url)}: {exc}",
            ) from None
    finally:
        r.close()
    return str(value)


def derived_secret(secret: str, purpose: str) -> str:
    """A separate key per use (CSRF tokens, ...) from the one configured secret."""
    return hmac.new(secret.encode(), purpose.encode(), hashlib.sha256).hexdigest()


async def retrieve_user(token: Token,
                        connection: ASGIConnection[Any, Any, Any, Any]) -> User | None:
    """The user named by a valid token, checked against Redis so a deleted or disabled user
    is out, and so is a session from before the user's password was reset."""
    record: dict[str, str] = await connection.app.state.ar.hgetall(keys.user(token.sub))
    if not record or not store.session_valid(record, token.iat.timestamp()):
        return None
    return User(name=token.sub, admin=record.get("admin") == "1")


class Sessions:
    """Issues and clears the session cookie; ``auth`` is the app's JWT cookie middleware."""

    def __init__(self, settings: WebSettings, secret: str) -> None:
        # The session cookie; an API token instead on /api/ routes (web.tokens).
        self.auth = SessionOrTokenAuth(
            retrieve_user_handler=retrieve_user,
            token_secret=secret,
            key=COOKIE,
            samesite="lax",
            secure=settings.cookie_secure,
            default_token_expiration=timedelta(seconds=settings.session_ttl_s),
        )

    def sign_in(self, user: str, target: str) -> Redirect:
        token = self.auth.create_token(identifier=user)
        cookie = Cookie(
            key=COOKIE, value=token, path="/", httponly=True, samesite="lax",
            secure=self.auth.secure,
            max_age=int(self.auth.default_token_expiration.total_seconds()),
        )
        return Redirect(target, cookies=[cookie], status_code=HTTP_303_SEE_OTHER)

    def sign_out(self) -> Redirect:
        response = Redirect(LOGIN_PATH, status_code=HTTP_303_SEE_OTHER)
        response.delete_cookie(COOKIE, path="/")
        return response


def safe_next(target: str | None) -> str:
    """Where to go after login: a local path only, never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
