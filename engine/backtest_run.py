"""One backtest: a rule over recorded prices with the live shard's rule book, and where those
prices come from (Redis history or an uploaded file).

The evaluation is ``engine.replay``'s: one ``Book`` with the rule armed at the first price,
``Book.on_tick`` per price, so a backtest over the ticks of a stream makes the firings the
live shard and ``stormalert replay`` make over the same ticks.

History from Redis ("last N days"): the symbol's ticks still in its ``sa:ticks:{i}`` stream
(entries since N days ago, up to the job's start), and before the first of them the
symbol's closed one-minute bars (``sa:bars:{SYM}``). A bar is replayed as four prices
(``proto.backtest.bar_points``); its previous close is the last bar close of the previous
IST day. The result says which spans came from ticks and which from bars.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import redis

from engine.book import Book
from engine.session import IST, Session
from proto import keys
from proto.backtest import BAR_OFFSETS_MS, BarRow, CsvData, Job, Point, bar_points, read_csv
from proto.bars import MINUTE_MS, decode_bar
from proto.events import CodecError, Tick, decode_ticks
from proto.rules import Rule

PAGE_ENTRIES = 500  # stream entries per XRANGE while reading history
DAY_MS = 86_400_000

Sourced = tuple[Point, str]  # a price and where it came from: "tick" or "bar"


@dataclass(slots=True)
class Span:
    """How many prices one source gave, and the times they cover."""

    n: int = 0
    from_ms: int | None = None
    to_ms: int | None = None

    def add(self, ts_ms: int) -> None:
        self.n += 1
        if self.from_ms is None:
            self.from_ms = ts_ms
        self.to_ms = ts_ms

    def as_dict(self) -> dict[str, int | None]:
        return {"n": self.n, "from_ms": self.from_ms, "to_ms": self.to_ms}


class Evaluation:
    """The rule armed in a fresh book at the first price; firings collected as they come."""

    def __init__(self, rule: Rule, holidays: frozenset[date], max_shown: int) -> None:
        self.rule = rule
        self.book = Book(Session(holidays))
        self.book.put(rule.model_copy(update={"active": True}))
        self.max_shown = max_shown
        self.count = 0
        self.firings: list[dict[str, Any]] = []
        self.spans = {"tick": Span(), "bar": Span()}
        self.ended_at: int | None = None  # when a once-rule fired or the rule expired

    @property
    def armed(self) -> bool:
        return len(self.book) > 0

    def feed(self, point: Point, src: str) -> None:
        self.spans[src].add(point.ts_ms)
        sym = self.rule.symbol
        for firing in self.book.on_tick(sym, point.ltp, point.ts_ms, point.pc, point.volume or 0):
            self.count += 1
            if len(self.firings) < self.max_shown:
                self.firings.append({"ts": point.ts_ms, "ltp": point.ltp, "ref": firing.ref,
                                     "msg": firing.msg, "src": src})
        if not self.armed and self.ended_at is None:
            self.ended_at = point.ts_ms

    def result(self) -> dict[str, Any]:
        times = [t for span in self.spans.values() for t in (span.from_ms, span.to_ms)
                 if t is not None]
        return {
            "rule": self.rule.id, "symbol": self.rule.symbol, "kind": self.rule.kind,
            "count": self.count, "firings": self.firings,
            "truncated": self.count > len(self.firings),
            "period": {"from_ms": min(times, default=None), "to_ms": max(times, default=None)},
            "sources": {"ticks": self.spans["tick"].as_dict(),
                        "bars": {**self.spans["bar"].as_dict(),
                                 "n": self.spans["bar"].n // len(BAR_OFFSETS_MS)}},
            "prices": sum(span.n for span in self.spans.values()),
            "rule_errors": self.book.errors,
            "ended_at": self.ended_at,
        }


def run(points: Iterable[Sourced], evaluation: Evaluation,
        progress: Callable[[int], None], every: int = 2000) -> dict[str, Any]:
    """Feed every price (until the rule is disarmed); ``progress(ts_ms)`` every ``every``."""
    for n, (point, src) in enumerate(points, 1):
        evaluation.feed(point, src)
        if n % every == 0:
            progress(point.ts_ms)
        if not evaluation.armed:
            break
    return evaluation.result()


# Bars --------------------------------------------------------------------------------------


def ist_day(ts_ms: int) -> date:
    return datetime.fromtimestamp(ts_ms / 1000, IST).date()


def bars_as_points(bars: Iterable[BarRow]) -> Iterator[Sourced]:
    """Each bar as its four prices; the day volume and the previous close follow the days."""
    day: date | None = None
    last_close: float | None = None
    pc: float | None = None
    cum = 0
    for bar in bars:
        bar_day = ist_day(bar.start_ms)
        if bar_day != day:
            day, pc, cum = bar_day, last_close, 0
        for point in bar_points(bar, cum, pc):
            yield point, "bar"
        cum += bar.v or 0
        last_close = bar.c


def read_bars(r: redis.Redis, sym: str, from_ms: int, to_ms: int) -> list[BarRow]:
    """Closed one-minute bars of ``sym`` starting in ``[from_ms, to_ms]``; unreadable entries
    (none are written so) are left out."""
    entries: Any = r.xrange(keys.bars(sym), min=f"{from_ms}-0", max=f"{to_ms}-0")
    stored = (decode_bar(entry_id, fields) for entry_id, fields in entries)
    return [BarRow(b.start, b.o, b.h, b.l, b.c, b.v) for b in stored if b is not None]


# Ticks -------------------------------------------------------------------------------------


def read_ticks(r: redis.Redis, stream: str, sym: str, from_ms: int,
               to_ms: int) -> Iterator[Tick]:
    """The ticks of ``sym`` in the entries written from ``from_ms`` to ``to_ms``, in stream
    order, read a page at a time. Batches that do not name the symbol are not decoded."""
    quoted = '"' + sym.replace("\\", "\\\\").replace('"', '\\"') + '"'
    low = f"{from_ms}-0"
    while True:
        entries: Any = r.xrange(stream, min=low, max=str(to_ms), count=PAGE_ENTRIES)
        for _entry_id, fields in entries:
            batch = fields.get("ticks")
            if (batch is not None and quoted not in batch) or \
                    (batch is None and fields.get("sym") != sym):
                continue
            try:
                ticks = decode_ticks(fields)
            except CodecError:
                continue  # the shard skips it too
            yield from (tick for tick in ticks if tick.sym == sym)
        if len(entries) < PAGE_ENTRIES:
            return
        low = "(" + entries[-1][0]


def history_points(r: redis.Redis, sym: str, shards: int, from_ms: int,
                   to_ms: int) -> Iterator[Sourced]:
    """Bars before the first tick still in the stream, then the ticks."""
    stream = keys.ticks(keys.shard_for(sym, shards))
    bars = read_bars(r, sym, from_ms, to_ms)
    bars_done = False
    for tick in read_ticks(r, stream, sym, from_ms, to_ms):
        if not bars_done:
            bars_done = True
            yield from bars_as_points(b for b in bars if b.start_ms + MINUTE_MS <= tick.ts)
        yield Point(tick.ts, tick.ltp, tick.vol, tick.pc), "tick"
    if not bars_done:
        yield from bars_as_points(bars)


def csv_points(data: CsvData) -> Iterator[Sourced]:
    if data.fmt == "bars":
        yield from bars_as_points(data.bars)
    else:
        yield from ((point, "tick") for point in data.ticks)


# A job -------------------------------------------------------------------------------------


def run_job(r: redis.Redis, job: Job, csv_text: str | None, *, shards: int,
            holidays: frozenset[date], max_shown: int,
            progress: Callable[[float], None]) -> dict[str, Any]:
    """The result of one job; ``progress(fraction)`` now and then. Raises CsvError for a
    file that cannot be used (the web checked it already, with the same reader)."""
    started = time.monotonic()
    rule = job.rule
    evaluation = Evaluation(rule, holidays, max_shown)
    extra: dict[str, Any] = {"source": job.source}
    if job.source == "days":
        assert job.days is not None  # Job's validator
        to_ms = time.time_ns() // 1_000_000
        from_ms = to_ms - job.days * DAY_MS
        points: Iterable[Sourced] = history_points(r, rule.symbol, shards, from_ms, to_ms)
        extra.update(days=job.days, requested={"from_ms": from_ms, "to_ms": to_ms})
    else:
        assert job.csv_format is not None
        data = read_csv(csv_text or "", job.csv_format, rule.symbol)
        first = data.ticks[0].ts_ms if data.ticks else data.bars[0].start_ms
        last = data.ticks[-1].ts_ms if data.ticks else data.bars[-1].start_ms
        from_ms, to_ms = first, max(last, first + 1)
        points = csv_points(data)
        extra.update(csv_format=data.fmt, rows=len(data), other_rows=data.other_rows)

    def on_progress(ts_ms: int) -> None:
        progress(min(1.0, max(0.0, (ts_ms - from_ms) / max(1, to_ms - from_ms))))

    result = run(points, evaluation, on_progress)
    result.update(extra, elapsed_ms=round((time.monotonic() - started) * 1000))
    return result
