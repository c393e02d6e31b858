"""``--replay FILE.csv``: play recorded ticks instead of the random walk.

The CSV is the replay format (header ``ts,symbol,ltp[,volume][,pc]``; ``ts`` in epoch ms or
ISO-8601 with an offset). Rows play in file order at the recorded pace divided by ``speed``
(0: as fast as clients take them), for the symbols in the universe; others are skipped and
counted. Playback starts once a client has subscribed (plus a short settle, so its mode
messages land first), and every row reaches every client: before a symbol changes again, the
previous frames have been built for all sessions.
"""

from __future__ import annotations

import asyncio
import csv
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

log = logging.getLogger("stormalert.sim")

SETTLE_S = 0.5
POLL_S = 0.01


class ReplayFileError(ValueError):
    """A replay file that cannot be read; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class ReplayRow:
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


def read_rows(path: Path) -> list[ReplayRow]:
    try:
        with path.open(newline="") as stream:
            return list(_rows(csv.DictReader(stream), str(path)))
    except OSError as exc:
        raise ReplayFileError(f"cannot read {path}: {exc.strerror or exc}") from None


def _rows(reader: csv.DictReader[str], name: str) -> Iterator[ReplayRow]:
    missing = {"ts", "symbol", "ltp"} - set(reader.fieldnames or [])
    if missing:
        raise ReplayFileError(f"{name}: header lacks {', '.join(sorted(missing))} "
                              "(expected ts,symbol,ltp[,volume][,pc])")
    for row in reader:
        try:
            volume, pc = (row.get("volume") or "").strip(), (row.get("pc") or "").strip()
            ltp = float(row["ltp"])
            if not ltp > 0:
                raise ValueError(f"ltp must be positive, got {row['ltp']!r}")
            yield ReplayRow(parse_ts(row["ts"]), row["symbol"].strip(), ltp,
                            int(volume) if volume else None, float(pc) if pc else None)
        except (TypeError, ValueError) as exc:
            raise ReplayFileError(f"{name}:{reader.line_num}: {exc}") from None


def steps(rows: list[ReplayRow]) -> Iterator[list[ReplayRow]]:
    """Rows grouped into steps: consecutive rows with one timestamp and no repeated symbol."""
    group: list[ReplayRow] = []
    for row in rows:
        if group and (row.ts_ms != group[0].ts_ms or any(r.symbol == row.symbol
                                                         for r in group)):
            yield group
            group = []
        group.append(row)
    if group:
        yield group


class Stage(Protocol):
    """What the replay needs from the simulator."""

    def subscribed(self) -> bool: ...
    def pending(self) -> bool: ...
    def play(self, rows: list[ReplayRow]) -> None: ...


async def replay(rows: list[ReplayRow], stage: Stage, speed: float,
                 clock: Callable[[], float] | None = None) -> None:
    """Play every row onto the stage; returns at the end of the file."""
    while not stage.subscribed():
        await asyncio.sleep(POLL_S)
    await asyncio.sleep(SETTLE_S)
    now = clock or asyncio.get_running_loop().time
    started, first_ms = now(), rows[0].ts_ms if rows else 0
    played = 0
    for group in steps(rows):
        if speed > 0:
            due = started + (group[0].ts_ms - first_ms) / 1000 / speed
            await asyncio.sleep(max(due - now(), 0.0))
        while stage.pending():
            await asyncio.sleep(POLL_S / 10)
        stage.play(group)
        played += len(group)
    while stage.pending():
        await asyncio.sleep(POLL_S)
    log.info("replay finished: %d ticks played", played)
