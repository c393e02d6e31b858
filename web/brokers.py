"""Broker connections (admin only, mounted under ``/admin`` by ``web.admin``): the API
credentials of Kite Connect and Upstox, sealed at rest (``proto.secrets``), and the daily
logins that give the feeds their access token.

Kite: the button sends the admin to Kite's login with ``redirect_params=state=…``; Kite
comes back to ``/admin/brokers/kite/callback`` with a ``request_token``, which
``KiteConnect.generate_session`` exchanges for the access token. Upstox: the OAuth code flow,
to Upstox's authorization dialog and back to ``/admin/brokers/upstox/callback`` with a
``code`` exchanged by the SDK's ``LoginApi.token``. Each login carries a one-time ``state``
kept in Redis for ten minutes, so a callback nobody here started is refused.

The access token goes where ingest reads it (``keys.feed_token``, JSON with
``access_token``, read by ``ingest.tokens``), expiring when the broker expires it: Kite at
06:00 IST, Upstox at 03:30 IST. Keys are shown masked, secrets and tokens never.
"""

from __future__ import annotations

import logging
import secrets as random_tokens
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as time_of_day
from typing import Annotated, Any
from urllib.parse import urlencode

import orjson
import redis
import requests
import upstox_client
import urllib3
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kite_errors
from litestar import MediaType, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, QueryParameter
from litestar.response import Redirect, Template
from litestar.status_codes import (
    HTTP_303_SEE_OTHER,
    HTTP_400_BAD_REQUEST,
    HTTP_502_BAD_GATEWAY,
)
from upstox_client.rest import ApiException

from proto import keys
from proto.display import IST
from proto.secrets import (
    Credentials,
    SecretBox,
    SecretsError,
    box_from,
    load_credentials,
    mask,
    remove_credentials,
    save_credentials,
)
from web.settings import WebSettings
from web.views import User

log = logging.getLogger("stormalert.web")

BROKERS_PATH = "/admin/brokers"
FEEDS = ("kite", "upstox")
NAMES = {"kite": "Zerodha Kite Connect", "upstox": "Upstox"}
LABELS = {"kite": ("API key", "API secret"), "upstox": ("Client ID (API key)", "Client secret")}
# When the brokers expire an access token (IST, daily).
EXPIRY = {"kite": time_of_day(6, 0), "upstox": time_of_day(3, 30)}
UPSTOX_API_VERSION = "2.0"
BROKER_TIMEOUT_S = 10
DONE = {
    "saved": "{name} credentials saved (sealed).",
    "removed": "{name} credentials removed.",
    "connected": "{name} connected: the feed will use the new access token.",
}
NO_KEY = ("No secrets key is configured: set STORMALERT_SECRETS_KEY (or JWT_SECRET) to store "
          "broker credentials.")


class BrokerError(Exception):
    """A login that could not be completed; the message is safe to show."""

    def __init__(self, message: str, status: int = HTTP_400_BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class CredentialsForm:
    key: str = ""
    secret: str = ""


Form = Body(media_type=RequestEncodingType.URL_ENCODED)


def secret_box(settings: WebSettings) -> SecretBox | None:
    return box_from(
        settings.secrets_key.get_secret_value() if settings.secrets_key else None,
        settings.jwt_secret.get_secret_value() if settings.jwt_secret else None,
    )


def _feed(feed: str) -> str:
    if feed not in FEEDS:
        raise BrokerError(f"unknown broker {feed!r}: kite or upstox")
    return feed


def public_base(request: Request[Any, Any, Any], settings: WebSettings) -> str:
    return (settings.public_url or str(request.base_url)).rstrip("/")


def callback_url(request: Request[Any, Any, Any], settings: WebSettings, feed: str) -> str:
    return f"{public_base(request, settings)}{BROKERS_PATH}/{feed}/callback"


def next_expiry(now_s: float, at: time_of_day) -> float:
    """The next time of day ``at`` in IST after ``now_s`` (epoch s)."""
    now = datetime.fromtimestamp(now_s, IST)
    due = now.replace(hour=at.hour, minute=at.minute, second=0, microsecond=0)
    if due <= now:
        due += timedelta(days=1)
    return due.timestamp()


def store_token(r: redis.Redis, feed: str, access_token: str, user_id: str, by: str,
                api_key: str = "") -> float:
    """Store the access token where ingest reads it; returns when it expires (epoch s).
    ``api_key``: the Kite app the token was issued for, which ingest must connect with (an
    app's identifier, in every login URL: not a secret)."""
    now = time.time()
    expires_at = next_expiry(now, EXPIRY[feed])
    record = {"access_token": access_token, "user_id": user_id, "stored_at": int(now),
              "expires_at": int(expires_at), "by": by}
    if api_key:
        record["api_key"] = api_key
    r.set(keys.feed_token(feed), orjson.dumps(record), exat=int(expires_at))
    return expires_at


def token_view(r: redis.Redis, feed: str) -> dict[str, Any] | None:
    """What the page shows of a stored access token: never the token itself."""
    raw = r.get(keys.feed_token(feed))
    if not raw:
        return None
    try:
        record = orjson.loads(raw)  # type: ignore[arg-type]
    except orjson.JSONDecodeError:
        record = None
    if not isinstance(record, dict):  # a plain token, stored by hand
        return {"user_id": "", "stored": "", "expires": ""}
    return {"user_id": str(record.get("user_id", "")),
            "stored": _ist(record.get("stored_at")), "expires": _ist(record.get("expires_at"))}


def _ist(epoch_s: Any) -> str:
    try:
        return datetime.fromtimestamp(float(epoch_s), IST).strftime("%Y-%m-%d %H:%M IST")
    except (TypeError, ValueError, OverflowError):
        return ""


def broker_views(r: redis.Redis, box: SecretBox | None, request: Request[Any, Any, Any],
                 settings: WebSettings) -> list[dict[str, Any]]:
    views = []
    for feed in FEEDS:
        view: dict[str, Any] = {
            "feed": feed, "name": NAMES[feed], "labels": LABELS[feed],
            "callback": callback_url(request, settings, feed), "stored": False,
            "key_masked": "", "updated": "", "problem": "",
            "token": token_view(r, feed), "state": r.hgetall(keys.feed_state(feed)),
        }
        if box is not None:
            try:
                creds = load_credentials(r, box, feed)
            except SecretsError as exc:
                view["problem"] = str(exc)
            else:
                if creds is not None:
                    view.update(stored=True, key_masked=mask(creds.key),
                                updated=_ist(creds.updated), updated_by=creds.updated_by)
        views.append(view)
    return views


def _page(request: Request[User, Any, Any], r: redis.Redis, settings: WebSettings, *,
          done: str | None = None, error: str | None = None, status: int = 200) -> Template:
    box = secret_box(settings)
    return Template("admin_brokers.html", status_code=status, media_type=MediaType.HTML,
                    context={"user": request.user, "tab": "brokers", "done": done,
                             "error": error, "no_key": NO_KEY if box is None else None,
                             "brokers": broker_views(r, box, request, settings)})


def _done(what: str, feed: str) -> Redirect:
    return Redirect(f"{BROKERS_PATH}?done={what}&feed={feed}", status_code=HTTP_303_SEE_OTHER)


@get("/brokers", sync_to_thread=True)
def brokers_page(
    request: Request[User, Any, Any],
    r: NamedDependency[redis.Redis],
    settings: NamedDependency[WebSettings],
    done: Annotated[str | None, QueryParameter()] = None,
    feed: Annotated[str | None, QueryParameter()] = None,
) -> Template:
    message = DONE[done].format(name=NAMES[feed]) if done in DONE and feed in NAMES else None
    return _page(request, r, settings, done=message)


@post("/brokers/{feed:str}/credentials", sync_to_thread=True)
def save_broker_credentials(
    request: Request[User, Any, Any],
    r: NamedDependency[redis.Redis],
    settings: NamedDependency[WebSettings],
    feed: FromPath[str],
    data: Annotated[CredentialsForm, Form],
) -> Response[Any]:
    try:
        box = secret_box(settings)
        if box is None:
            raise BrokerError(NO_KEY)
        save_credentials(r, box, _feed(feed), data.key, data.secret, request.user.name)
    except (SecretsError, BrokerError) as exc:
        return _page(request, r, settings, error=str(exc), status=HTTP_400_BAD_REQUEST)
    log.info("admin %s: %s credentials saved", request.user.name, feed)
    return _done("saved", feed)


@post("/brokers/{feed:str}/remove", sync_to_thread=True)
def remove_broker_credentials(
    request: Request[User, Any, Any],
    r: NamedDependency[redis.Redis],
    settings: NamedDependency[WebSettings],
    feed: FromPath[str],
) -> Response[Any]:
    try:
        remove_credentials(r, _feed(feed))
    except BrokerError as exc:
        return _page(request, r, settings, error=str(exc), status=exc.status)
    log.info("admin %s: %s credentials removed", request.user.name, feed)
    return _done("removed", feed)


@get("/brokers/{feed:str}/login", sync_to_thread=True)
def start_login(
    request: Request[User, Any, Any],
    r: NamedDependency[redis.Redis],
    settings: NamedDependency[WebSettings],
    feed: FromPath[str],
) -> Response[Any]:
    """Off to the broker's login page, with a one-time state to check on the way back.
    A link, not a form: the pages' CSP (``form-action 'self'``) would stop a form whose
    answer redirects to another site."""
    try:
        creds = _credentials(r, settings, _feed(feed))
    except (SecretsError, BrokerError) as exc:
        return _page(request, r, settings, error=str(exc), status=HTTP_400_BAD_REQUEST)
    state = random_tokens.token_urlsafe(24)
    redirect_uri = callback_url(request, settings, feed)
    r.set(keys.oauth_state(state), orjson.dumps(
        {"feed": feed, "user": request.user.name, "redirect_uri": redirect_uri}),
        ex=keys.OAUTH_STATE_TTL_S)
    if feed == "kite":
        query = {"v": "3", "api_key": creds.key, "redirect_params": urlencode({"state": state})}
        target = f"{settings.kite_login_url}?{urlencode(query)}"
    else:
        query = {"response_type": "code", "client_id": creds.key, "redirect_uri": redirect_uri,
                 "state": state}
        target = f"{settings.upstox_api_url.rstrip('/')}/v2/login/authorization/dialog?" \
                 f"{urlencode(query)}"
    log.info("admin %s: %s login started", request.user.name, feed)
    return Redirect(target, status_code=HTTP_303_SEE_OTHER)


def _credentials(r: redis.Redis, settings: WebSettings, feed: str) -> Credentials:
    box = secret_box(settings)
    if box is None:
        raise BrokerError(NO_KEY)
    creds = load_credentials(r, box, feed)
    if creds is None:
        raise BrokerError(f"no {NAMES[feed]} credentials stored: save the key and secret first")
    return creds


def _take_state(r: redis.Redis, state: str | None, feed: str, user: str) -> dict[str, Any]:
    """The login this callback finishes; each state is good once, for the admin who began it."""
    if not state:
        raise BrokerError(f"the {NAMES[feed]} login came back without its state: start again")
    raw = r.getdel(keys.oauth_state(state))
    record = orjson.loads(raw) if raw else None  # type: ignore[arg-type]
    if not isinstance(record, dict) or record.get("feed") != feed or record.get("user") != user:
        raise BrokerError(f"this {NAMES[feed]} login was not started here, was already used "
                          "or took over ten minutes: start again")
    return record


def _finish(request: Request[User, Any, Any], r: redis.Redis, settings: WebSettings, feed: str,
            exchange: Any) -> Response[Any]:
    """``exchange()`` gives the access token, the broker's user id, and the app's key that
    ingest must connect with ("" when the feed needs none)."""
    try:
        access_token, user_id, api_key = exchange()
    except (SecretsError, BrokerError) as exc:
        status = exc.status if isinstance(exc, BrokerError) else HTTP_400_BAD_REQUEST
        log.warning("admin %s: %s login failed: %s", request.user.name, feed, exc)
        return _page(request, r, settings, error=str(exc), status=status)
    store_token(r, feed, access_token, user_id, request.user.name, api_key)
    log.info("admin %s: %s connected as %s", request.user.name, feed, user_id or "?")
    return _done("connected", feed)


def _scrub(message: str, *secrets: str) -> str:
    for secret in secrets:
        if secret:
            message = message.replace(secret, "•••")
    return message[:300]


@get("/brokers/kite/callback", sync_to_thread=True)
def kite_callback(
    request: Request[User, Any, Any],
    r: NamedDependency[redis.Redis],
    settings: NamedDependency[WebSettings],
    request_token: Annotated[str | None, QueryParameter()] = None,
    status: Annotated[str | None, QueryParameter()] = None,
    oauth_state: Annotated[str | None, QueryParameter(name="state")] = None,
) -> Response[Any]:
    def exchange() -> tuple[str, str, str]:
        _take_state(r, oauth_state, "kite", request.user.name)
        if status != "success" or not request_token:
            raise BrokerError("Kite did not complete the login "
                              f"(status {status or 'missing'}): start again")
        creds = _credentials(r, settings, "kite")
        kite = KiteConnect(creds.key, root=settings.kite_api_url, timeout=BROKER_TIMEOUT_S)
        try:
            session = kite.generate_session(request_token, api_secret=creds.secret)
        except kite_errors.KiteException as exc:
            raise BrokerError(f"Kite refused the login: {_scrub(str(exc), creds.secret)}",
                              HTTP_502_BAD_GATEWAY) from None
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            raise BrokerError(f"no answer from Kite at {settings.kite_api_url}: "
                              f"{type(exc).__name__}", HTTP_502_BAD_GATEWAY) from None
        finally:
            kite.reqsession.close()
        token = session.get("access_token") if isinstance(session, dict) else None
        if not isinstance(token, str) or not token:
            raise BrokerError("Kite's answer held no access token", HTTP_502_BAD_GATEWAY)
        return token, str(session.get("user_id", "")), creds.key

    return _finish(request, r, settings, "kite", exchange)


@get("/brokers/upstox/callback", sync_to_thread=True)
def upstox_callback(
    request: Request[User, Any, Any],
    r: NamedDependency[redis.Redis],
    settings: NamedDependency[WebSettings],
    code: Annotated[str | None, QueryParameter()] = None,
    oauth_state: Annotated[str | None, QueryParameter(name="state")] = None,
) -> Response[Any]:
    def exchange() -> tuple[str, str, str]:
        started = _take_state(r, oauth_state, "upstox", request.user.name)
        if not code:
            raise BrokerError("Upstox came back without an authorization code: start again")
        creds = _credentials(r, settings, "upstox")
        token, user_id = upstox_token(settings.upstox_api_url, code, creds.key, creds.secret,
                                      str(started.get("redirect_uri", "")))
        return token, user_id, ""  # an Upstox token alone opens its feed

    return _finish(request, r, settings, "upstox", exchange)


def upstox_token(host: str, code: str, client_id: str, client_secret: str,
                 redirect_uri: str) -> tuple[str, str]:
    """Exchange an authorization code with the Upstox SDK; (access token, user id)."""
    config = upstox_client.Configuration()
    config.host = host.rstrip("/")
    client = upstox_client.ApiClient(config)
    try:
        answer = upstox_client.LoginApi(client).token(
            UPSTOX_API_VERSION, code=code, client_id=client_id, client_secret=client_secret,
            redirect_uri=redirect_uri, grant_type="authorization_code",
            _request_timeout=BROKER_TIMEOUT_S)
    except ApiException as exc:
        raise BrokerError(f"Upstox refused the login: {_upstox_reason(exc, client_secret)}",
                          HTTP_502_BAD_GATEWAY) from None
    except (urllib3.exceptions.HTTPError, ValueError) as exc:
        raise BrokerError(f"no answer from Upstox at {host}: {type(exc).__name__}",
                          HTTP_502_BAD_GATEWAY) from None
    finally:
        client.pool.close()
        client.pool.join()
    token = getattr(answer, "access_token", None)
    if not isinstance(token, str) or not token:
        raise BrokerError("Upstox's answer held no access token", HTTP_502_BAD_GATEWAY)
    return token, str(getattr(answer, "user_id", "") or "")


def _upstox_reason(exc: ApiException, secret: str) -> str:
    """Upstox's own error message (``errors[0].message``), else the HTTP status."""
    try:
        body = orjson.loads(exc.body or b"")
        error = body["errors"][0]
        reason = f"{error.get('message', '')} ({error.get('errorCode', '')})"
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
        reason = f"HTTP {exc.status} {exc.reason or ''}".strip()
    return _scrub(reason, secret)


HANDLERS = [brokers_page, save_broker_credentials, remove_broker_credentials, start_login,
            kite_callback, upstox_callback]
