"""The admin panel: users and roles, and the system's status. Everything under ``/admin``
is for admins only; anyone else gets a 404, as if it did not exist.

User changes post a form and come back to the list (post/redirect/get) with a fixed message
naming what was done; a refused change shows the list again with the reason.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Annotated, Any

import redis
from litestar import MediaType, Request, Response, Router, get, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotFoundException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import Body, FromPath, QueryParameter
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER, HTTP_400_BAD_REQUEST

from proto import keys, store
from proto.status import collect
from web import brokers
from web.views import User

log = logging.getLogger("stormalert.web")

USERS_PATH = "/admin/users"
DONE = {
    "created": "User {user} created.",
    "admin": "{user} is now an admin.",
    "user": "{user} is now a plain user.",
    "password": "Password of {user} reset: their open sessions have ended.",
    "disabled": "{user} is disabled: they cannot sign in and their sessions have ended.",
    "enabled": "{user} is enabled again.",
}


def admin_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    user = connection.user
    if not isinstance(user, User) or not user.admin:
        raise NotFoundException()


@dataclass
class NewUserForm:
    username: str = ""
    password: str = ""
    admin: bool = False


@dataclass
class RoleForm:
    role: str = ""


@dataclass
class PasswordForm:
    password: str = ""


@dataclass
class DisabledForm:
    disabled: bool = False


Form = Body(media_type=RequestEncodingType.URL_ENCODED)


def user_rows(r: redis.Redis) -> list[dict[str, Any]]:
    names = store.list_users(r)
    with r.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hmget(keys.user(name), ["admin", "disabled", "created"])
        flags = pipe.execute()
    rows = []
    for name, (admin, disabled, created) in zip(names, flags, strict=True):
        rows.append({
            "name": name, "admin": admin == "1", "disabled": disabled == "1",
            "created": time.strftime("%Y-%m-%d", time.gmtime(int(created)))
            if created and created.isdigit() else "",
        })
    return rows


def _users_page(r: redis.Redis, user: User, *, done: str | None = None,
                error: str | None = None, status: int = 200) -> Template:
    return Template("admin_users.html", status_code=status, media_type=MediaType.HTML, context={
        "user": user, "users": user_rows(r), "done": done, "error": error, "tab": "users",
    })


def _done(what: str, name: str) -> Redirect:
    return Redirect(f"{USERS_PATH}?done={what}&name={name}", status_code=HTTP_303_SEE_OTHER)


def _change(request: Request[User, Any, Any], r: redis.Redis, what: str, name: str,
            action: Any) -> Response[Any]:
    """Run one user change; its StoreError is shown on the page, with the list."""
    try:
        action()
    except store.StoreError as exc:
        return _users_page(r, request.user, error=str(exc), status=HTTP_400_BAD_REQUEST)
    log.info("admin %s: user %s %s", request.user.name, name, what)
    return _done(what, name)


@get("/users", sync_to_thread=True)
def users_page(
    request: Request[User, Any, Any],
    r: NamedDependency[redis.Redis],
    done: Annotated[str | None, QueryParameter()] = None,
    name: Annotated[str | None, QueryParameter()] = None,
) -> Template:
    message = None
    if done in DONE and name and store.USER_RE.match(name):
        message = DONE[done].format(user=name)
    return _users_page(r, request.user, done=message)


@post("/users", sync_to_thread=True)  # argon2 hashing is slow on purpose: a worker thread
def create_user(request: Request[User, Any, Any], r: NamedDependency[redis.Redis],
                data: Annotated[NewUserForm, Form]) -> Response[Any]:
    name = data.username.strip().lower()
    return _change(request, r, "created", name,
                   lambda: store.add_user(r, name, data.password, admin=data.admin))


@post("/users/{name:str}/role", sync_to_thread=True)
def set_role(request: Request[User, Any, Any], r: NamedDependency[redis.Redis],
             name: FromPath[str], data: Annotated[RoleForm, Form]) -> Response[Any]:
    if data.role not in ("admin", "user"):
        return _users_page(r, request.user, error=f"unknown role {data.role!r}: admin or user",
                           status=HTTP_400_BAD_REQUEST)
    return _change(request, r, data.role, name,
                   lambda: store.set_admin(r, name, data.role == "admin"))


@post("/users/{name:str}/password", sync_to_thread=True)
def reset_password(request: Request[User, Any, Any], r: NamedDependency[redis.Redis],
                   name: FromPath[str], data: Annotated[PasswordForm, Form]) -> Response[Any]:
    return _change(request, r, "password", name,
                   lambda: store.set_password(r, name, data.password))


@post("/users/{name:str}/disabled", sync_to_thread=True)
def set_disabled(request: Request[User, Any, Any], r: NamedDependency[redis.Redis],
                 name: FromPath[str], data: Annotated[DisabledForm, Form]) -> Response[Any]:
    what = "disabled" if data.disabled else "enabled"
    return _change(request, r, what, name,
                   lambda: store.set_disabled(r, name, data.disabled))


@get("/status", sync_to_thread=True)
def status_page(request: Request[User, Any, Any], r: NamedDependency[redis.Redis]) -> Template:
    return Template("admin_status.html", media_type=MediaType.HTML, context={
        "user": request.user, "tab": "status", **status_view(collect(r)),
    })


@get("/")
async def admin_home() -> Redirect:
    return Redirect(USERS_PATH)


def _rate(beat: dict[str, Any], name: str) -> float:
    value = beat.get("rates", {}).get(name, 0)
    return float(value) if isinstance(value, int | float) else 0.0


def status_view(status: dict[str, Any]) -> dict[str, Any]:
    """What the status page shows, from ``proto.status.collect``."""
    processes = []
    for name, beat in sorted(status["processes"].items()):
        rates = {k: v for k, v in sorted(beat.get("rates", {}).items()) if v}
        processes.append({
            "name": name, "pid": beat.get("pid"), "host": beat.get("host", ""),
            "up_s": beat.get("up_s"), "age_s": beat["age_s"],
            "alive": beat["age_s"] <= keys.HEARTBEAT_TTL_S,
            "rates": ", ".join(f"{k} {v:g}/s" for k, v in rates.items()),
        })
    beats = status["processes"].values()
    ingest_rate = sum(_rate(b, "ticks") for b in beats if str(b.get("process", "")).startswith(
        "ingest"))
    shards = sorted(
        ((b.get("shard"), _rate(b, "ticks")) for b in beats if "shard" in b),
        key=lambda pair: pair[0] if isinstance(pair[0], int) else -1)
    streams = []
    for stream, info in status["streams"].items():
        groups = [{"name": g, **v} for g, v in sorted(info["groups"].items())]
        streams.append({"name": stream, "length": info["length"], "groups": groups})
    feeds = []
    for feed, state in sorted(status["feeds"].items()):
        since = state.get("since")
        try:
            for_s = round(time.time() - float(since)) if since else None
        except ValueError:
            for_s = None
        feeds.append({"name": feed, "state": state.get("state", "?"),
                      "reason": state.get("reason", ""), "for_s": for_s})
    lat = status["latency_ms"]
    return {
        "processes": processes, "feeds": feeds, "streams": streams,
        "ingest_rate": ingest_rate, "shards": shards,
        "dead_letters": status["dead_letters"],
        "latency": {"samples": lat["samples"],
                    "p50": None if lat["p50"] is None else f"{lat['p50']:.2f}",
                    "p99": None if lat["p99"] is None else f"{lat['p99']:.2f}"},
        "rules": status["rules"], "users": status["users"],
    }


router = Router(
    path="/admin", guards=[admin_only], include_in_schema=False,  # HTML pages, not the API
    route_handlers=[admin_home, users_page, create_user, set_role, reset_password,
                    set_disabled, status_page, *brokers.HANDLERS],
)
