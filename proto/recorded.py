"""Recorded ticks, the replay format shared by ``stormalert replay`` and ``sim --replay``.

CSV with the header ``ts,symbol,ltp[,volume][,pc]`` (``ts`` epoch milliseconds or ISO-8601
with an offset), or the JSON lines ``stormalert decode`` prints (one tick object per line).
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

import orjson


class RecordedError(ValueError):
    """A recording that cannot be read; the message names the source and line."""


@dataclass(frozen=True, slots=True)
class Row:
    ts_ms: int
    symbol: str
    ltp: float
    volume: int | None
    pc: float | None


def parse_ts(text: str) -> int:
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError(f"time {text!r} needs an offset, e.g. +05:30")
    return int(when.timestamp() * 1000)


def read(lines: Iterable[str], name: str) -> Iterator[Row]:
    """Rows in file order from CSV or JSON lines, told apart by the first character."""
    it = iter(lines)
    first = next(it, "")
    chained = itertools.chain([first], it)
    if first.lstrip().startswith("{"):
        return _json_rows(chained, name)
    return _csv_rows(csv.DictReader(chained), name) if first else iter(())


def _csv_rows(reader: csv.DictReader[str], name: str) -> Iterator[Row]:
    missing = {"ts", "symbol", "ltp"} - set(reader.fieldnames or [])
    if missing:
        raise RecordedError(f"{name}: header lacks {', '.join(sorted(missing))} "
                            "(expected ts,symbol,ltp[,volume][,pc])")
    for row in reader:
        try:
            volume, pc = (row.get("volume") or "").strip(), (row.get("pc") or "").strip()
            yield _row(parse_ts(row["ts"]), row["symbol"].strip(), float(row["ltp"]),
                       int(volume) if volume else None, float(pc) if pc else None)
        except (TypeError, ValueError) as exc:
            raise RecordedError(f"{name}:{reader.line_num}: {exc}") from None


def _json_rows(lines: Iterable[str], name: str) -> Iterator[Row]:
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = orjson.loads(line)
            pc, vol = d.get("pc"), d.get("vol")
            yield _row(int(d["ts"]), str(d["sym"]), float(d["ltp"]),
                       None if vol is None else int(vol), None if pc is None else float(pc))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RecordedError(f"{name}:{n}: not a tick ({type(exc).__name__}: {exc})") from None


def _row(ts_ms: int, symbol: str, ltp: float, volume: int | None, pc: float | None) -> Row:
    if not ltp > 0:
        raise ValueError(f"ltp must be positive, got {ltp!r}")
    return Row(ts_ms, symbol, ltp, volume, pc)
