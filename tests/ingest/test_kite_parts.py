"""The pure parts behind the Kite feed's production features, from tables and fixtures."""

from __future__ import annotations

import asyncio
from datetime import datetime, time
from pathlib import Path

import orjson
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from ingest import kite
from ingest.clock import IST, next_daily
from ingest.feed_status import FeedStatus
from ingest.kite_plan import change_messages, mode_for, subscribe_messages
from ingest.kite_text import KiteTextError, describe_order, parse_text
from ingest.sim import kite_wire as wire
from ingest.sim.connection import broken_copy, content_length, without_content_length
from ingest.sim.hours import MarketHours, parse_window
from ingest.sim.kite_auth import KiteAuth, checksum
from ingest.sim.replay import ReplayFileError, ReplayRow, read_rows, steps
from ingest.tokens import AccessTokens, read_stored, read_stored_record
from proto import bus, keys
from proto.runtime import Stats


def ist(text: str) -> float:
    return datetime.fromisoformat(text + "+05:30").timestamp()


@pytest.mark.parametrize(("now", "at", "expected"), [
    ("2024-01-05T05:59:59", time(6), "2024-01-05T06:00:00"),
    ("2024-01-05T06:00:00", time(6), "2024-01-06T06:00:00"),
    ("2024-01-05T23:30:00", time(8), "2024-01-06T08:00:00"),
    ("2024-12-31T09:00:00", time(8, 30), "2025-01-01T08:30:00"),
])
def test_next_daily(now: str, at: time, expected: str) -> None:
    assert next_daily(ist(now), at, IST) == ist(expected)


def test_modes_symbol_wins_over_exchange() -> None:
    modes = {"NSE:INFY": "ltp", "NSE": "quote"}
    assert mode_for("NSE:INFY", modes, "full") == "ltp"
    assert mode_for("NSE:TCS", modes, "full") == "quote"
    assert mode_for("MCX:GOLD", modes, "full") == "full"


def test_subscribe_then_mode_per_group_and_live_changes() -> None:
    messages = [orjson.loads(m) for m in subscribe_messages({1: "full", 2: "ltp", 3: "full"})]
    assert messages == [{"a": "subscribe", "v": [1, 3]}, {"a": "mode", "v": ["full", [1, 3]]},
                        {"a": "subscribe", "v": [2]}, {"a": "mode", "v": ["ltp", [2]]}]
    changes = [orjson.loads(m) for m in change_messages({1: "full", 2: "ltp"},
                                                        {2: "quote", 4: "quote"})]
    assert changes == [{"a": "unsubscribe", "v": [1]}, {"a": "subscribe", "v": [2, 4]},
                       {"a": "mode", "v": ["quote", [2, 4]]}]


def test_order_update_summary_keeps_ids_out(fixtures_dir: Path) -> None:
    postback = (fixtures_dir / "kite" / "kiteconnect-mocks" / "postback.json").read_bytes()
    message = parse_text(orjson.dumps({"type": "order", "data": orjson.loads(postback)}))
    assert message.kind == "order"
    text = describe_order(message.data)
    assert "220303000308932" in text and "COMPLETE" in text and "NSE:SBIN" in text
    for secret in ("2011845d9348", "XXXXXX", "AB1234", "1234"):
        assert secret not in text.replace("220303000308932", "")


@pytest.mark.parametrize("text", ["", "nope", "[1]", '{"data": 1}', '{"type": 3}'])
def test_malformed_text_messages(text: str) -> None:
    with pytest.raises(KiteTextError):
        parse_text(text)


def test_text_kinds() -> None:
    assert parse_text('{"type": "error", "data": "bad"}').kind == "error"
    assert parse_text('{"type": "message", "data": "hi"}').kind == "message"
    assert parse_text('{"type": "instruments_meta", "data": {}}').kind == "other"


@pytest.mark.parametrize(("when", "exchange", "phase"), [
    ("2024-01-05T08:59:59", "NSE", None),
    ("2024-01-05T09:00:00", "NSE", "pre_open"),
    ("2024-01-05T09:08:00", "NSE", None),
    ("2024-01-05T09:15:00", "BSE", "normal"),
    ("2024-01-05T15:29:59", "NSE", "normal"),
    ("2024-01-05T15:30:00", "NSE", None),
    ("2024-01-05T09:05:00", "NFO", None),
    ("2024-01-05T16:30:00", "CDS", "normal"),
    ("2024-01-05T21:00:00", "MCX", "normal"),
    ("2024-01-06T11:00:00", "NSE", None),  # Saturday
])
def test_nse_hours(when: str, exchange: str, phase: str | None) -> None:
    assert MarketHours("nse").phase(exchange, ist(when)) == phase
    assert MarketHours("always").phase(exchange, ist(when)) == "normal"


def test_volatility_is_u_shaped_over_the_session() -> None:
    hours = MarketHours("nse")
    open_, midday, close = (hours.volatility(ist(f"2024-01-05T{t}"))
                            for t in ("09:15:00", "12:22:30", "15:29:00"))
    assert open_ > 2 * midday and close > 2 * midday
    assert hours.volatility(ist("2024-01-05T20:00:00")) == 1.0
    with pytest.raises(ValueError, match="ends before"):
        parse_window("15:30-09:15", "normal")


def test_replay_rows_and_steps(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("ts,symbol,ltp,pc\n1000,NSE:A,10,9\n1000,NSE:B,20,\n1000,NSE:A,11,\n"
                    "2024-01-05T09:15:00+05:30,NSE:A,12,\n")
    rows = read_rows(path)
    assert rows[0] == ReplayRow(1000, "NSE:A", 10.0, None, 9.0)
    assert rows[3].ts_ms == int(ist("2024-01-05T09:15:00") * 1000)
    assert [[r.ltp for r in g] for g in steps(rows)] == [[10.0, 20.0], [11.0], [12.0]]
    path.write_text("ts,symbol\n1,NSE:A\n")
    with pytest.raises(ReplayFileError, match="lacks ltp"):
        read_rows(path)
    path.write_text("ts,symbol,ltp\n1,NSE:A,abc\n")
    with pytest.raises(ReplayFileError, match=r"t\.csv:2"):
        read_rows(path)


def test_sim_auth_issues_checks_and_expires_tokens() -> None:
    now = [1000.0]
    auth = KiteAuth(static_token="demo", expire_after_s=10, clock=lambda: now[0])
    body = f"api_key=k&request_token=r&checksum={checksum('k', 'r', 'sim-secret')}".encode()
    data, error = auth.session(body)
    assert error is None and data is not None
    token = str(data["access_token"])
    assert auth.check("k", token) is None and auth.check("k", "demo") is None
    refused = auth.check("k", "other")
    assert refused is not None and refused.status == 403
    assert refused.error_type == "TokenException"
    _data, error = auth.session(body.replace(b"checksum=", b"checksum=0"))
    assert error is not None and error.status == 403 and "checksum" in error.message
    now[0] += 10
    assert auth.check("k", token) is not None and auth.expires_in(token) == 0
    assert KiteAuth().check("k", "anything") is None and KiteAuth().check("k", "") is not None


def test_request_body_is_taken_off_the_head() -> None:
    head = b"POST /session/token HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n"
    assert content_length(head) == 12
    assert without_content_length(head) == b"POST /session/token HTTP/1.1\r\nHost: x\r\n\r\n"


@given(st.lists(st.tuples(st.sampled_from(["ltp", "quote", "full"]), st.booleans()),
                min_size=1, max_size=5))
def test_a_broken_copy_never_decodes(packets: list[tuple[str, bool]]) -> None:
    q = wire.Quote(408065, 157370, 157000, 157100, 158000, 156000)
    frame = wire.frame(wire.packet(q, mode, index=index) for mode, index in packets)
    with pytest.raises(kite.KiteDecodeError):
        kite.decode(broken_copy(frame), 0, {})


def test_stored_token_forms() -> None:
    assert read_stored(" abc ") == "abc"
    assert read_stored('{"access_token": "xyz", "user_id": "AB1"}') == "xyz"
    assert read_stored("{broken") == "" and read_stored(None) == ""
    assert read_stored_record('{"access_token": "xyz", "api_key": " app1 "}') == ("xyz", "app1")
    assert read_stored_record("abc") == ("abc", "")
    assert read_stored_record('{"access_token": 5, "api_key": 6}') == ("", "")


def test_a_token_connects_with_the_app_key_it_was_issued_for(r: redis.Redis,
                                                             redis_url: str) -> None:
    """The dashboard's Kite login stores the app's key with the token; ingest connects with
    it (whatever KITE_API_KEY says). A token with no key of its own takes the configured
    one; with neither, it is not usable and the feed says why."""
    async def scenario() -> list[tuple[str, str, str]]:
        client = bus.aconnect(redis_url)
        status = FeedStatus(client, "kite", Stats("t"))
        seen = []
        for app_key in ("configured-app", ""):
            await client.set(keys.feed_token("kite"),
                             orjson.dumps({"access_token": "t1", "api_key": "login-app"}))
            tokens = AccessTokens(client, "", status, poll_s=0.05, expiry=None,
                                  app_key=app_key)
            token = await tokens.usable()
            seen.append((token.value, token.api_key, token.source))
            await client.set(keys.feed_token("kite"), "t2")  # stored by hand: no key
            tokens = AccessTokens(client, "", status, poll_s=0.05, expiry=None,
                                  app_key=app_key)
            try:
                token = await asyncio.wait_for(tokens.usable(), 0.3)
                seen.append((token.value, token.api_key, token.source))
            except TimeoutError:
                seen.append(("", "", await client.hget(keys.feed_state("kite"), "reason")))
        await client.aclose()
        return seen

    assert asyncio.run(scenario()) == [
        ("t1", "login-app", "redis"), ("t2", "configured-app", "redis"),
        ("t1", "login-app", "redis"),
        ("", "", "redis token: no Kite API key to connect with (log in through the dashboard, "
                 "which stores the app's key with the token, or set KITE_API_KEY)")]


def test_tokens_expire_daily_and_a_new_stored_one_wins(r: redis.Redis, redis_url: str) -> None:
    async def scenario() -> list[str]:
        client = bus.aconnect(redis_url)
        now = [ist("2024-01-05T05:59:00")]
        status = FeedStatus(client, "kite", Stats("t"), clock=lambda: now[0])
        tokens = AccessTokens(client, "configured", status, poll_s=0.05, expiry=time(6),
                              clock=lambda: now[0])
        seen = [(await tokens.usable()).source]
        now[0] = ist("2024-01-05T06:00:01")  # the configured token was seen before 06:00
        waiting = asyncio.create_task(tokens.usable())
        await asyncio.sleep(0.2)
        seen.append(r.hget(keys.feed_state("kite"), "state") or "")
        await client.set(keys.feed_token("kite"), "fresh")
        token = await asyncio.wait_for(waiting, 2)
        seen.append(token.source)
        await tokens.refuse(token, "HTTP 403")
        seen.append(r.hget(keys.feed_state("kite"), "reason") or "")
        await client.aclose()
        return seen

    assert asyncio.run(scenario()) == ["config", "needs_login", "redis", "redis token: HTTP 403"]
