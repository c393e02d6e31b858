"""The pure formatting shared by the page and the live stream."""

from __future__ import annotations

import orjson
import pytest

from proto.events import Alert
from web.alerts import valid_entry_id
from web.live import StreamState
from web.session import safe_next
from web.views import User, alert_view, ist_time, quote_view


@pytest.mark.parametrize(("epoch_ms", "shown"), [
    (0, "05:30:00"),
    (1_700_000_000_000, "03:43:20"),  # 2023-11-14 22:13:20 UTC
    (1_700_000_000_999, "03:43:20"),
])
def test_times_are_shown_in_ist(epoch_ms: int, shown: str) -> None:
    assert ist_time(epoch_ms) == shown


def test_alert_view_shows_price_and_tick_to_alert_latency() -> None:
    alert = Alert(id="r1@1", rule="r1", user="alice", sym="NSE:INFY", kind="cross_above",
                  ltp=1501.5, ts=1_700_000_000_000, rx=1_700_000_000_000_000,
                  at=1_700_000_000_001_234, msg="crossed")
    view = alert_view("1-0", alert)
    assert view["id"] == "1-0" and view["ltp"] == "1,501.50"
    assert view["latency_ms"] == "1.23" and view["time"] == "03:43:20"
    assert view["datetime"] == "2023-11-15T03:43:20.000+05:30"


@pytest.mark.parametrize(("raw", "expected"), [
    ('{"ltp": 1502.25, "ts": 0, "vol": 1200, "pc": 1480.0, "chg_pct": 1.503}',
     {"ltp": "1,502.25", "chg_pct": "+1.50%", "dir": "up", "vol": "1,200"}),
    ('{"ltp": 99.5, "ts": 0, "vol": 0, "pc": 100.0, "chg_pct": -0.5}',
     {"chg_pct": "-0.50%", "dir": "down"}),
    ('{"ltp": 10, "ts": 0, "vol": 5}', {"chg_pct": "", "dir": ""}),
])
def test_quote_view(raw: str, expected: dict[str, str]) -> None:
    view = quote_view("NSE:X", raw)
    assert view is not None
    assert {k: view[k] for k in expected} == expected


@pytest.mark.parametrize("raw", ["not json", "[]", '{"ts": 1}', '{"ltp": "x", "ts": 1}'])
def test_unreadable_quotes_are_skipped(raw: str) -> None:
    assert quote_view("NSE:X", raw) is None


def test_visibility() -> None:
    assert User("alice").can_see("alice")
    assert not User("alice").can_see("bob")
    assert User("root", admin=True).can_see("bob")


@pytest.mark.parametrize(("value", "expected"), [
    ("1700000000000-0", "1700000000000-0"), ("0-0", "0-0"), (" 5-1 ", "5-1"),
    ("$", None), ("", None), (None, None), ("1-", None), ("1-0\r\nx", None), ("+", None),
])
def test_only_stream_ids_are_accepted_as_cursors(value: str | None, expected: str | None) -> None:
    assert valid_entry_id(value) == expected


@pytest.mark.parametrize(("target", "expected"), [
    ("/", "/"), ("/api/alerts?limit=5", "/api/alerts?limit=5"), (None, "/"), ("", "/"),
    ("https://evil.example", "/"), ("//evil.example", "/"), ("/\\evil.example", "/"),
    ("javascript:alert(1)", "/"),
])
def test_only_local_targets_after_login(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def _fields(user: str, msg: str) -> dict[str, str]:
    return Alert(id=f"{user}-{msg}", rule="r", user=user, sym="NSE:INFY", kind="cross_above",
                 ltp=1.0, ts=0, rx=0, at=0, msg=msg).to_fields()


def test_stream_state_sends_own_alerts_and_moves_the_cursor_past_others() -> None:
    state = StreamState(User("alice"), "1-0")
    messages = state.alert_messages([("2-0", _fields("alice", "a")), ("3-0", _fields("bob", "b"))])
    assert [(m.event, m.id) for m in messages] == [("alert", "2-0")]
    assert state.cursor == "3-0" and state.told_cursor == "2-0"
    cursor_only = state.quote_messages({})
    assert [(m.event, m.id, m.data) for m in cursor_only] == [(None, "3-0", None)]
    assert state.quote_messages({}) == []


def test_stream_state_sends_only_changed_quotes() -> None:
    state = StreamState(User("alice"), "0-0")
    infy = '{"ltp": 1.0, "ts": 0, "vol": 1}'
    first = state.quote_messages({"NSE:INFY": infy, "NSE:TCS": infy})
    assert len(first) == 1 and first[0].event == "quotes"
    assert state.quote_messages({"NSE:INFY": infy, "NSE:TCS": infy}) == []
    changed = state.quote_messages({"NSE:INFY": infy, "NSE:TCS": '{"ltp": 2, "ts": 0}'})
    assert [q["sym"] for q in orjson.loads(str(changed[0].data))] == ["NSE:TCS"]
