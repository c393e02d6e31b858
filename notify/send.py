"""The edge: a user's channels as stored in Redis, and one blocking send through apprise.

Apprise throttles every plugin instance between sends and has no notion of our retries, so
each send gets a fresh plugin with throttling off (``request_rate_per_sec = 0``, see
PITFALLS) and socket timeouts of our own; pacing and retries live in ``notify.deliver``.
A channel URL carries secrets: it never appears in a log line, a record or a reason.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

import apprise
import orjson

from notify.render import Message, fit

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
    channels, bad = [], []
    for cid, value in sorted(raw.items()):
        try:
            record = orjson.loads(value)
            channels.append(Channel(id=cid, url=str(record["url"]),
                                    tag=str(record.get("tag", "default"))))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            bad.append(cid)
    return channels, bad


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
    service = apprise.Apprise()
    service.add(plugin)
    result = service.notify(body=fitted.body, title=fitted.title,
                            body_format=apprise.NotifyFormat.TEXT, timeout=timeout_s)
    if result:
        return SendOutcome(True)
    problems = [e.message for e in result.logs() if e.level in ("WARNING", "ERROR", "CRITICAL")]
    reason = "; ".join(dict.fromkeys(problems)) or f"apprise status {result.status.name}"
    return SendOutcome(False, scrub(reason, channel.url))
