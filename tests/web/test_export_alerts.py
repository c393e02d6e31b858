"""The alert history as CSV (/alerts.csv, /api/alerts.csv) against the in-process app and a
real Redis: every match of the page's filters (not one page), the columns read back with the
csv module, formula-looking text defused, non-ASCII kept, delivery per channel, the cap, and
each user's own alerts only."""

from __future__ import annotations

import asyncio
import csv
import html
import io
import re
from datetime import datetime
from typing import Any

import httpx
import orjson
import pytest
import redis
import redis.asyncio as aredis

from proto import keys, store
from proto.delivery import Record
from proto.display import IST, format_ist
from tests.web.rulehelp import HTML, Client, sign_in
from web import history, tokens
from web.export import ALERT_COLUMNS, safe_cell

FILENAME = re.compile(r'^attachment; filename="stormalert-alerts-\d{8}\.csv"$')
DAY_MS = 86_400_000


def ist_ms(day: int, hour: int, minute: int = 0) -> int:
    return int(datetime(2026, 11, day, hour, minute, tzinfo=IST).timestamp() * 1000)


def add(r: redis.Redis, at_ms: int, user: str, sym: str, rule: str, msg: str, *,
        seq: int = 0, ref: dict[str, float] | None = None) -> str:
    """An alert as the engine writes it, raised at ``at_ms`` (its entry id); its alert id."""
    alert_id = f"{rule}:{at_ms - 3}-{seq}:0"
    fields = {"id": alert_id, "rule": rule, "user": user, "sym": sym, "kind": "cross_above",
              "ltp": "1500.5", "ts": str(at_ms - 2), "rx": str((at_ms - 2) * 1000),
              "at": str(at_ms * 1000 - 500), "msg": msg, "channels": "default",
              "ref": orjson.dumps(ref or {}).decode()}
    r.xadd(keys.ALERTS, fields, id=f"{at_ms}-{seq}")  # type: ignore[arg-type]
    return alert_id


def read_export(response: httpx.Response) -> tuple[list[dict[str, str]], str | None]:
    """The rows of a CSV download and its ``# truncated: ...`` note (None: complete)."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert FILENAME.match(response.headers["content-disposition"]), response.headers
    text = response.content.decode("utf-8")
    assert text.startswith("\ufeff")  # Excel reads UTF-8 only after a byte-order mark
    rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"))))
    assert tuple(rows[0]) == ALERT_COLUMNS
    note = None
    if rows[-1][0].startswith("# truncated: "):
        assert len(rows[-1]) == 1, rows[-1]
        note = rows.pop()[0]
    return [dict(zip(ALERT_COLUMNS, row, strict=True)) for row in rows[1:]], note


def read_csv(response: httpx.Response) -> list[dict[str, str]]:
    """The rows of a complete CSV download (no truncation note)."""
    rows, note = read_export(response)
    assert note is None, note
    return rows


@pytest.fixture
def many(r: redis.Redis) -> list[int]:
    """1,300 alerts of alice's over two days (newest last), bob's between them: more than a
    page, a scan budget and a read chunk."""
    times = []
    with r.pipeline(transaction=False) as pipe:
        for i in range(1300):
            at = ist_ms(27, 9) + i * 60_000
            sym = "NSE:INFY" if i % 2 == 0 else "NSE:TCS"
            add(pipe, at, "alice", sym, "ra", f"alice {i}")  # type: ignore[arg-type]
            add(pipe, at, "bob", "NSE:INFY", "rb", f"bob {i}", seq=1)  # type: ignore[arg-type]
            times.append(at)
        pipe.execute()
    return times


def test_every_match_of_the_filters(client: Client, users: dict[str, str], r: redis.Redis,
                                    many: list[int]) -> None:
    sign_in(client, "alice", users["alice"])
    rows = read_csv(client.get("/alerts.csv?symbol=nse:infy"))
    assert [row["message"] for row in rows] == [f"alice {i}" for i in range(1298, -1, -2)]
    newest = rows[0]
    at = many[1298]
    assert newest["time_ms"] == str(at - 2)
    assert newest["time_ist"] == datetime.fromtimestamp((at - 2) / 1000, IST).isoformat(
        timespec="milliseconds")
    assert newest["time_ist"].endswith("+05:30")
    assert (newest["symbol"], newest["rule_id"], newest["kind"], newest["price"],
            newest["user"]) == ("NSE:INFY", "ra", "cross_above", "1500.5", "alice")
    assert newest["alert_id"] == f"ra:{at - 3}-0:0" and newest["tick_to_alert_ms"] == "1.50"

    # The date filter is the page's: a whole IST day, the time an alert was raised.
    day = read_csv(client.get("/alerts.csv?symbol=NSE:TCS&from=2026-11-27&to=2026-11-27"))
    expected = [i for i in range(1, 1300, 2) if many[i] < ist_ms(28, 0)]
    assert [row["message"] for row in day] == [f"alice {i}" for i in reversed(expected)]
    # The API twin answers the same; a script's token opens it.
    assert read_csv(client.get("/api/alerts.csv?symbol=NSE:INFY")) == rows


def test_the_page_links_its_filters(client: Client, users: dict[str, str],
                                    many: list[int]) -> None:
    sign_in(client, "alice", users["alice"])
    page = client.get(f"/alerts?symbol=NSE:TCS&from=2026-11-27&before={many[900]}-0",
                      headers=HTML).text
    link = re.search(r'<a href="([^"]+)" id="download-csv" download>Download CSV</a>', page)
    assert link, page
    # Every page of the filters, not the one shown (the cursor is left out).
    assert html.unescape(link.group(1)) == "/alerts.csv?symbol=NSE%3ATCS&from=2026-11-27"
    bad = client.get("/alerts?from=yesterday", headers=HTML).text
    assert "download-csv" not in bad


def test_formula_text_and_non_ascii(client: Client, users: dict[str, str],
                                    r: redis.Redis) -> None:
    texts = ['=HYPERLINK("http://evil.example","click")', "+91 above", "-5% drop", "@SUM(A1)",
             "\tTAB", "नीचे गिरा ₹1,500 — बेचो"]
    for i, msg in enumerate(texts):
        add(r, ist_ms(28, 10, i), "alice", "NSE:टाटा" if i == 5 else "NSE:INFY",
            "=rule" if i == 0 else "r1", msg, ref={"level": 1500.0, "prev": -3.25})
    sign_in(client, "alice", users["alice"])
    rows = read_csv(client.get("/alerts.csv"))[::-1]
    assert [row["message"] for row in rows] == [
        "'" + t for t in texts[:5]] + ["नीचे गिरा ₹1,500 — बेचो"]
    assert rows[0]["rule_id"] == "'=rule" and rows[1]["rule_id"] == "r1"
    assert rows[5]["symbol"] == "NSE:टाटा"
    assert orjson.loads(rows[0]["ref"]) == {"level": 1500.0, "prev": -3.25}
    # Filtering by the non-ASCII symbol works as on the page.
    only = read_csv(client.get("/alerts.csv", params={"symbol": "NSE:टाटा"}))
    assert [row["message"] for row in only] == ["नीचे गिरा ₹1,500 — बेचो"]
    assert safe_cell("1500") == "1500" and safe_cell("") == "" and safe_cell("-") == "'-"


def test_delivery_state(client: Client, users: dict[str, str], r: redis.Redis) -> None:
    sent_id = add(r, ist_ms(28, 10), "alice", "NSE:INFY", "ra", "sent one")
    folded_id = add(r, ist_ms(28, 11), "alice", "NSE:INFY", "ra", "folded one")
    webhook = "json://127.0.0.1:9/hook"
    r.hset(keys.user_channels("alice"), store.channel_id(webhook),
           orjson.dumps({"url": webhook, "tag": "phone"}))
    r.hset(keys.delivery(sent_id), store.channel_id(webhook),
           Record(status="failed", attempts=5, error="HTTP 500", at=2).to_json())
    r.hset(keys.delivery(folded_id), "folded", "digest:alice:m1")
    sign_in(client, "alice", users["alice"])
    folded, sent = read_csv(client.get("/alerts.csv"))
    assert sent["delivery"] == f"json:{store.channel_id(webhook)} (phone): failed after 5 tries"
    assert (sent["folded_into"], folded["folded_into"]) == ("", "digest:alice:m1")
    assert "127.0.0.1:9" not in client.get("/alerts.csv").text


async def make_token(redis_url: str, user: str) -> str:
    ar = aredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        token, _info = await tokens.create_token(ar, user, "spreadsheet")
    finally:
        await ar.aclose()
    return token


def test_each_user_exports_their_own(client: Client, users: dict[str, str], redis_url: str,
                                     many: list[int]) -> None:
    sign_in(client, "bob", users["bob"])
    rows = read_csv(client.get("/alerts.csv"))
    assert len(rows) == 1300 and {row["user"] for row in rows} == {"bob"}
    # Asking for alice's rule by its id finds nothing of hers.
    assert read_csv(client.get("/alerts.csv?rule=ra")) == []
    assert read_csv(client.get("/api/alerts.csv?rule=ra")) == []
    # bob's API token: his alerts, on /api/ only.
    token = asyncio.run(make_token(redis_url, "bob"))
    client.cookies.clear()
    auth = {"Authorization": f"Bearer {token}"}
    by_token = read_csv(client.get("/api/alerts.csv?symbol=NSE:INFY", headers=auth))
    assert len(by_token) == 1300 and {row["user"] for row in by_token} == {"bob"}
    assert client.get("/alerts.csv", headers=auth, follow_redirects=False).status_code in (
        302, 303, 401)


def test_bad_filters_and_the_cap(client: Client, users: dict[str, str], r: redis.Redis,
                                 many: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    sign_in(client, "alice", users["alice"])
    bad = client.get("/api/alerts.csv?from=2026-11-29&to=2026-11-28")
    assert bad.status_code == 400 and bad.json()["detail"] == "to: must be after from"
    page = client.get("/alerts.csv?from=soon", headers=HTML)
    assert page.status_code == 400 and "expected a date" in page.text
    monkeypatch.setattr(history, "EXPORT_MAX_ROWS", 700)
    rows, note = read_export(client.get("/alerts.csv"))
    assert [row["message"] for row in rows] == [f"alice {i}" for i in range(1299, 599, -1)]
    assert note == "# truncated: the 700-row cap; narrow the filters"
    # Exactly as many matches as the cap: the file is complete and says nothing.
    monkeypatch.setattr(history, "EXPORT_MAX_ROWS", 1300)
    assert len(read_csv(client.get("/alerts.csv"))) == 1300


def test_an_empty_history(client: Client, users: dict[str, str]) -> None:
    sign_in(client, "alice", users["alice"])
    assert read_csv(client.get("/alerts.csv")) == []
    assert read_csv(client.get(f"/alerts.csv?to={DAY_MS}")) == []


def test_the_scan_budget(client: Client, users: dict[str, str], many: list[int],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    """An export reads at most EXPORT_MAX_SCAN entries (everyone's), whatever it wrote."""
    sign_in(client, "alice", users["alice"])
    monkeypatch.setattr(history, "EXPORT_MAX_SCAN", 600)
    # 600 entries back from the newest: 300 minutes of alice's and bob's, down to alert 1000.
    searched_to = format_ist(many[1000])
    rows, note = read_export(client.get("/alerts.csv?symbol=NSE:NOPE"))
    assert rows == []
    assert note == (f"# truncated: the scan limit of 600 alerts, searched back to "
                    f"{searched_to}; narrow the dates")
    rows, note = read_export(client.get("/api/alerts.csv?symbol=NSE:INFY"))
    assert [row["message"] for row in rows] == [f"alice {i}" for i in range(1298, 999, -2)]
    assert note is not None and "scan limit of 600 alerts" in note
    # Dates that hold fewer entries than the budget: complete.
    narrow = read_csv(client.get(f"/alerts.csv?from={many[1100]}&to={many[1299] + 1}"))
    assert len(narrow) == 200
    # A budget of exactly the whole stream reads it all: complete too.
    monkeypatch.setattr(history, "EXPORT_MAX_SCAN", 2600)
    assert len(read_csv(client.get("/alerts.csv"))) == 1300


class StalledDownload:
    """A GET through the app's ASGI interface by a client that takes the first chunk of the
    body, then stops reading (its send never returns) until it hangs up."""

    def __init__(self) -> None:
        self.asked = False
        self.status = 0
        self.started = asyncio.Event()  # the first chunk of the body came
        self.gone = asyncio.Event()  # the client hangs up

    async def receive(self) -> dict[str, Any]:
        if not self.asked:
            self.asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body" and message.get("body"):
            self.started.set()
            await asyncio.Event().wait()  # never read on


class FullDownload:
    """A GET through the app's ASGI interface by a client that reads the whole answer."""

    def __init__(self) -> None:
        self.asked = False
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        self.done = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        if not self.asked:
            self.asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.done.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")
            if not message.get("more_body"):
                self.done.set()


def api_scope(path: str, token: str) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 40000),
            "server": ("testserver", 80), "state": {},
            "headers": [(b"host", b"testserver"),
                        (b"authorization", f"Bearer {token}".encode())]}


async def full_get(app: Any, token: str) -> FullDownload:
    download = FullDownload()
    await asyncio.wait_for(app(api_scope("/api/alerts.csv", token), download.receive,
                               download.send), 30)
    return download


async def two_stalled_then_a_third(app: Any, token: str) -> tuple[list[int], FullDownload,
                                                                  FullDownload]:
    """Two downloads that stall after their first chunk, a third while they do, and a
    fourth after both clients hung up."""
    stalled = [StalledDownload(), StalledDownload()]
    running = [asyncio.create_task(app(api_scope("/api/alerts.csv", token), d.receive, d.send))
               for d in stalled]
    await asyncio.wait_for(asyncio.gather(*(d.started.wait() for d in stalled)), 30)
    third = await full_get(app, token)
    for download in stalled:
        download.gone.set()
    await asyncio.wait_for(asyncio.gather(*running), 30)
    return [d.status for d in stalled], third, await full_get(app, token)


def test_two_exports_at_a_time(client: Client, users: dict[str, str], redis_url: str,
                               many: list[int]) -> None:
    sign_in(client, "bob", users["bob"])
    for _ in range(3):  # a finished download gives its slot back
        assert len(read_csv(client.get("/alerts.csv?symbol=NSE:INFY"))) == 1300
    token = asyncio.run(make_token(redis_url, "bob"))
    statuses, third, after = client.blocking_portal.call(two_stalled_then_a_third,
                                                         client.app, token)
    assert statuses == [200, 200]
    assert third.status == 429 and third.headers["retry-after"] == "10"
    assert orjson.loads(third.body)["detail"] == (
        "2 alert exports are already running on this server; try again in 10 seconds")
    # Both clients hung up mid-file: their slots are free again.
    assert after.status == 200, after.body
    assert after.body.decode().count("\n") == 1301
