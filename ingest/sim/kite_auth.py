"""The simulator's Kite login: ``POST /session/token`` and which access tokens it accepts.

``KiteConnect.generate_session(request_token, api_secret)`` posts ``api_key``,
``request_token`` and ``checksum = sha256(api_key + request_token + api_secret)``; a good
checksum gets Kite's session JSON with a fresh ``access_token``, a bad one Kite's 403
``TokenException``. The ticker and REST accept the tokens issued here, plus the static demo
token (``--access-token``; by default any non-empty token, for the demo). With
``expire_after_s`` every token stops working that long after it was issued (or, for the
static one, after the simulator started): Kite's daily expiry, sped up.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from urllib.parse import parse_qs

from ingest.clock import IST

SIM_USER_ID = "SIM001"
SESSION_EXCHANGES = ("NSE", "BSE", "NFO", "BFO", "CDS", "BCD", "MCX", "NCO")
INVALID_CHECKSUM = "Invalid `checksum`."
INVALID_TOKEN = "Incorrect `api_key` or `access_token`."
EXPIRED_TOKEN = "Token is invalid or has expired."


@dataclass(frozen=True, slots=True)
class RestError:
    status: HTTPStatus
    message: str
    error_type: str


def checksum(api_key: str, request_token: str, api_secret: str) -> str:
    return hashlib.sha256((api_key + request_token + api_secret).encode()).hexdigest()


class KiteAuth:
    def __init__(self, *, api_secret: str = "sim-secret", static_token: str | None = None,
                 expire_after_s: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.api_secret = api_secret
        self.static_token = static_token  # None: any non-empty token is the static one
        self.expire_after_s = expire_after_s
        self._clock = clock
        self._started = clock()
        self._issued: dict[str, float] = {}  # access token -> issue time

    def check(self, api_key: str, access_token: str) -> RestError | None:
        """None when this key/token pair may use the ticker and REST."""
        if not api_key or not access_token:
            return RestError(HTTPStatus.FORBIDDEN, INVALID_TOKEN, "TokenException")
        issued = self._issued.get(access_token)
        if issued is None:
            if self.static_token is not None and not hmac.compare_digest(
                    access_token.encode(), self.static_token.encode()):
                return RestError(HTTPStatus.FORBIDDEN, INVALID_TOKEN, "TokenException")
            issued = self._started
        if self.expire_after_s is not None and self._clock() >= issued + self.expire_after_s:
            return RestError(HTTPStatus.FORBIDDEN, EXPIRED_TOKEN, "TokenException")
        return None

    def expires_in(self, access_token: str) -> float | None:
        """Seconds until this accepted token expires; None when tokens do not expire."""
        if self.expire_after_s is None:
            return None
        issued = self._issued.get(access_token, self._started)
        return max(issued + self.expire_after_s - self._clock(), 0.0)

    def session(self, form_body: bytes) -> tuple[dict[str, object] | None, RestError | None]:
        """Answer ``POST /session/token``: Kite's session data, or the error to send."""
        form = {k: v[0] for k, v in parse_qs(form_body.decode("utf-8", "replace")).items()}
        api_key, request_token = form.get("api_key", ""), form.get("request_token", "")
        if not api_key or not request_token or "checksum" not in form:
            return None, RestError(HTTPStatus.BAD_REQUEST,
                                   "Missing api_key, request_token or checksum",
                                   "InputException")
        expected = checksum(api_key, request_token, self.api_secret)
        if not hmac.compare_digest(form["checksum"].encode(), expected.encode()):
            return None, RestError(HTTPStatus.FORBIDDEN, INVALID_CHECKSUM, "TokenException")
        now = self._clock()
        access_token = secrets.token_urlsafe(24)
        self._issued[access_token] = now
        return session_data(api_key, access_token, now), None


def session_data(api_key: str, access_token: str, now_s: float) -> dict[str, object]:
    """The ``data`` of Kite's session response, with the simulator's user."""
    return {
        "user_type": "individual", "email": "sim@example.invalid", "user_name": "Sim User",
        "user_shortname": "Sim", "broker": "ZERODHA", "exchanges": list(SESSION_EXCHANGES),
        "products": ["CNC", "NRML", "MIS", "BO", "CO"],
        "order_types": ["MARKET", "LIMIT", "SL", "SL-M"], "avatar_url": None,
        "user_id": SIM_USER_ID, "api_key": api_key, "access_token": access_token,
        "public_token": secrets.token_hex(16), "refresh_token": "", "enctoken": "",
        "login_time": datetime.fromtimestamp(now_s, IST).strftime("%Y-%m-%d %H:%M:%S"),
        "meta": {"demat_consent": "physical"},
    }
