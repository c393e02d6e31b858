"""Test on history (backtest): the job the web hands to the engine's backtest worker, and
the reader of uploaded CSV files both check with.

A job is a rule and a source of prices: the last ``days`` days of what Redis keeps (the
tick stream, and one-minute bars beyond it), or an uploaded CSV of ticks or of bars. The
web validates everything before it queues a job; the worker reads the same job with the
same code, so what the page accepted is what runs.

Uploaded CSV, one header line, then one row per line, oldest first (rows of other symbols
are skipped and counted):

- ticks: ``ts,symbol,ltp[,volume][,pc]`` (the ``stormalert replay`` format);
- bars: ``ts,symbol,open,high,low,close[,volume]``, one-minute bars, ``ts`` the bar's start.

``ts`` is epoch milliseconds or ISO-8601 with an offset; ``volume`` is the cumulative day
volume for ticks, the volume traded in the minute for bars.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from proto.recorded import parse_ts
from proto.rules import Rule, describe_validation_error

MAX_DAYS = 7  # the bars keep five sessions: a week covers them
CSV_MAX_BYTES = 5 * 1024 * 1024
CSV_MAX_ROWS = 200_000
MAX_CSV_ERRORS = 20  # problems listed before the reader gives up on a file
TICK_COLUMNS = ("ts", "symbol", "ltp")
BAR_COLUMNS = ("ts", "symbol", "open", "high", "low", "close")
CSV_FORMATS = ("ticks", "bars")
# While it runs a job the worker writes the job's ``hb_ms`` about every ``PROGRESS_S``; a job
# whose ``hb_ms`` is older than ``STALLED_S`` lost its worker (another one takes the job
# over after that long). A job no worker picked up within ``MAX_QUEUED_S`` is dropped.
PROGRESS_S = 0.5
STALLED_S = 30.0
MAX_QUEUED_S = 600.0


class JobError(ValueError):
    """A job that cannot run; the message says why in one line."""


class Job(BaseModel):
    """What to test: the rule, and where its prices come from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: Rule
    source: Literal["days", "csv"]
    days: int | None = Field(default=None, ge=1, le=MAX_DAYS)
    csv_format: Literal["ticks", "bars"] | None = None

    @model_validator(mode="after")
    def _source(self) -> Job:
        if self.source == "days" and self.days is None:
            raise ValueError(f"days: give a number of days, 1 to {MAX_DAYS}")
        if self.source == "csv" and self.csv_format is None:
            raise ValueError("csv_format: say whether the file holds ticks or bars")
        return self


def parse_job(text: str | bytes) -> Job:
    try:
        return Job.model_validate_json(text)
    except ValidationError as exc:
        raise JobError(describe_validation_error(exc)) from None


@dataclass(frozen=True, slots=True)
class Point:
    """One price the rule sees: a recorded tick, or one of the four a bar is replayed as."""

    ts_ms: int
    ltp: float
    volume: int | None
    pc: float | None


@dataclass(frozen=True, slots=True)
class BarRow:
    start_ms: int
    o: float
    h: float
    l: float  # noqa: E741 - OHLC's own name
    c: float
    v: int | None


class CsvError(ValueError):
    """An uploaded file that cannot be used; ``problems`` lists each bad line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(slots=True)
class CsvData:
    """The rows of the rule's symbol, oldest first, and how many rows were of others."""

    fmt: str
    ticks: list[Point]
    bars: list[BarRow]
    other_rows: int = 0

    def __len__(self) -> int:
        return len(self.ticks) if self.fmt == "ticks" else len(self.bars)


def _number(row: dict[str, str | None], name: str, *, positive: bool = True) -> float:
    text = (row.get(name) or "").strip()
    if not text:
        raise ValueError(f"{name} is empty")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} {text!r} is not a number") from None
    if not math.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"{name} must be a positive number, got {text!r}")
    return value


def _volume(row: dict[str, str | None], name: str) -> int | None:
    text = (row.get(name) or "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise ValueError(f"{name} {text!r} must be a whole number >= 0")
    return int(text)


def _ts(row: dict[str, str | None]) -> int:
    text = (row.get("ts") or "").strip()
    try:
        return parse_ts(text)
    except ValueError as exc:
        raise ValueError(f"ts {text!r}: {exc} (epoch ms or ISO-8601 with an offset)") from None


def _tick(row: dict[str, str | None]) -> Point:
    pc_text = (row.get("pc") or "").strip()
    return Point(_ts(row), _number(row, "ltp"), _volume(row, "volume"),
                 _number(row, "pc") if pc_text else None)


def _bar(row: dict[str, str | None]) -> BarRow:
    start = _ts(row)
    o, h, l, c = (_number(row, name) for name in ("open", "high", "low", "close"))  # noqa: E741
    if h < max(o, c) or l > min(o, c):
        raise ValueError(f"high {h!r} and low {l!r} must hold open {o!r} and close {c!r}")
    return BarRow(start, o, h, l, c, _volume(row, "volume"))


def read_csv(text: str, fmt: str, symbol: str) -> CsvData:
    """The rows of ``symbol`` in an uploaded file; CsvError lists up to ``MAX_CSV_ERRORS``
    bad lines (line numbers count the header as line 1)."""
    if fmt not in CSV_FORMATS:
        raise CsvError([f"unknown CSV format {fmt!r}: ticks or bars"])
    if len(text.encode()) > CSV_MAX_BYTES:
        raise CsvError([f"the file is larger than {CSV_MAX_BYTES // (1024 * 1024)} MiB"])
    reader = csv.DictReader(text.splitlines())
    header = [name.strip().lower() for name in reader.fieldnames or []]
    reader.fieldnames = header
    wanted = TICK_COLUMNS if fmt == "ticks" else BAR_COLUMNS
    missing = [name for name in wanted if name not in header]
    if not header:
        raise CsvError(["the file is empty"])
    if missing:
        optional = "[,volume][,pc]" if fmt == "ticks" else "[,volume]"
        raise CsvError([f"line 1: the header lacks {', '.join(missing)} "
                        f"(expected {','.join(wanted)}{optional})"])
    data = CsvData(fmt, [], [])
    problems: list[str] = []
    last_ts: int | None = None
    rows = 0
    for row in _rows(reader):
        rows += 1
        if rows > CSV_MAX_ROWS:
            problems.append(f"more than {CSV_MAX_ROWS} rows")
            break
        line = reader.line_num
        if None in row or any(value is None for value in row.values()):
            problems.append(f"line {line}: expected {len(header)} columns")
        elif (row.get("symbol") or "").strip() != symbol:
            data.other_rows += 1
            continue
        else:
            try:
                item = _tick(row) if fmt == "ticks" else _bar(row)
            except ValueError as exc:
                problems.append(f"line {line}: {exc}")
            else:
                ts = item.ts_ms if isinstance(item, Point) else item.start_ms
                if last_ts is not None and ts < last_ts:
                    problems.append(f"line {line}: ts goes back in time; sort the file oldest "
                                    "first")
                last_ts = ts
                if isinstance(item, Point):
                    data.ticks.append(item)
                else:
                    data.bars.append(item)
        if len(problems) >= MAX_CSV_ERRORS:
            problems.append("(stopped after this many problems)")
            break
    if problems:
        raise CsvError(problems)
    if not len(data):
        raise CsvError([f"no rows of {symbol} in the file ({data.other_rows} rows of other "
                        "symbols)"])
    return data


def _rows(reader: csv.DictReader[str]) -> Iterator[dict[str, str | None]]:
    try:
        yield from reader
    except csv.Error as exc:
        raise CsvError([f"line {reader.line_num}: {exc}"]) from None


# A bar is replayed as four prices at these offsets into its minute: the open, the extreme
# nearer the open, the other extreme, the close (a bar that closed up is taken to have gone
# down first: open, low, high, close; one that closed down: open, high, low, close).
BAR_OFFSETS_MS = (0, 20_000, 40_000, 59_999)


def bar_points(bar: BarRow, cum_volume: int, pc: float | None) -> list[Point]:
    """The four prices a bar is replayed as. ``cum_volume`` is the day's volume before the
    bar; the bar's volume is counted at its close."""
    first, second = (bar.l, bar.h) if bar.c >= bar.o else (bar.h, bar.l)
    end_volume = cum_volume + (bar.v or 0)
    prices = (bar.o, first, second, bar.c)
    volumes = (cum_volume, cum_volume, cum_volume, end_volume)
    return [Point(bar.start_ms + offset, price, volume, pc)
            for offset, price, volume in zip(BAR_OFFSETS_MS, prices, volumes, strict=True)]
