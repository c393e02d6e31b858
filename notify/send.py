"""The edge: a user's channels as stored in Redis, and one blocking send through apprise.

Apprise throttles every plugin instance between sends and has no notion of our retries, so
each send gets a fresh plugin with throttling off (``request_rate_per_sec = 0``, see
PITFALLS) and socket timeouts of our own; pacing and retries live in ``notify.deliver``.
A channel URL carries secrets: it never appears in a log line, a record or a reason.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import unquote

import apprise

from notify.render import Message, fit
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


class _ThreadWarnings(logging.Handler):
    """Apprise's warnings, collected per sending thread: a failed send learns its own reason.

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

    @contextmanager
    def collect(self) -> Iterator[list[str]]:
        lines: list[str] = []
        self._local.lines = lines
        try:
            yield lines
        finally:
            self._local.lines = None


_WARNINGS = _ThreadWarnings()
_apprise_log = logging.getLogger("apprise")
_apprise_log.addHandler(_WARNINGS)
# Apprise's own lines can name hosts or paths of a channel; we log scrubbed reasons instead.
_apprise_log.propagate = False


def warm_up() -> None:
    """Load apprise's plugin registry now (about 0.3 s) rather than on the first alert."""
    apprise.Apprise.instantiate("json://localhost")


def send_blocking(channel: Channel, message: Message, timeout_s: float) -> SendOutcome:
    """One attempt to deliver ``message`` on ``channel``. Blocks: run it in a thread."""
    plugin = apprise.Apprise.instantiate(channel.url)
    if plugin is None:
        return SendOutcome(False, f"apprise does not accept this {channel.scheme}:// URL",
                           permanent=True)
    plugin.request_rate_per_sec = 0
    plugin.socket_connect_timeout = timeout_s
    plugin.socket_read_timeout = timeout_s
    fitted = fit(message, int(plugin.body_maxlen), int(plugin.title_maxlen))
    with _WARNINGS.collect() as problems:
        ok = plugin.notify(body=fitted.body, title=fitted.title,
                           body_format=apprise.NotifyFormat.TEXT)
    if ok:
        return SendOutcome(True)
    reason = "; ".join(dict.fromkeys(problems)) or "apprise reported failure"
    return SendOutcome(False, scrub(reason, channel.url))
