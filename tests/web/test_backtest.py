"""Test on history from the web: the form of a stored rule or a draft, the job handed to the
engine's backtest worker through sa:backtest:jobs, the job's page (waiting, "no engine
worker running", the result) and its JSON; a user sees only their own rules and jobs."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from litestar.testing import TestClient

from proto import keys, store
from proto.rules import parse_rule
from tests.engine.test_backtest import replayed, walk, write_ticks
from tests.helpers import spawn, stop, wait_for
from tests.web.conftest import csrf_token, login
from web.app import create_app
from web.backtest_view import job_state, job_view
from web.settings import WebSettings

HTML = {"Accept": "text/html,application/xhtml+xml"}
STATE = re.compile(r'id="backtest"[^>]*data-state="(\w+)"')
SYM = "NSE:INFY"
RULE = {"id": "a-cross", "symbol": SYM, "kind": "cross_above", "params": {"level": 1500}}


@pytest.fixture
def rules(r: redis.Redis, users: dict[str, str]) -> dict[str, str]:
    r.hset(keys.INSTRUMENTS, SYM, orjson.dumps({"tok": "1", "src": "test"}))
    store.add_rule(r, parse_rule(RULE, user="alice"))
    store.add_rule(r, parse_rule({**RULE, "id": "b-cross"}, user="bob"))
    return users


def submit(client: TestClient[Any], path: str, data: dict[str, str],
           files: dict[str, Any] | None = None) -> Any:
    page = client.get(path, headers=HTML)
    assert page.status_code == 200, page.text
    target = "/backtests" if path.startswith("/backtests/new") else path
    return client.post(target,
                       data={**data, "_csrf_token": csrf_token(page.text)}, files=files,
                       headers=HTML, follow_redirects=False)


def state_of(client: TestClient[Any], path: str) -> tuple[str, str]:
    page = client.get(path, headers=HTML)
    assert page.status_code == 200, page.text
    match = STATE.search(page.text)
    assert match, page.text
    return match.group(1), page.text


def api_headers(client: TestClient[Any]) -> dict[str, str]:
    """A script signed in with the session cookie sends the CSRF token as a header."""
    page = client.get("/rules/a-cross/test", headers=HTML)
    return {"x-csrftoken": csrf_token(page.text)}


def test_a_users_rules_and_jobs_are_theirs_alone(client: TestClient[Any], r: redis.Redis,
                                                 rules: dict[str, str]) -> None:
    login(client, "alice", rules["alice"])
    page = client.get("/rules/a-cross/test", headers=HTML)
    assert page.status_code == 200 and "a-cross" in page.text and 'type="file"' in page.text
    for path in ("/rules/b-cross/test", "/rules/nope/test", "/rules/..%2F/test"):
        assert client.get(path, headers=HTML).status_code == 404, path
    token = csrf_token(page.text)
    assert client.post("/rules/b-cross/test", data={"days": "1", "_csrf_token": token},
                       headers=HTML).status_code == 404
    assert client.post("/api/rules/b-cross/test", json={"days": 1},
                       headers={"x-csrftoken": token}).status_code == 404
    response = submit(client, "/rules/a-cross/test", {"source": "days", "days": "2"})
    assert response.status_code == 303, response.text
    path = str(response.headers["location"])
    job_id = path.rsplit("/", 1)[1]
    assert re.fullmatch(r"/backtests/[A-Za-z0-9_-]{16}", path)
    [(_eid, fields)] = r.xrange(keys.BACKTEST_JOBS)  # type: ignore[misc]
    assert fields["user"] == "alice" and fields["id"] == job_id
    job = orjson.loads(r.hget(keys.backtest("alice", job_id), "job") or "")
    assert job["rule"]["id"] == "a-cross" and job["days"] == 2 and job["source"] == "days"

    client.cookies.clear()
    login(client, "bob", rules["bob"])
    assert client.get(path, headers=HTML).status_code == 404
    assert client.get(f"/api{path}").status_code == 404
    login(client, "root", rules["root"])  # an admin too: jobs are private
    assert client.get(f"/api{path}").status_code == 404


def test_without_a_worker_the_page_says_so(settings: WebSettings, r: redis.Redis,
                                           rules: dict[str, str]) -> None:
    quick = settings.model_copy(update={"backtest_wait_s": 0.5})
    with TestClient(app=create_app(quick)) as client:
        login(client, "alice", rules["alice"])
        path = submit(client, "/rules/a-cross/test", {"days": "1"}).headers["location"]
        state, text = state_of(client, path)
        assert state == "queued" and 'http-equiv="refresh"' in text and "Reload" in text
        assert 'hx-trigger="every 1s"' in text  # htmx polls when scripts run
        time.sleep(0.6)
        state, text = state_of(client, path)
        assert state == "no_worker" and "No engine worker running" in text
        body = client.get(f"/api{path}").json()
        assert body["state"] == "no_worker" and body["pending"] and body["result"] is None


def test_backtests_are_limited_per_user_and_minute(settings: WebSettings, r: redis.Redis,
                                                  rules: dict[str, str]) -> None:
    limited = settings.model_copy(update={"backtest_jobs_per_minute": 2})
    with TestClient(app=create_app(limited)) as client:
        login(client, "alice", rules["alice"])
        for _ in range(2):
            assert submit(client, "/rules/a-cross/test", {"days": "1"}).status_code == 303
        response = submit(client, "/rules/a-cross/test", {"days": "1"})
        assert response.status_code == 429 and "at most 2 backtests a minute" in response.text
        response = client.post("/api/rules/a-cross/test", json={"days": 1},
                               headers=api_headers(client))
        assert response.status_code == 429
        client.cookies.clear()
        login(client, "bob", rules["bob"])  # a limit of alice's, not everybody's
        assert submit(client, "/rules/b-cross/test", {"days": "1"}).status_code == 303
    assert r.xlen(keys.BACKTEST_JOBS) == 3
    for _eid, fields in r.xrange(keys.BACKTEST_JOBS):
        # Until a worker takes it, a job (and its upload) is kept a quarter of an hour.
        assert 0 < r.ttl(keys.backtest(fields["user"], fields["id"])) <= 900


@pytest.fixture
def unlimited(settings: WebSettings) -> Iterator[TestClient[Any]]:
    """A client of an app that lets a user ask for many backtests a minute."""
    app = create_app(settings.model_copy(update={"backtest_jobs_per_minute": 1000}))
    with TestClient(app=app) as client:
        yield client


def test_bad_requests_say_what_is_wrong_and_queue_nothing(unlimited: TestClient[Any],
                                                          r: redis.Redis,
                                                          rules: dict[str, str]) -> None:
    client = unlimited
    login(client, "alice", rules["alice"])
    cases = [
        ({"source": "days", "days": "99"}, None, "1 to 7"),
        ({"source": "days", "days": "two"}, None, "whole number of days"),
        ({"source": "csv", "csv_format": "ticks"}, None, "choose a CSV file"),
        ({"source": "csv", "csv_format": "ticks"},
         {"csv": ("t.csv", b"time,sym,price\n1,NSE:INFY,1\n", "text/csv")},
         "line 1: the header lacks ts, symbol, ltp"),
        ({"source": "csv", "csv_format": "ticks"},
         {"csv": ("t.csv", b"ts,symbol,ltp\n1700000000000,NSE:INFY,abc\n"
                           b"soon,NSE:INFY,1\n1700000000000,NSE:INFY,-1\n", "text/csv")},
         "line 2: ltp &#39;abc&#39; is not a number"),
        ({"source": "csv", "csv_format": "ticks"},
         {"csv": ("t.csv", b"\xff\xfe\x00garbage", "text/csv")}, "not UTF-8 text"),
        ({"source": "nothing"}, None, "choose the last days or a CSV file"),
    ]
    for form, files, message in cases:
        response = submit(client, "/rules/a-cross/test", form, files)
        assert response.status_code == 400, (form, response.text)
        assert message in response.text, (form, message, response.text)
        assert 'id="bt-form"' in response.text  # the form again, with the choices kept
    # Every bad line is listed, each with its number.
    text = submit(client, "/rules/a-cross/test", *cases[4][:2]).text
    assert "line 3: ts &#39;soon&#39;" in text and "line 4: ltp must be a positive" in text
    big = b"ts,symbol,ltp\n" + b"1700000000000,NSE:INFY,1.5\n" * 200_000
    response = submit(client, "/rules/a-cross/test", {"source": "csv", "csv_format": "ticks"},
                      {"csv": ("big.csv", big, "text/csv")})
    assert response.status_code == 400 and "larger than 5 MiB" in response.text
    headers = api_headers(client)
    response = client.post("/api/rules/a-cross/test", json={"csv": "ts,symbol,ltp\n",
                                                            "csv_format": "ticks"},
                           headers=headers)
    assert response.status_code == 400
    assert response.json()["fields"] == {"csv": "the file cannot be used"}
    assert response.json()["problems"] == ["no rows of NSE:INFY in the file (0 rows of other "
                                           "symbols)"]
    response = client.post("/api/backtests", json={"rule": {"symbol": SYM, "kind": "nope"},
                                                   "days": 1}, headers=headers)
    assert response.status_code == 400 and "kind" in response.json()["fields"]
    assert r.xlen(keys.BACKTEST_JOBS) == 0


@pytest.fixture
def worker(r: redis.Redis, redis_url: str, tmp_path: Path) -> Iterator[None]:
    log = tmp_path / "backtest.log"
    proc = spawn(["engine.backtest", "--shards", "2"], redis_url, log,
                 env={"STORMALERT_STATS_INTERVAL_S": "3600"})
    wait_for(lambda: r.exists(keys.heartbeat("backtest")), what="worker heartbeat")
    yield
    assert stop(proc) == 0, log.read_text()


def wait_done(client: TestClient[Any], path: str) -> str:
    deadline = time.monotonic() + 30
    while True:
        state, text = state_of(client, path)
        if state not in ("queued", "running"):
            assert state == "done", text
            assert 'http-equiv="refresh"' not in text and "hx-trigger" not in text
            return text
        assert time.monotonic() < deadline, text
        time.sleep(0.1)


def firing_rows(text: str) -> list[str]:
    table = text.split('id="bt-firings"', 1)[1].split("</table>", 1)[0]
    return re.findall(r'<td class="num">([\d,.]+)</td>', table)


def test_a_worker_answers_stored_rules_drafts_and_uploads(unlimited: TestClient[Any],
                                                          r: redis.Redis, worker: None,
                                                          rules: dict[str, str]) -> None:
    client = unlimited
    ticks = walk(300, int(time.time() * 1000) - 600_000)
    write_ticks(r, ticks, keys.ticks(keys.shard_for(SYM, 2)))
    mine = [t for t in ticks if t.sym == SYM]
    expected = replayed(RULE, mine)
    assert expected
    login(client, "alice", rules["alice"])

    text = wait_done(client, submit(client, "/rules/a-cross/test",
                                    {"days": "1"}).headers["location"])
    assert f"<strong>{len(expected)}</strong> firing" in text
    assert firing_rows(text) == [f"{ltp:,.2f}" for _ts, ltp, _ref in expected]
    assert 'data-source="ticks">300 from' in text and "level 1,500" in text

    # A draft with the rule form's fields, over an uploaded file of ticks.
    csv = "ts,symbol,ltp,volume,pc\n" + "".join(
        f"{t.ts},{t.sym},{t.ltp},{t.vol},{t.pc or ''}\n" for t in ticks)
    draft = {"symbol": SYM, "kind": "cross_above", "params.level": "1500",
             "frequency": "every", "cooldown_s": "0"}
    query = "&".join(f"{k}={v}" for k, v in draft.items())
    response = submit(client, f"/backtests/new?{query}",
                      {**draft, "source": "csv", "csv_format": "ticks"},
                      {"csv": ("ticks.csv", csv.encode(), "text/csv")})
    assert response.status_code == 303, response.text
    text = wait_done(client, response.headers["location"])
    assert firing_rows(text) == [f"{ltp:,.2f}" for _ts, ltp, _ref in expected]
    assert "300 rows of other symbols" in text and "A draft rule" in text

    # The JSON API: bars uploaded for a draft, and a stored rule's last day.
    headers = api_headers(client)
    bars = "ts,symbol,open,high,low,close,volume\n" \
           "2026-11-30T09:15:00+05:30,NSE:INFY,1490,1495,1489,1494,100\n" \
           "2026-11-30T09:16:00+05:30,NSE:INFY,1494,1503,1493,1502,300\n"
    response = client.post("/api/backtests", headers=headers, json={
        "rule": {"symbol": SYM, "kind": "cross_above", "params": {"level": 1500}},
        "csv": bars, "csv_format": "bars"})
    assert response.status_code == 202, response.text
    job = response.json()
    body = wait_for(lambda: (b := client.get(job["api"]).json())["state"] == "done" and b,
                    what="the API's job done")
    result = body["result"]
    assert result["count"] == 1 and result["firings"][0]["ltp"] == 1503.0
    assert result["firings"][0]["src"] == "bar" and result["sources"]["bars"]["n"] == 2
    response = client.post("/api/rules/a-cross/test", json={"days": 1}, headers=headers)
    assert response.status_code == 202
    body = wait_for(lambda: (b := client.get(response.json()["api"]).json())["state"] == "done"
                    and b, what="the API's job done")
    assert [(f["ts"], f["ltp"], f["ref"]) for f in body["result"]["firings"]] == expected


T0 = 1_800_000_000_000


@pytest.mark.parametrize(("raw", "at_ms", "state", "pending"), [
    ({"requested_ms": T0}, T0 + 5_000, "queued", True),
    ({"requested_ms": T0}, T0 + 11_000, "no_worker", True),
    ({"requested_ms": T0}, T0 + 601_000, "failed", False),
    ({"status": "running", "hb_ms": T0}, T0 + 20_000, "running", True),
    ({"status": "running", "hb_ms": T0}, T0 + 31_000, "stalled", True),
    ({"status": "running", "hb_ms": T0}, T0 + 601_000, "failed", False),
    ({"status": "queued", "requested_ms": T0 - 60_000, "hb_ms": T0}, T0 + 5_000, "queued",
     True),
    ({"status": "done", "result": "{}"}, T0, "done", False),
    ({"status": "failed", "error": "bad"}, T0, "failed", False),
])
def test_a_job_always_comes_to_an_end(raw: dict[str, Any], at_ms: int, state: str,
                                      pending: bool) -> None:
    got, message = job_state({k: str(v) for k, v in raw.items()}, at_ms, 10.0)
    assert got == state and message
    assert job_view("x" * 16, {k: str(v) for k, v in raw.items()}, at_ms, 10.0)["pending"] \
        is pending


def test_csv_reader_lists_problems_and_skips_other_symbols() -> None:
    from proto.backtest import MAX_CSV_ERRORS, CsvError, read_csv

    data = read_csv("TS, Symbol ,ltp\n1,NSE:TCS,5\n2,NSE:INFY,5.5\n3,NSE:INFY,6\n", "ticks",
                    SYM)  # header names: any case, spaces around them
    assert [p.ltp for p in data.ticks] == [5.5, 6.0] and data.other_rows == 1
    bad = [
        ("ts,symbol,open,high,low,close\n1,NSE:INFY,10,9,8,9.5\n", "bars",
         "line 2: high 9.0 and low 8.0 must hold open 10.0 and close 9.5"),
        ("ts,symbol,ltp\n5,NSE:INFY,1\n4,NSE:INFY,1\n", "ticks",
         "line 3: ts goes back in time"),
        ("ts,symbol,ltp\n5,NSE:INFY\n", "ticks", "line 2: expected 3 columns"),
        ("ts,symbol,ltp\n5,NSE:TCS,1\n", "ticks", "no rows of NSE:INFY in the file"),
        ("ts,symbol,ltp,volume\n5,NSE:INFY,1,-3\n", "ticks", "volume '-3' must be a whole"),
        ("ts,symbol,ltp\n2026-11-30T09:15:00,NSE:INFY,1\n", "ticks", "needs an offset"),
        ("", "ticks", "the file is empty"),
    ]
    for text, fmt, message in bad:
        with pytest.raises(CsvError) as err:
            read_csv(text, fmt, SYM)
        assert any(message in p for p in err.value.problems), (message, err.value.problems)
    with pytest.raises(CsvError) as err:
        read_csv("ts,symbol,ltp\n" + "x,NSE:INFY,1\n" * 100, "ticks", SYM)
    assert len(err.value.problems) == MAX_CSV_ERRORS + 1  # and a note that it stopped

