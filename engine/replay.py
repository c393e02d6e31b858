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
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import IO, Any

import orjson

from engine.book import Book
from engine.session import Session
from proto import recorded
from proto.rules import Rule, RuleError, parse_rule


class ReplayError(ValueError):
    """Bad replay input; the message names the file and line."""


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


def replay(rules: list[Rule], ticks: Iterator[recorded.Row], out: IO[bytes],
           holidays: frozenset[date] = frozenset()) -> int:
    book = Book(Session(holidays))
    for rule in rules:
        book.put(rule.model_copy(update={"active": True}))
    fired = 0
    for row in ticks:
        for firing in book.on_tick(row.symbol, row.ltp, row.ts_ms, row.pc, row.volume or 0):
            fired += 1
            out.write(orjson.dumps({
                "rule": firing.rule.id, "symbol": row.symbol, "kind": firing.rule.kind,
                "ts": row.ts_ms, "ltp": row.ltp, "ref": firing.ref, "msg": firing.msg,
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
            replay(rules, recorded.read(sys.stdin, "stdin"), sys.stdout.buffer, holidays)
        else:
            with args.ticks.open(newline="") as f:
                replay(rules, recorded.read(f, str(args.ticks)), sys.stdout.buffer, holidays)
    except (ReplayError, recorded.RecordedError, OSError) as exc:
        print(f"stormalert replay: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
