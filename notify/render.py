"""What an alert says: a title, a plain-text body and the same body in HTML (for email), and
fitting them to a channel's limit.

Pure functions only (no clock, no I/O): ``render`` turns an Alert into a Message and ``fit``
trims a Message to the limits a channel's apprise plugin declares.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from proto.display import alert_path, format_ist
from proto.events import Alert

# How each engine kind reads in a title ("NSE:INFY crossed above at 1523.40"); docs/RULES.md.
KIND_LABELS = {
    "cross_above": "crossed above",
    "cross_below": "crossed below",
    "change_pct": "moved vs previous close",
    "trailing_pct": "trailing stop hit",
    "window_pct": "moved within window",
    "above": "reached level",
    "below": "fell to level",
    "channel": "crossed channel bound",
    "volume_spike": "volume spike",
    "sma_cross": "SMA crossover",
    "ema_cross": "EMA crossover",
    "rsi": "RSI crossed threshold",
    "orb": "opening-range breakout",
}
# The kind of the synthetic alert a digest is delivered as (notify.policy.DIGEST_KIND).
DIGEST_KIND = "digest"
# Reference values that count shares, not rupees: shown whole, with thousands separators.
VOLUME_REFS = frozenset({"window_volume", "baseline_avg"})

ELLIPSIS = "…"


@dataclass(frozen=True, slots=True)
class Message:
    title: str
    body: str
    html: str = ""  # the body as an HTML fragment, for channels that show HTML (email)


def format_price(value: float) -> str:
    """Two decimals at least, up to four when the price needs them (currency pairs)."""
    text = f"{value:.4f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


def format_ref(ref: dict[str, float]) -> str:
    return ", ".join(f"{name}={format_ref_value(name, value)}"
                     for name, value in sorted(ref.items()))


def format_ref_value(name: str, value: float) -> str:
    if name in VOLUME_REFS:
        return f"{value:,.0f}"
    return format_price(value)


def one_line(text: str) -> str:
    """``text`` as one printable line: a plug-in's message may hold control characters or
    line breaks, which would break a line-based message and read differently in HTML."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def kind_label(kind: str) -> str:
    """A plug-in kind without a label reads as its name in words (``gap_up``: "gap up")."""
    return KIND_LABELS.get(kind) or kind.replace("_", " ").strip() or "alert"


def tick_to_alert_ms(alert: Alert) -> float | None:
    """Ingest receive to engine emit in ms; None when the timestamps cannot say."""
    if alert.rx <= 0 or alert.at < alert.rx:
        return None
    return (alert.at - alert.rx) / 1000


def alert_link(dashboard_url: str, alert_id: str) -> str:
    return dashboard_url.rstrip("/") + alert_path(alert_id)


def render(alert: Alert, dashboard_url: str = "") -> Message:
    if alert.kind == DIGEST_KIND:
        return render_digest(alert, dashboard_url)
    label = kind_label(alert.kind)
    title = f"{alert.sym} {label} at {format_price(alert.ltp)}"
    lines = [
        f"{alert.sym}: {label} ({alert.kind})",
        f"Price: {format_price(alert.ltp)}",
    ]
    why = one_line(alert.msg)
    if why:
        lines.append(f"Why: {why}")
    if alert.ref:
        lines.append(f"Reference: {format_ref(alert.ref)}")
    lines.append(f"Time: {format_ist(alert.ts)}")
    latency_ms = tick_to_alert_ms(alert)
    if latency_ms is not None:
        lines.append(f"Tick to alert: {latency_ms:.1f} ms")
    lines.append(f"Rule: {alert.rule}")
    link = alert_link(dashboard_url, alert.id) if dashboard_url else ""
    if link:
        lines.append(link)
    return Message(title=title, body="\n".join(lines), html=render_html(lines, link))


def render_digest(alert: Alert, dashboard_url: str = "") -> Message:
    """A digest of folded alerts (notify.policy): its text says it all; there is no one
    alert to link to, so the link is the dashboard's alert list."""
    lines = [*alert.msg.splitlines(), f"Time: {format_ist(alert.ts)}"]
    link = dashboard_url.rstrip("/") + "/" if dashboard_url else ""
    if link:
        lines.append(link)
    return Message(title=f"StormAlert digest: {alert.sym}", body="\n".join(lines),
                   html=render_html(lines, link))


def render_html(lines: list[str], link: str) -> str:
    """The body's lines as HTML: one line each, the link clickable. Written so that apprise's
    HTML-to-text conversion (the email's plain part) gives back the plain body exactly."""
    text = [escape(line) for line in (lines[:-1] if link else lines)]
    out = f"<p>{'<br>'.join(text)}</p>"
    if link:
        out += f'<p><a href="{escape(link)}">{escape(link)}</a></p>'
    return out


def fit(message: Message, body_maxlen: int, title_maxlen: int) -> Message:
    """Trim a message to a channel's limits.

    ``title_maxlen <= 0`` means the channel has no title (Telegram, WhatsApp): the title
    becomes the body's first line and both share ``body_maxlen``. The last line (the
    dashboard link when there is one) is kept whole when the limit allows, the middle is cut.
    A line break counts as two characters: apprise sends ``\r\n`` to some services.
    ``body_maxlen <= 0`` means no limit.
    """
    title, body = message.title, message.body
    if title_maxlen <= 0:
        title, body = "", f"{title}\n{body}" if title else body
    elif len(title) > title_maxlen:
        title = title[: title_maxlen - 1].rstrip() + ELLIPSIS
    if body_maxlen > 0 and wire_len(body) > body_maxlen:
        body = _trim_keeping_last_line(body, body_maxlen)
    # HTML is never cut (a cut tag breaks it): when too long it is left out and the plain
    # body goes alone.
    html = message.html if body_maxlen <= 0 or len(message.html) <= body_maxlen else ""
    return Message(title=title, body=body, html=html)


def wire_len(text: str) -> int:
    """Length with every line break sent as ``\r\n``."""
    return len(text) + text.count("\n")


def _prefix(text: str, budget: int) -> str:
    """The longest prefix of ``text`` whose wire length is within ``budget``."""
    used = 0
    for i, char in enumerate(text):
        used += 2 if char == "\n" else 1
        if used > budget:
            return text[:i]
    return text


def _trim_keeping_last_line(body: str, limit: int) -> str:
    head, sep, last = body.rpartition("\n")
    room = limit - wire_len(last + sep) - len(ELLIPSIS)
    if sep and room >= max(16, limit // 4):
        return _prefix(head, room).rstrip() + ELLIPSIS + sep + last
    return _prefix(body, limit - len(ELLIPSIS)).rstrip() + ELLIPSIS
