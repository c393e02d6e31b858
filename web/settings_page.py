"""The Settings page (notification channels, quiet hours and storm limit, password, API
tokens) and its JSON twin for scripts (``/api/channels``, ``/api/prefs``).

Channel URLs carry secrets (a bot token, a password), so once stored a channel is shown only
as ``scheme:id`` (``proto.store.redact``), and a refused URL is not put back into the form.
The test-message button is the one of ``web.testmsg``. Store calls that may block (loading
apprise's plugins, argon2) run in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, cast

import redis
import redis.asyncio as aredis
from litestar import MediaType, Request, Response, delete, get, post, put
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotFoundException
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.params import Body, FromPath, JSONBody, QueryParameter
from litestar.response import Redirect, Template
from litestar.status_codes import (
    HTTP_201_CREATED,
    HTTP_204_NO_CONTENT,
    HTTP_303_SEE_OTHER,
    HTTP_422_UNPROCESSABLE_ENTITY,
)

from proto import keys, store
from proto.display import IST
from web import tokens
from web.session import Sessions
from web.views import User

log = logging.getLogger("stormalert.web")

Req = Request[User, Any, Any]
TAG_RE = re.compile(r"[A-Za-z0-9_.-]{1,32}")
DONE = {
    "channel": "Channel added.",
    "channel-removed": "Channel removed.",
    "prefs": "Notification limits saved.",
    "password": "Password changed. Your other sessions have been signed out.",
    "token-revoked": "Token revoked.",
}
Form = Body(media_type=RequestEncodingType.URL_ENCODED)
# Password changes per client address per minute: the current password is checked each time,
# so a borrowed session must not become a way to guess it quickly.
PASSWORD_CHANGES_PER_MINUTE = 5


@dataclass
class ChannelForm:
    url: str = ""
    tag: str = "default"


@dataclass
class PrefsForm:
    max_per_minute: str = ""
    quiet: str = ""


@dataclass
class PasswordForm:
    current: str = ""
    new: str = ""
    confirm: str = ""


@dataclass
class TokenForm:
    name: str = ""
    expires: str = tokens.DEFAULT_LIFETIME


def _is_password_change(request: Request[Any, Any, Any]) -> bool:
    return request.method == "POST" and request.url.path == "/settings/password"


PASSWORD_CHANGES = "password_changes"  # the rate limit's store (a RedisStore: web.app)


def password_rate_limit() -> RateLimitConfig:
    """Counts password-change posts only, in a store of their own (see login_rate_limit)."""
    return RateLimitConfig(rate_limit=("minute", PASSWORD_CHANGES_PER_MINUTE),
                           store=PASSWORD_CHANGES, check_throttle_handler=_is_password_change)


def clean_tag(tag: str) -> str:
    tag = tag.strip() or "default"
    if not TAG_RE.fullmatch(tag):
        raise store.StoreError("tag: 1-32 letters, digits, '_', '.' or '-'")
    return tag


def channel_view(channel: dict[str, str]) -> dict[str, str]:
    return {"id": channel["id"], "channel": store.redact(channel["url"]), "tag": channel["tag"]}


async def channel_views(ar: aredis.Redis, name: str) -> list[dict[str, str]]:
    raw = cast(dict[str, str], await ar.hgetall(keys.user_channels(name)))
    return [channel_view(c) for c in store.decode_channels(raw)[0]]


async def prefs_of(ar: aredis.Redis, name: str) -> store.NotifyPrefs:
    raw = cast(dict[str, str], await ar.hgetall(keys.user_prefs(name)))
    return store.decode_prefs(raw)[0]


async def render(request: Req, ar: aredis.Redis, *, errors: dict[str, str] | None = None,
                 form: dict[str, str] | None = None, new_token: str | None = None,
                 new_token_name: str = "", done: str | None = None) -> Template:
    """The page; with ``errors`` (field -> message) it answers 422 and keeps what was typed
    in the fields named by ``form`` (never a channel URL or a password)."""
    name, now_s = request.user.name, time.time()
    prefs = await prefs_of(ar, name)
    values = {"max_per_minute": "" if prefs.max_per_minute is None else str(prefs.max_per_minute),
              "quiet": prefs.quiet_text(), "tag": "default", "token_name": "",
              "token_expires": tokens.DEFAULT_LIFETIME}
    values.update(form or {})
    return Template("settings.html", media_type=MediaType.HTML,
                    status_code=HTTP_422_UNPROCESSABLE_ENTITY if errors else 200, context={
                        "user": request.user,
                        "channels": await channel_views(ar, name),
                        "tokens": [token_view(t, now_s)
                                   for t in await tokens.list_tokens(ar, name)],
                        "lifetimes": list(tokens.LIFETIMES_DAYS),
                        "kept_days": keys.API_TOKEN_KEPT_S // tokens.DAY_S,
                        "errors": errors or {},
                        "values": values,
                        "new_token": new_token,
                        "new_token_name": new_token_name,
                        "done": DONE.get(done or ""),
                    })


def created_text(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).astimezone(IST).strftime("%d %b %Y %H:%M IST")


def token_view(token: tokens.TokenInfo, now_s: float) -> dict[str, Any]:
    """A token's row: its times in IST; ``expires`` is "never" or "expired" when so."""
    expired = token.expired(now_s)
    return {"id": token.id, "name": token.name, "created": created_text(token.created),
            "expired": expired,
            "expires": "never" if token.expires is None else "expired" if expired
            else created_text(token.expires),
            "expired_at": created_text(token.expires) if expired and token.expires else "",
            "last_used": None if token.used_ms is None else created_text(token.used_ms / 1000),
            "last_used_from": token.used_from or ""}


def back(done: str) -> Redirect:
    return Redirect(f"/settings?done={done}", status_code=HTTP_303_SEE_OTHER)


# Pages --------------------------------------------------------------------------------


@get("/settings")
async def settings_page(request: Req, ar: NamedDependency[aredis.Redis],
                        done: Annotated[str | None, QueryParameter()] = None) -> Template:
    return await render(request, ar, done=done)


async def _add_channel(r: redis.Redis, name: str, url: str, tag: str) -> str:
    tag = clean_tag(tag)
    return await asyncio.to_thread(store.add_channel, r, name, url.strip(), tag)


@post("/settings/channels")
async def add_channel(request: Req, data: Annotated[ChannelForm, Form],
                      r: NamedDependency[redis.Redis],
                      ar: NamedDependency[aredis.Redis]) -> Response[Any]:
    try:
        cid = await _add_channel(r, request.user.name, data.url, data.tag)
    except store.StoreError as exc:
        return await render(request, ar, errors={"channel": str(exc)}, form={"tag": data.tag})
    log.info("channel %s added by %s", cid, request.user.name)
    return back("channel")


@post("/settings/channels/{channel_id:str}/delete")
async def remove_channel(request: Req, channel_id: FromPath[str],
                         r: NamedDependency[redis.Redis]) -> Redirect:
    if not await asyncio.to_thread(store.remove_channel, r, request.user.name, channel_id):
        raise NotFoundException()
    log.info("channel %s removed by %s", channel_id, request.user.name)
    return back("channel-removed")


def _save_prefs(r: redis.Redis, name: str, max_per_minute: str | int | None,
                quiet: str | None) -> dict[str, str]:
    """Validate both values, then write them (an empty value: back to the default).
    Returns the problems by field; nothing is written when there is one."""
    errors = {}
    if max_per_minute not in (None, ""):
        try:
            store.parse_max_per_minute(max_per_minute)  # type: ignore[arg-type]
        except store.StoreError as exc:
            errors["max_per_minute"] = str(exc)
    if quiet not in (None, ""):
        try:
            store.parse_quiet(str(quiet))
        except store.StoreError as exc:
            errors["quiet"] = str(exc)
    if errors:
        return errors
    cleared = tuple(f for f, v in (("max_per_minute", max_per_minute), ("quiet", quiet))
                    if v in (None, ""))
    if cleared:
        store.clear_prefs(r, name, cleared)
    store.set_prefs(r, name,
                    max_per_minute=None if max_per_minute in (None, "") else max_per_minute,
                    quiet=None if quiet in (None, "") else str(quiet))
    return {}


@post("/settings/prefs")
async def save_prefs(request: Req, data: Annotated[PrefsForm, Form],
                     r: NamedDependency[redis.Redis],
                     ar: NamedDependency[aredis.Redis]) -> Response[Any]:
    values = {"max_per_minute": data.max_per_minute.strip(), "quiet": data.quiet.strip()}
    errors = await asyncio.to_thread(_save_prefs, r, request.user.name,
                                     values["max_per_minute"], values["quiet"])
    if errors:
        return await render(request, ar, errors=errors, form=values)
    return back("prefs")


def _change_password(r: redis.Redis, name: str, data: PasswordForm) -> str | None:
    """None when changed, else why not (argon2 twice: run in a worker thread)."""
    if data.new != data.confirm:
        return "The new password and its confirmation differ."
    if store.check_password(r, name, data.current) is None:
        return "The current password is not right."
    try:
        store.set_password(r, name, data.new)
    except store.StoreError as exc:
        return str(exc).capitalize() + "."
    return None


@post("/settings/password")
async def change_password(request: Req, data: Annotated[PasswordForm, Form],
                          r: NamedDependency[redis.Redis], ar: NamedDependency[aredis.Redis],
                          sessions: NamedDependency[Sessions]) -> Response[Any]:
    problem = await asyncio.to_thread(_change_password, r, request.user.name, data)
    if problem:
        return await render(request, ar, errors={"password": problem})
    log.info("password changed by %s", request.user.name)
    # The change ended every session from before it; this one goes on with a new cookie.
    return sessions.sign_in(request.user.name, "/settings?done=password")


@post("/settings/tokens")
async def create_token(request: Req, data: Annotated[TokenForm, Form],
                       ar: NamedDependency[aredis.Redis]) -> Template:
    try:
        token, info = await tokens.create_token(ar, request.user.name, data.name,
                                                data.expires)
    except store.StoreError as exc:
        return await render(request, ar, errors={"token": str(exc)},
                            form={"token_name": data.name, "token_expires": data.expires})
    # Shown in this answer only (never stored, nor put in a URL); the page is not cached.
    return await render(request, ar, new_token=token, new_token_name=info.name)


@post("/settings/tokens/{token_id:str}/delete")
async def revoke_token(request: Req, token_id: FromPath[str],
                       ar: NamedDependency[aredis.Redis]) -> Redirect:
    if not await tokens.revoke_token(ar, request.user.name, token_id):
        raise NotFoundException()
    return back("token-revoked")


# JSON API -----------------------------------------------------------------------------


@dataclass
class ChannelIn:
    url: str
    tag: str = "default"


@dataclass
class PrefsIn:
    """``null`` (or leaving a field out) puts it back to the notifier's default."""

    max_per_minute: int | None = None
    quiet: str | None = None


def prefs_json(prefs: store.NotifyPrefs) -> dict[str, Any]:
    return {"max_per_minute": prefs.max_per_minute, "quiet": prefs.quiet_text() or None}


@get("/api/channels")
async def api_channels(request: Req, ar: NamedDependency[aredis.Redis]) -> dict[str, Any]:
    """The caller's channels, each as ``scheme:id`` (the URL itself is never sent back)."""
    return {"channels": await channel_views(ar, request.user.name)}


@post("/api/channels", status_code=HTTP_201_CREATED)
async def api_add_channel(request: Req, data: JSONBody[ChannelIn],
                          r: NamedDependency[redis.Redis]) -> dict[str, str]:
    """Add an apprise URL (tgram://, mailto://, json://...) under a tag."""
    cid = await _add_channel(r, request.user.name, data.url, data.tag)
    log.info("channel %s added by %s", cid, request.user.name)
    return {"id": cid, "channel": store.redact(data.url.strip()), "tag": clean_tag(data.tag)}


@delete("/api/channels/{channel_id:str}", status_code=HTTP_204_NO_CONTENT)
async def api_remove_channel(request: Req, channel_id: FromPath[str],
                             r: NamedDependency[redis.Redis]) -> None:
    if not await asyncio.to_thread(store.remove_channel, r, request.user.name, channel_id):
        raise NotFoundException(f"no channel {channel_id!r}")
    log.info("channel %s removed by %s", channel_id, request.user.name)


@get("/api/prefs")
async def api_prefs(request: Req, ar: NamedDependency[aredis.Redis]) -> dict[str, Any]:
    return prefs_json(await prefs_of(ar, request.user.name))


@put("/api/prefs")
async def api_set_prefs(request: Req, data: JSONBody[PrefsIn], r: NamedDependency[redis.Redis],
                        ar: NamedDependency[aredis.Redis]) -> dict[str, Any]:
    """Quiet hours (``HH:MM-HH:MM`` IST) and the storm limit (alerts a minute before they are
    folded into a digest; 0: never)."""
    errors = await asyncio.to_thread(_save_prefs, r, request.user.name, data.max_per_minute,
                                     data.quiet)
    if errors:
        raise store.StoreError("; ".join(errors.values()))
    return prefs_json(await prefs_of(ar, request.user.name))


ROUTES = [settings_page, add_channel, remove_channel, save_prefs, change_password, create_token,
          revoke_token, api_channels, api_add_channel, api_remove_channel, api_prefs,
          api_set_prefs]
