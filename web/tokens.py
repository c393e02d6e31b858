"""API tokens for scripts and bots, and the authentication that accepts them.

A token is 32 random bytes (``sat_`` + 43 URL-safe characters), shown to its owner once and
stored only as its SHA-256: with 256 bits of entropy a fast hash cannot be brute-forced, so
argon2's deliberate cost (tens of ms of CPU) would buy nothing and would be paid by every API
request. The token's record sits under the user's hash tag (``keys.user_tokens``) and a
global index (``keys.API_TOKENS``) maps the hash to its owner. A cluster cannot write both
in one MULTI, so a token is written record first, index second, and removed in the opposite
order: a look-up trusts the index only when the owner's record holds the same hash.

``Authorization: Bearer <token>`` authenticates on ``/api/`` routes only; pages keep to the
session cookie. A request authenticated by a token skips the CSRF check (a cross-site page
cannot set that header); every other request is checked as before. Tokens are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
import redis.asyncio as aredis
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, TooManyRequestsException
from litestar.middleware.authentication import AuthenticationResult
from litestar.middleware.csrf import CSRFMiddleware
from litestar.openapi.spec import Components, SecurityRequirement, SecurityScheme
from litestar.security.jwt import JWTCookieAuth, JWTCookieAuthenticationMiddleware, Token
from litestar.types import Receive, Scope, Send

from proto import keys, store
from web.views import User

log = logging.getLogger("stormalert.web")

API_PREFIX = "/api/"
TOKEN_PREFIX = "sat_"
TOKEN_RE = re.compile(r"sat_[A-Za-z0-9_-]{43}")
TOKEN_ID_RE = re.compile(r"[0-9a-f]{12}")
NAME_RE = re.compile(r"[\w .@:/()+-]{1,64}")
MAX_TOKENS_PER_USER = 20
# Unknown bearer tokens per client address per minute before the answer becomes 429.
FAILURES_PER_MINUTE = 30
TOKEN_SCHEME = "ApiToken"
SESSION_SCHEME = "SessionCookie"


@dataclass(frozen=True, slots=True)
class ApiToken:
    """The ``auth`` of a request that a token authenticated."""

    id: str
    user: str


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as its owner sees it in the list: never the token itself."""

    id: str
    name: str
    created: int


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _record(raw: str | bytes | None) -> dict[str, Any]:
    try:
        value = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def clean_name(name: str) -> str:
    name = " ".join(str(name).split())
    if not NAME_RE.fullmatch(name):
        raise store.StoreError(
            "token name: 1-64 characters (letters, digits, spaces and . _ - @ : / ( ) +)")
    return name


async def list_tokens(ar: aredis.Redis, user: str) -> list[TokenInfo]:
    raw = cast(dict[str, str], await ar.hgetall(keys.user_tokens(user)))
    tokens = []
    for token_id, value in raw.items():
        record = _record(value)
        tokens.append(TokenInfo(token_id, str(record.get("name", "?")),
                                int(record.get("created") or 0)))
    return sorted(tokens, key=lambda t: (t.created, t.name, t.id))


async def create_token(ar: aredis.Redis, user: str, name: str) -> tuple[str, TokenInfo]:
    """A new token for ``user``: (the token, to show once; its listing)."""
    name = clean_name(name)
    existing = await list_tokens(ar, user)
    if len(existing) >= MAX_TOKENS_PER_USER:
        raise store.StoreError(f"at most {MAX_TOKENS_PER_USER} tokens: revoke one first")
    if any(t.name == name for t in existing):
        raise store.StoreError(f"you already have a token named {name!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    digest, token_id = token_hash(token), secrets.token_hex(6)
    info = TokenInfo(token_id, name, int(time.time()))
    record = {"name": name, "hash": digest, "created": info.created}
    await ar.hset(keys.user_tokens(user), token_id, orjson.dumps(record))
    await ar.hset(keys.API_TOKENS, digest, f"{user}:{token_id}")
    log.info("api token %s (%s) created by %s", token_id, name, user)
    return token, info


async def revoke_token(ar: aredis.Redis, user: str, token_id: str) -> bool:
    """Revoke one of ``user``'s tokens; False when the user has no token with that id."""
    if not TOKEN_ID_RE.fullmatch(token_id):
        return False
    raw = await ar.hget(keys.user_tokens(user), token_id)
    if raw is None:
        return False
    digest = _record(raw).get("hash")
    if isinstance(digest, str) and digest:
        await ar.hdel(keys.API_TOKENS, digest)
    await ar.hdel(keys.user_tokens(user), token_id)
    log.info("api token %s revoked by %s", token_id, user)
    return True


async def find_token(ar: aredis.Redis, token: str) -> ApiToken | None:
    """The token's owner and id, if it is a live token."""
    if not TOKEN_RE.fullmatch(token):
        return None
    digest = token_hash(token)
    owner = await ar.hget(keys.API_TOKENS, digest)
    if not owner:
        return None
    user, _, token_id = str(owner).partition(":")
    stored = _record(await ar.hget(keys.user_tokens(user), token_id)).get("hash")
    if not isinstance(stored, str) or not hmac.compare_digest(stored, digest):
        return None
    return ApiToken(token_id, user)


async def _count_failure(ar: aredis.Redis, client: str) -> None:
    key = keys.token_failures(client)
    async with ar.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, 60, nx=True)
        count, _ = await pipe.execute()
    if int(count) == FAILURES_PER_MINUTE + 1:
        log.warning("more than %d unknown API tokens a minute from %s", FAILURES_PER_MINUTE,
                    client)
    if int(count) > FAILURES_PER_MINUTE:
        raise TooManyRequestsException("too many invalid API tokens: wait a minute")


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header; None for no header or another
    scheme (a proxy's Basic authentication, say, is not ours to judge)."""
    scheme, _, value = (header or "").strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


async def authenticate_bearer(connection: ASGIConnection[Any, Any, Any, Any],
                              token: str) -> AuthenticationResult:
    ar: aredis.Redis = connection.app.state.ar
    found = await find_token(ar, token)
    record = cast(dict[str, str], await ar.hgetall(keys.user(found.user)) if found else {})
    if found is None or not record or store.is_disabled(record):
        await _count_failure(ar, connection.client.host if connection.client else "unknown")
        raise NotAuthorizedException("invalid API token")
    user = User(name=found.user, admin=record.get("admin") == "1")
    return AuthenticationResult(user=user, auth=found)


class SessionOrTokenMiddleware(JWTCookieAuthenticationMiddleware):
    """A bearer token on ``/api/`` routes, else the session cookie (never a JWT from the
    Authorization header: sessions travel only in the HttpOnly cookie)."""

    async def authenticate_request(
            self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        token = bearer_token(connection.headers.get("authorization"))
        if token is not None and connection.scope["path"].startswith(API_PREFIX):
            return await authenticate_bearer(connection, token)
        encoded = connection.cookies.get(self.auth_cookie_key, "").split(" ")[-1]
        if not encoded:
            raise NotAuthorizedException("no session")
        return await self.authenticate_token(encoded_token=encoded, connection=connection)


@dataclass
class SessionOrTokenAuth(JWTCookieAuth[User, Token]):
    """The session cookie auth with API tokens accepted on ``/api/``. OpenAPI names the
    token as the API's security requirement (scripts use it); the cookie is described beside
    it, for the pages' own calls."""

    authentication_middleware_class: type[JWTCookieAuthenticationMiddleware] = field(
        default=SessionOrTokenMiddleware)

    @property
    def openapi_components(self) -> Components:
        return Components(security_schemes={
            TOKEN_SCHEME: SecurityScheme(
                type="http", scheme="bearer",
                description="An API token made on the Settings page (/settings)."),
            SESSION_SCHEME: SecurityScheme(
                type="apiKey", name=self.key, security_scheme_in="cookie",
                description="The browser's session after signing in at /login."),
        })

    @property
    def security_requirement(self) -> SecurityRequirement:
        return {TOKEN_SCHEME: []}


class CSRFUnlessToken(CSRFMiddleware):
    """Litestar's CSRF check, skipped for requests an API token authenticated."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if isinstance(scope.get("auth"), ApiToken):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
