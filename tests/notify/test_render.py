"""Rendering is pure: an Alert in, a title and a plain-text body out, fitted to a channel."""

from __future__ import annotations

import apprise
import pytest
from apprise import NotifyFormat
from apprise.conversion import convert_between
from hypothesis import given
from hypothesis import strategies as st

from notify import policy
from notify.render import (
    DIGEST_KIND,
    ELLIPSIS,
    KIND_LABELS,
    Message,
    fit,
    format_price,
    render,
    wire_len,
)
from proto.display import format_ist
from proto.events import Alert

# 2024-11-22 04:15:03.250 UTC is 09:45:03.250 in India (UTC+05:30).
TS_MS = 1_732_248_903_250


def alert(**over: object) -> Alert:
    fields: dict[str, object] = dict(
        id="r7:1732248903250-0:0", rule="r7", user="asha", sym="NSE:INFY",
        kind="cross_above", ltp=1523.4, ts=TS_MS, rx=1_732_248_903_251_000,
        at=1_732_248_903_252_345, msg="crossed above 1520", ref={"level": 1520.0, "prev": 1519.5})
    fields.update(over)
    return Alert(**fields)  # type: ignore[arg-type]


def test_render_says_what_why_when_and_how_fast() -> None:
    m = render(alert(), "https://dash.example/")
    assert m.title == "NSE:INFY crossed above at 1523.40"
    assert m.body.splitlines() == [
        "NSE:INFY: crossed above (cross_above)",
        "Price: 1523.40",
        "Why: crossed above 1520",
        "Reference: level=1520.00, prev=1519.50",
        "Time: 22 Nov 2024 09:45:03.250 IST",
        "Tick to alert: 1.3 ms",
        "Rule: r7",
        "https://dash.example/alerts/r7:1732248903250-0:0",
    ]


@pytest.mark.parametrize(("epoch_ms", "text"), [
    (0, "01 Jan 1970 05:30:00.000 IST"),
    (TS_MS, "22 Nov 2024 09:45:03.250 IST"),
    # 18:30 UTC is already the next day in India.
    (1_735_669_800_000, "01 Jan 2025 00:00:00.000 IST"),
])
def test_time_is_ist(epoch_ms: int, text: str) -> None:
    assert format_ist(epoch_ms) == text


@pytest.mark.parametrize(("value", "text"), [
    (1523.4, "1523.40"), (100.0, "100.00"), (83.1234, "83.1234"), (0.05, "0.05"),
    (24350.155, "24350.155"),
])
def test_price_format(value: float, text: str) -> None:
    assert format_price(value) == text


def test_no_link_without_dashboard_and_no_latency_without_receive_time() -> None:
    m = render(alert(rx=0, msg="", ref={}), "")
    assert "alerts/" not in m.body
    assert "Tick to alert" not in m.body
    assert "Why:" not in m.body
    assert "Reference:" not in m.body


ENGINE_KINDS = ("cross_above", "cross_below", "change_pct", "trailing_pct", "window_pct",
                "above", "below", "channel", "volume_spike", "sma_cross", "ema_cross", "rsi",
                "orb")


def test_every_engine_kind_has_a_label() -> None:
    assert set(KIND_LABELS) == set(ENGINE_KINDS)
    for kind in ENGINE_KINDS:
        m = render(alert(kind=kind))
        assert m.title == f"NSE:INFY {KIND_LABELS[kind]} at 1523.40"
        assert m.body.splitlines()[0] == f"NSE:INFY: {KIND_LABELS[kind]} ({kind})"


@pytest.mark.parametrize(("kind", "label"), [
    ("gap_up", "gap up"), ("rsi_cross", "rsi cross"), ("vwap", "vwap"), ("_", "alert"),
])
def test_a_plug_in_kind_reads_as_its_name_in_words(kind: str, label: str) -> None:
    m = render(alert(kind=kind))
    assert m.title == f"NSE:INFY {label} at 1523.40"
    assert f"({kind})" in m.body


def test_volumes_are_whole_numbers() -> None:
    m = render(alert(kind="volume_spike", ref={"window_volume": 1_250_000.0,
                                               "baseline_avg": 83_333.33}))
    assert "Reference: baseline_avg=83,333, window_volume=1,250,000" in m.body


def test_html_is_the_body_escaped_with_the_link_clickable() -> None:
    m = render(alert(msg="<script>alert(1)</script> & more"), "https://dash.example")
    assert m.html.startswith("<p>NSE:INFY: crossed above (cross_above)<br>Price: 1523.40<br>")
    assert "Why: &lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in m.html
    link = "https://dash.example/alerts/r7:1732248903250-0:0"
    assert m.html.endswith(f'<p><a href="{link}">{link}</a></p>')
    assert "<a" not in render(alert()).html  # no dashboard, no link


def test_apprise_turns_the_html_back_into_the_plain_body() -> None:
    """The email's plain part is apprise's conversion of our HTML: it must read as ours."""
    for over in ({}, {"msg": "a < b & c > d \"q\""}, {"msg": "", "ref": {}, "rx": 0}):
        m = render(alert(**over), "https://dash.example")
        assert convert_between(NotifyFormat.HTML, NotifyFormat.TEXT, m.html) == m.body


def test_html_too_long_for_a_channel_is_left_out() -> None:
    m = render(alert(), "https://dash.example")
    assert fit(m, 32768, 250).html == m.html
    assert fit(m, len(m.html) - 1, 250).html == ""


@pytest.mark.parametrize(("url", "limit"), [
    ("tgram://123456789:AAHabcdefghijklmnopqrstuvwxyz012345/12345", 4096),
    ("whatsapp://token1234567@1234567890/+919876543210", 1024),
])
def test_limits_come_from_the_apprise_plugin(url: str, limit: int) -> None:
    plugin = apprise.Apprise.instantiate(url)
    assert plugin is not None
    assert (plugin.body_maxlen, plugin.title_maxlen) == (limit, 0)
    long = render(alert(msg="x" * 10_000), "https://dash.example")
    fitted = fit(long, plugin.body_maxlen, plugin.title_maxlen)
    assert fitted.title == ""
    assert limit - 2 <= wire_len(fitted.body) <= limit
    assert fitted.body.startswith(long.title + "\n")
    assert fitted.body.endswith(f"{ELLIPSIS}\nhttps://dash.example/alerts/r7:1732248903250-0:0")


def test_generous_limits_leave_a_message_alone() -> None:
    m = render(alert(), "https://dash.example")
    assert fit(m, 32768, 250) == m


def test_long_title_is_cut() -> None:
    fitted = fit(Message("t" * 300, "body"), 32768, 250)
    assert len(fitted.title) == 250
    assert fitted.title.endswith(ELLIPSIS)


@given(title=st.text(max_size=300), body=st.text(max_size=3000),
       body_max=st.integers(min_value=40, max_value=5000),
       title_max=st.integers(min_value=0, max_value=300))
def test_fit_never_exceeds_limits(title: str, body: str, body_max: int, title_max: int) -> None:
    fitted = fit(Message(title, body), body_max, title_max)
    assert wire_len(fitted.body) <= body_max
    if title_max > 0:
        assert len(fitted.title) <= max(title_max, 0)
    else:
        assert fitted.title == ""


@given(st.text(min_size=1, max_size=200).filter(lambda s: "\n" not in s))
def test_fit_keeps_the_link_line(link: str) -> None:
    body = "line\n" * 500 + link
    fitted = fit(Message("T", body), 1024, 0)
    assert wire_len(fitted.body) <= 1024
    assert fitted.body.endswith("\n" + link)


def test_a_digest_reads_as_a_digest() -> None:
    digest = alert(id="digest:asha:m:28870815", rule="digest", kind="digest",
                   sym="12 alerts (NSE:INFY +2)", rx=0,
                   msg="12 alerts beyond your limit per minute.\nBy symbol: NSE:INFY 10")
    m = render(digest, "https://dash.example")
    assert m.title == "StormAlert digest: 12 alerts (NSE:INFY +2)"
    assert m.body.splitlines() == [
        "12 alerts beyond your limit per minute.", "By symbol: NSE:INFY 10",
        "Time: 22 Nov 2024 09:45:03.250 IST", "https://dash.example/"]
    assert policy.DIGEST_KIND == DIGEST_KIND


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_any_message_reads_the_same_in_the_emails_plain_part(msg: str) -> None:
    """Whatever a plug-in puts in its message (markup, control characters, line breaks),
    the email's plain part (apprise's conversion of our HTML) is our plain body."""
    m = render(alert(msg=msg), "https://dash.example")
    assert convert_between(NotifyFormat.HTML, NotifyFormat.TEXT, m.html) == m.body
    lines = m.body.splitlines()
    # Header, price, reference, time, latency, rule, link: and "Why" unless msg was blank.
    assert len(lines) == (8 if msg.strip() and lines[2].startswith("Why: ") else 7)


def test_a_message_is_one_printable_line() -> None:
    m = render(alert(msg="line one\nline\ttwo\x1b[31m  red\x00"))
    assert "Why: line one line two [31m red" in m.body.splitlines()
