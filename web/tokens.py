"""API tokens for scripts and bots, and the authentication that accepts them.

A token is 32 random bytes (``sat_`` + 43 URL-safe characters), shown to its owner once and
stored only as its SHA-256: with 256 bits of entropy a fast hash cannot be brute-forced, so
argon2's deliberate cost (tens of ms of CPU) would buy nothing and would be paid by every API
request. Each token's record is a key of its own under the user's hash tag
(``keys.user_token``, listed by ``keys.user_token_ids``) and an index key
(``keys.api_token``) maps the hash to its owner: separate keys, because a token that expires
gets a Redis TTL ``keys.API_TOKEN_KEPT_S`` past its expiry on both (Redis 7.0 has no TTL on a
hash field). A cluster cannot write the record and the index in one MULTI, so a token is
written record first, index second, and removed in the opposite order: a look-up trusts the
index only when the owner's record holds the same hash.

Until it expires (30, 90 or 365 days, or never) a token opens the API; after, it is refused
with the reason "token expired" and stays listed, marked expired, until revoked or removed by
its TTL. The record also keeps when and from which address the token last authenticated a
request: written at most once a minute per token, after the response, and only if the record
is still the one read to authenticate (so a revoked token is not written back); a Redis error
there is logged and the request stands.

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
import redis
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
# The lifetimes offered when a token is made (form value -> days; None: never expires).
LIFETIMES_DAYS: dict[str, int | None] = {"30": 30, "90": 90, "365": 365, "never": None}
DEFAULT_LIFETIME = "90"
DAY_S = 24 * 3600
# A token's last use is written at most this often.
LAST_USE_EVERY_MS = 60_000
EXPIRED = "token expired"
# Compare-and-set of a token's record: written only if it still holds what authentication
# read (a token revoked meanwhile is not written back), keeping the record's TTL.
_RECORD_USE = """if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
end
return false"""


class TokenExpired(NotAuthorizedException):
    """A known token past its expiry: a 401 that says so (an unknown token says nothing)."""


@dataclass(frozen=True, slots=True)
class LastUse:
    """The write that records a token's use: ``updated`` replaces ``stored`` at ``key``."""

    key: str
    stored: str
    updated: str


@dataclass(frozen=True, slots=True)
class ApiToken:
    """The ``auth`` of a request that a token authenticated; ``last_use`` is the write to
    make after the response, when the stored last use is a minute old or more."""

    id: str
    user: str
    last_use: LastUse | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as its owner sees it in the list: never the token itself."""

    id: str
    name: str
    created: int  # epoch s
    expires: int | None = None  # epoch s; None: never
    used_ms: int | None = None
    used_from: str | None = None

    def expired(self, now_s: float) -> bool:
        return self.expires is not None and now_s >= self.expires


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _record(raw: str | bytes | None) -> dict[str, Any]:
    try:
        value = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _info(token_id: str, record: dict[str, Any]) -> TokenInfo:
    used_from = record.get("used_from")
    return TokenInfo(token_id, str(record.get("name", "?")), int(record.get("created") or 0),
                     _int_or_none(record.get("expires")), _int_or_none(record.get("used_ms")),
                     used_from if isinstance(used_from, str) else None)


def clean_name(name: str) -> str:
    name = " ".join(str(name).split())
    if not NAME_RE.fullmatch(name):
        raise store.StoreError(
            "token name: 1-64 characters (letters, digits, spaces and . _ - @ : / ( ) +)")
    return name


def lifetime_days(value: str | None) -> int | None:
    """Days a new token lives (None: never), from the form's choice (empty: the default)."""
    value = (value or DEFAULT_LIFETIME).strip()
    if value not in LIFETIMES_DAYS:
        raise store.StoreError("expires: after 30, 90 or 365 days, or never")
    return LIFETIMES_DAYS[value]


async def _write_token(ar: aredis.Redis, user: str, token_id: str, record: dict[str, Any]
                       ) -> None:
    """Record (and its id in the list) first, then the index, both with the same TTL."""
    expires = _int_or_none(record.get("expires"))
    gone_at = None if expires is None else expires + keys.API_TOKEN_KEPT_S
    async with ar.pipeline(transaction=True) as pipe:  # one slot: the user's hash tag
        pipe.set(keys.user_token(user, token_id), orjson.dumps(record), exat=gone_at, nx=True)
        pipe.sadd(keys.user_token_ids(user), token_id)
        await pipe.execute()
    await ar.set(keys.api_token(record["hash"]), f"{user}:{token_id}", exat=gone_at)


async def _move_old_tokens(ar: aredis.Redis, user: str, old: dict[str, str]) -> None:
    """Move tokens made before expiry existed (one hash per user, one global index) to their
    own keys; they never expire. New keys are written before the old ones are removed."""
    for token_id, raw in old.items():
        record = _record(raw)
        digest = record.get("hash")
        if TOKEN_ID_RE.fullmatch(token_id) and isinstance(digest, str) and digest:
            await _write_token(ar, user, token_id, {**record, "expires": None})
            await ar.hdel(keys.API_TOKENS, digest)
        await ar.hdel(keys.user_tokens(user), token_id)
    log.info("moved %d api token(s) of %s to expiring records", len(old), user)


async def _move_old_tokens_of(ar: aredis.Redis, user: str) -> None:
    """Move the user's tokens made before expiry existed, if any are left."""
    old = cast(dict[str, str], await ar.hgetall(keys.user_tokens(user)))
    if old:
        await _move_old_tokens(ar, user, old)


async def list_tokens(ar: aredis.Redis, user: str) -> list[TokenInfo]:
    """The user's tokens, expired ones included, oldest first."""
    async with ar.pipeline(transaction=False) as pipe:  # one slot: the user's hash tag
        pipe.smembers(keys.user_token_ids(user))
        pipe.hgetall(keys.user_tokens(user))
        ids, old = await pipe.execute()
    if old:
        await _move_old_tokens(ar, user, cast(dict[str, str], old))
        ids = await ar.smembers(keys.user_token_ids(user))
    token_ids = sorted(cast(set[str], ids))
    raws = await ar.mget([keys.user_token(user, t) for t in token_ids]) if token_ids else []
    gone = [t for t, raw in zip(token_ids, raws, strict=True) if raw is None]
    if gone:  # removed by their TTL
        await ar.srem(keys.user_token_ids(user), *gone)
    tokens = [_info(t, _record(raw)) for t, raw in zip(token_ids, raws, strict=True)
              if raw is not None]
    return sorted(tokens, key=lambda t: (t.created, t.name, t.id))


async def create_token(ar: aredis.Redis, user: str, name: str,
                       lifetime: str | None = DEFAULT_LIFETIME) -> tuple[str, TokenInfo]:
    """A new token for ``user`` that expires after ``lifetime`` (a ``LIFETIMES_DAYS`` key):
    (the token, to show once; its listing)."""
    name = clean_name(name)
    days = lifetime_days(lifetime)
    existing = await list_tokens(ar, user)
    if len(existing) >= MAX_TOKENS_PER_USER:
        raise store.StoreError(f"at most {MAX_TOKENS_PER_USER} tokens: revoke one first")
    if any(t.name == name for t in existing):
        raise store.StoreError(f"you already have a token named {name!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    digest, token_id = token_hash(token), secrets.token_hex(6)
    created = int(time.time())
    info = TokenInfo(token_id, name, created, None if days is None else created + days * DAY_S)
    record = {"name": name, "hash": digest, "created": created, "expires": info.expires}
    await _write_token(ar, user, token_id, record)
    log.info("api token %s (%s) created by %s, expires %s", token_id, name, user,
             "never" if days is None else f"in {days} days")
    return token, info


async def revoke_token(ar: aredis.Redis, user: str, token_id: str) -> bool:
    """Revoke one of ``user``'s tokens; False when the user has no token with that id."""
    if not TOKEN_ID_RE.fullmatch(token_id):
        return False
    await _move_old_tokens_of(ar, user)
    raw = await ar.get(keys.user_token(user, token_id))
    if raw is None:
        return False
    digest = _record(raw).get("hash")
    if isinstance(digest, str) and digest:
        await ar.delete(keys.api_token(digest))
    async with ar.pipeline(transaction=True) as pipe:  # one slot: the user's hash tag
        pipe.delete(keys.user_token(user, token_id))
        pipe.srem(keys.user_token_ids(user), token_id)
        await pipe.execute()
    log.info("api token %s revoked by %s", token_id, user)
    return True


async def _owner(ar: aredis.Redis, digest: str) -> str | None:
    """"USER:TOKEN_ID" of a token hash; a token made before expiry existed is moved first."""
    owner = await ar.get(keys.api_token(digest))
    if owner:
        return str(owner)
    old = await ar.hget(keys.API_TOKENS, digest)  # only for tokens unknown under the new key
    if not old:
        return None
    await _move_old_tokens_of(ar, str(old).partition(":")[0])
    return cast(str | None, await ar.get(keys.api_token(digest)))


async def find_token(ar: aredis.Redis, token: str, client: str = "unknown",
                     now_ms: int | None = None) -> tuple[ApiToken, TokenInfo] | None:
    """The token's owner and id, and its listing, if it is a known token (expired or not).
    The ``ApiToken`` carries the last-use write when the stored one is a minute old."""
    if not TOKEN_RE.fullmatch(token):
        return None
    digest = token_hash(token)
    owner = await _owner(ar, digest)
    if not owner:
        return None
    user, _, token_id = owner.partition(":")
    key = keys.user_token(user, token_id)
    raw = cast(str | None, await ar.get(key))
    record = _record(raw)
    stored = record.get("hash")
    if raw is None or not isinstance(stored, str) or not hmac.compare_digest(stored, digest):
        return None
    info = _info(token_id, record)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    last_use = None
    if info.used_ms is None or now_ms - info.used_ms >= LAST_USE_EVERY_MS:
        updated = orjson.dumps({**record, "used_ms": now_ms, "used_from": client}).decode()
        last_use = LastUse(key, raw, updated)
    return ApiToken(token_id, user, last_use), info


async def record_use(ar: aredis.Redis, found: ApiToken) -> None:
    """Write a token's last use (see ``find_token``); a Redis error is logged, not raised:
    the request it authenticated has been answered already."""
    if found.last_use is None:
        return
    use = found.last_use
    try:
        await ar.eval(_RECORD_USE, 1, use.key, use.stored, use.updated)
    except redis.RedisError as exc:
        log.warning("api token %s of %s: last use not recorded: %s", found.id, found.user, exc)


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
    client = connection.client.host if connection.client else "unknown"
    found = await find_token(ar, token, client)
    record = cast(dict[str, str], await ar.hgetall(keys.user(found[0].user)) if found else {})
    if found is None or not record or store.is_disabled(record):
        # A disabled user's token says no more than an unknown one, expired or not.
        await _count_failure(ar, client)
        raise NotAuthorizedException("invalid API token")
    if found[1].expired(time.time()):
        raise TokenExpired(EXPIRED)
    user = User(name=found[0].user, admin=record.get("admin") == "1")
    return AuthenticationResult(user=user, auth=found[0])


class SessionOrTokenMiddleware(JWTCookieAuthenticationMiddleware):
    """A bearer token on ``/api/`` routes, else the session cookie (never a JWT from the
    Authorization header: sessions travel only in the HttpOnly cookie). A token's last use
    is written once the response has been sent, so it never delays the answer."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)
        auth = scope.get("auth")
        if isinstance(auth, ApiToken) and auth.last_use is not None:
            await record_use(scope["app"].state.ar, auth)

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
