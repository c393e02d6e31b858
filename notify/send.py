"""The edge: a user's channels as stored in Redis, and one blocking send through apprise.

Apprise throttles every plugin instance between sends and has no notion of our retries, so
each send gets a fresh plugin with throttling off (``request_rate_per_sec = 0``, see
PITFALLS) and socket timeouts of our own; pacing and retries live in ``notify.deliver``.
Webhooks do not come here: ``notify.webhook`` sends them over pooled connections.
A channel URL carries secrets: it never appears in a log line, a record or a reason.

Apprise's Telegram, WhatsApp and Twilio plugins read the HTTP answer and drop it, keeping
only a warning line; a 429's ``retry_after`` would be lost. ``_ResponseTap`` stands in for
the ``requests`` module those plugins call and notes each answer's status, ``Retry-After``
header and (for 429s) body for the sending thread, so ``retry_after_s`` can read them.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any
from urllib.parse import unquote

import apprise
import orjson
import requests
from apprise.plugins import base as apprise_base
from apprise.plugins import telegram, twilio, whatsapp

from notify.pacing import Limit
from notify.render import Message, fit
from notify.settings import NotifySettings
from proto import store

log = logging.getLogger(__name__)

REASON_MAX = 300
_URL_SPLIT = re.compile(r"[/:@?&=#,;+\s]+")
_SECRET_MIN = 6


@dataclass(frozen=True, slots=True)
class Channel:
    id: str
    url: str = field(repr=False)
    tag: str

    @property
    def scheme(self) -> str:
        return self.url.partition("://")[0].lower() or "?"

    def label(self) -> str:
        """Safe to log: the scheme and the channel id, nothing from the URL's body."""
        return f"{self.scheme}:{self.id}"


@dataclass(frozen=True, slots=True)
class SendOutcome:
    ok: bool
    error: str = ""
    permanent: bool = False  # retrying cannot help (the URL itself is unusable)
    retry_after_s: float | None = None  # the service asked us to wait this long (a 429)


def parse_channels(raw: dict[str, str]) -> tuple[list[Channel], list[str]]:
    """Channels from the ``keys.user_channels`` hash (id -> JSON {url, tag}); ids that could
    not be read come back second."""
    records, unreadable = store.decode_channels(raw)
    return [Channel(id=c["id"], url=c["url"], tag=c["tag"]) for c in records], unreadable


def select(channels: list[Channel], tags: list[str]) -> list[Channel]:
    wanted = set(tags)
    return [c for c in channels if c.tag in wanted]


def scrub(text: str, url: str) -> str:
    """``text`` with every longer fragment of ``url`` (tokens, passwords, paths, chat ids)
    replaced by ``***``, cut to a readable length."""
    rest = url.partition("://")[2]
    fragments = {f for part in (rest, unquote(rest)) for f in _URL_SPLIT.split(part)
                 if len(f) >= _SECRET_MIN}
    fragments.add(url)
    for fragment in sorted(fragments, key=len, reverse=True):
        text = text.replace(fragment, "***")
    return text if len(text) <= REASON_MAX else text[: REASON_MAX - 1] + "…"


@dataclass(frozen=True, slots=True)
class Answer:
    """What a service answered to one request of a plugin."""
    status: int
    retry_after: str = ""  # the Retry-After header
    body: bytes = b""  # kept for 429s only, where it says how long to wait


class _ThreadWarnings(logging.Handler):
    """Apprise's warnings and HTTP answers, collected per sending thread: a failed send
    learns its own reason.

    Plugins are called directly (``plugin.notify``), not through ``Apprise.notify``: with a
    deadline (apprise's default 60 s service timeout, or ``timeout=``) that runs every send
    in one process-wide pool of min(32, cpus + 4) threads. Measured here (2 cores): 12
    one-second sends took 2.1 s that way, 1.05 s directly; a few slow channels would have
    delayed every other one.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        lines = getattr(self._local, "lines", None)
        if lines is not None:
            lines.append(record.getMessage())

    def answer(self, response: requests.Response) -> None:
        answers = getattr(self._local, "answers", None)
        if answers is not None:
            body = response.content[:4096] if response.status_code == 429 else b""
            answers.append(Answer(response.status_code,
                                  response.headers.get("Retry-After", ""), body))

    @contextmanager
    def collect(self) -> Iterator[tuple[list[str], list[Answer]]]:
        lines: list[str] = []
        answers: list[Answer] = []
        self._local.lines, self._local.answers = lines, answers
        try:
            yield lines, answers
        finally:
            self._local.lines = self._local.answers = None


_WARNINGS = _ThreadWarnings()
_apprise_log = logging.getLogger("apprise")
_apprise_log.addHandler(_WARNINGS)
# Apprise's own lines can name hosts or paths of a channel; we log scrubbed reasons instead.
_apprise_log.propagate = False


class _ResponseTap(ModuleType):
    """The ``requests`` module as the tapped plugins see it: every attribute is the real
    one, except ``post`` and ``request``, which also hand the answer to ``_WARNINGS``."""

    def __init__(self) -> None:
        super().__init__("requests")

    def __getattr__(self, name: str) -> Any:
        return getattr(requests, name)

    @staticmethod
    def post(url: str, *args: Any, **kwargs: Any) -> requests.Response:
        response = requests.post(url, *args, **kwargs)
        _WARNINGS.answer(response)
        return response

    @staticmethod
    def request(method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        response = requests.request(method, url, *args, **kwargs)
        _WARNINGS.answer(response)
        return response


for _module in (telegram, whatsapp, twilio):
    _module.requests = _ResponseTap()  # type: ignore[attr-defined]


def retry_after_s(answers: list[Answer]) -> float | None:
    """The longest wait any 429 (or 503) answer asked for: Telegram's
    ``parameters.retry_after`` in the JSON body, else a ``Retry-After`` header in seconds."""
    waits = [w for w in map(_asked_wait_s, answers) if w is not None]
    return max(waits) if waits else None


def _asked_wait_s(answer: Answer) -> float | None:
    if answer.status not in (429, 503):
        return None
    try:
        return float(orjson.loads(answer.body)["parameters"]["retry_after"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        pass
    try:
        return float(answer.retry_after)
    except ValueError:
        return None  # an HTTP date or nothing: our own backoff applies


# Where each service's API base URL lives on its plugin, and the path apprise appends.
API_URLS: dict[str, tuple[tuple[str, str], ...]] = {
    "tgram": (("notify_url", "/bot"),),
    "whatsapp": (("notify_url", "/{fb_ver}/{phone_id}/messages"),),
    "twilio": (("notify_sms_url", "/2010-04-01/Accounts/{sid}/Messages.json"),
               ("notify_call_url", "/2010-04-01/Accounts/{sid}/Calls.json")),
}


def apply_api_base(plugin: Any, scheme: str, api_base: Mapping[str, str]) -> None:
    """Point this plugin instance (not its class) at ``api_base[scheme]``, if set."""
    base = api_base.get(scheme)
    if not base:
        return
    for attribute, path in API_URLS.get(scheme, ()):
        setattr(plugin, attribute, base.rstrip("/") + path)


class _DeliveredTargets:
    """Targets of a channel (Telegram chats, phone numbers) that accepted a message, kept
    across our tries of it so a retry after a partial failure skips them.

    Apprise's plugins skip the targets in its ``_delivery_tracker`` context variable, which
    its own retrying dispatcher sets and we bypass; we set it to one set per (channel,
    message) for as long as that message is being retried. It is a private name of apprise:
    without it, a retry goes to every target again, as it did before.
    """

    def __init__(self, max_messages: int = 4096) -> None:
        self._max = max_messages
        self._sets: OrderedDict[tuple[str, str, str], set[Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._var = getattr(apprise_base, "_delivery_tracker", None)

    @contextmanager
    def tracking(self, channel: Channel, message: Message) -> Iterator[Callable[[], None]]:
        """Within the block, apprise records and skips delivered targets; call the yielded
        function when the whole message went out (nothing left to retry)."""
        key = (channel.url, message.title, message.body)
        with self._lock:
            delivered: set[Any] = self._sets.pop(key, set())
        done = False

        def finished() -> None:
            nonlocal done
            done = True

        token = self._var.set(delivered) if self._var is not None else None
        try:
            yield finished
        finally:
            if token is not None:
                self._var.reset(token)  # type: ignore[union-attr]
            if delivered and not done:
                with self._lock:
                    self._sets[key] = delivered
                    while len(self._sets) > self._max:
                        self._sets.popitem(last=False)


_TARGETS = _DeliveredTargets()


def warm_up() -> None:
    """Load apprise's plugin registry now (about 0.3 s) rather than on the first alert."""
    apprise.Apprise.instantiate("json://localhost")


# Channels sent the HTML rendering (with a plain-text alternative).
HTML_SCHEMES = frozenset({"mailto", "mailtos"})
# WhatsApp's own message limit, used for WhatsApp over Twilio (Twilio allows 1,600).
WHATSAPP_BODY_MAX = 1024


def limits(plugin: Any, scheme: str) -> tuple[int, int]:
    """Body and title limits of a channel: the plugin's, except that apprise's Twilio plugin
    declares the SMS limit (160) for WhatsApp recipients too, where 1024 applies."""
    body_max, title_max = int(plugin.body_maxlen), int(plugin.title_maxlen)
    if scheme == "twilio" and plugin.targets and all(
            mode == "W" for mode, _number in plugin.targets):
        body_max = WHATSAPP_BODY_MAX
    return body_max, title_max


def send_blocking(channel: Channel, message: Message, timeout_s: float,
                  api_base: Mapping[str, str] | None = None) -> SendOutcome:
    """One attempt to deliver ``message`` on ``channel``. Blocks: run it in a thread."""
    plugin = apprise.Apprise.instantiate(channel.url)
    if plugin is None:
        return SendOutcome(False, f"apprise does not accept this {channel.scheme}:// URL",
                           permanent=True)
    plugin.request_rate_per_sec = 0
    plugin.socket_connect_timeout = timeout_s
    plugin.socket_read_timeout = timeout_s
    apply_api_base(plugin, channel.scheme, api_base or {})
    fitted = fit(message, *limits(plugin, channel.scheme))
    body, body_format = fitted.body, apprise.NotifyFormat.TEXT
    if fitted.html and channel.scheme in HTML_SCHEMES:
        # Apprise mails HTML as multipart/alternative, its plain part converted from it.
        body, body_format = fitted.html, apprise.NotifyFormat.HTML
    with _WARNINGS.collect() as (problems, answers), \
            _TARGETS.tracking(channel, fitted) as finished:
        ok = plugin.notify(body=body, title=fitted.title, body_format=body_format)
        if ok:
            finished()
    if ok:
        return SendOutcome(True)
    reason = "; ".join(dict.fromkeys(problems)) or "apprise reported failure"
    return SendOutcome(False, scrub(reason, channel.url), retry_after_s=retry_after_s(answers))


def _key(*parts: object) -> str:
    """A pacing key; secrets in it (bot tokens) are hashed since keys are kept in memory."""
    return hashlib.blake2b("\0".join(map(str, parts)).encode(), digest_size=12).hexdigest()


def pace_limits(plugin: Any, scheme: str, s: NotifySettings) -> list[Limit]:
    """The pacing limits one send on this plugin must respect, narrowest first."""
    if scheme == "tgram":
        chats = [Limit(_key("tgram chat", plugin.bot_token, chat), s.notify_pace_tgram_chat_per_s)
                 for chat, _topic in plugin.targets]
        bot_rate = s.notify_pace_tgram_bot_per_s
        bot = Limit(_key("tgram bot", plugin.bot_token), bot_rate, max(bot_rate, 1),
                    held_by_429=False)
        return [*chats, bot]
    if scheme == "whatsapp":
        rate = s.notify_pace_whatsapp_number_per_s
        return [Limit(_key("whatsapp", plugin.from_phone_id), rate, max(rate, 1))]
    if scheme == "twilio":
        rate = s.notify_pace_twilio_number_per_s
        return [Limit(_key("twilio", plugin.source), rate, max(rate, 1))]
    return []
