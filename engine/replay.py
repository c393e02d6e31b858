"""``python -m engine.replay --ticks FILE.csv --rules FILE.json``: run rules over recorded
ticks with the very same rule book the live shards use; one JSON line per firing on stdout.

CSV header: ``ts,symbol,ltp[,volume][,pc]``; ``ts`` is epoch milliseconds or ISO-8601 with
an offset. JSON lines of ticks (what ``stormalert decode`` prints) are read too, so recorded
feed frames replay through a pipe:
``stormalert decode --feed kite F | stormalert replay --ticks - --rules R``.
Rules: a JSON array of rule objects (or one object, or ``{"rules": [...]}``).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from engine.book import Book
from engine.session import Session
from proto.rules import Rule, RuleError, parse_rule


class ReplayError(ValueError):
    """Bad replay input; the message names the file and line."""


def parse_ts(text: str) -> int:
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError("ISO-8601 time needs an offset, e.g. +05:30")
    return int(when.timestamp() * 1000)


TickRow = tuple[int, str, float, float | None, int]


def read_ticks(stream: IO[str], name: str) -> Iterator[TickRow]:
    """(ts_ms, symbol, ltp, pc, volume) per row, in file order: CSV, or the JSON lines that
    ``stormalert decode`` prints (so recorded feed frames replay through a pipe)."""
    first = stream.read(1)
    lines: Iterator[str] = itertools.chain([first + stream.readline()], stream) if first \
        else iter(())
    if first == "{":
        yield from _json_lines(lines, name)
        return
    reader = csv.DictReader(lines)
    missing = {"ts", "symbol", "ltp"} - set(reader.fieldnames or [])
    if missing:
        raise ReplayError(f"{name}: header lacks {', '.join(sorted(missing))} "
                          "(expected ts,symbol,ltp[,volume][,pc])")
    for row in reader:
        try:
            pc_text = (row.get("pc") or "").strip()
            vol_text = (row.get("volume") or "").strip()
            yield (parse_ts(row["ts"]), row["symbol"].strip(), float(row["ltp"]),
                   float(pc_text) if pc_text else None, int(vol_text) if vol_text else 0)
        except (ValueError, TypeError) as exc:
            raise ReplayError(f"{name}:{reader.line_num}: {exc}") from None


def _json_lines(lines: Iterator[str], name: str) -> Iterator[TickRow]:
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = orjson.loads(line)
            pc = d.get("pc")
            yield (int(d["ts"]), str(d["sym"]), float(d["ltp"]),
                   None if pc is None else float(pc), int(d.get("vol") or 0))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ReplayError(f"{name}:{n}: not a tick ({type(exc).__name__}: {exc})") from None


def load_rules(path: Path) -> list[Rule]:
    try:
        data: Any = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ReplayError(f"{path}: not valid JSON: {exc}") from None
    if isinstance(data, dict):
        data = data.get("rules", [data])
    if not isinstance(data, list):
        raise ReplayError(f"{path}: expected a JSON array of rules")
    rules = []
    for n, item in enumerate(data):
        try:
            rules.append(parse_rule(item))
        except RuleError as exc:
            raise ReplayError(f"{path}: rule #{n}: {exc}") from None
    ids = [rule.id for rule in rules]
    if len(set(ids)) != len(ids):
        raise ReplayError(f"{path}: rule ids must be unique")
    return rules


def replay(rules: list[Rule], ticks: Iterator[TickRow], out: IO[bytes],
           holidays: frozenset[date] = frozenset()) -> int:
    book = Book(Session(holidays))
    for rule in rules:
        book.put(rule.model_copy(update={"active": True}))
    fired = 0
    for ts, sym, ltp, pc, vol in ticks:
        for firing in book.on_tick(sym, ltp, ts, pc, vol):
            fired += 1
            out.write(orjson.dumps({
                "rule": firing.rule.id, "symbol": sym, "kind": firing.rule.kind, "ts": ts,
                "ltp": ltp, "ref": firing.ref, "msg": firing.msg,
            }) + b"\n")
    return fired


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stormalert replay", description=__doc__)
    parser.add_argument("--ticks", required=True, type=Path,
                        help="recorded ticks: CSV, or JSON lines from `stormalert decode`; "
                             "- reads stdin")
    parser.add_argument("--rules", required=True, type=Path, help="JSON file of rules")
    parser.add_argument("--holiday", action="append", default=[], type=date.fromisoformat,
                        metavar="YYYY-MM-DD", help="an exchange holiday (for market-hours rules)")
    args = parser.parse_args(argv)
    try:
        rules = load_rules(args.rules)
        holidays = frozenset(args.holiday)
        if str(args.ticks) == "-":
            replay(rules, read_ticks(sys.stdin, "stdin"), sys.stdout.buffer, holidays)
        else:
            with args.ticks.open(newline="") as f:
                replay(rules, read_ticks(f, str(args.ticks)), sys.stdout.buffer, holidays)
    except (ReplayError, OSError) as exc:
        print(f"stormalert replay: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
