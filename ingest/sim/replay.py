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
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from proto import recorded

log = logging.getLogger("stormalert.sim")

SETTLE_S = 0.5
POLL_S = 0.01


ReplayFileError = recorded.RecordedError
ReplayRow = recorded.Row


def read_rows(path: Path) -> list[ReplayRow]:
    try:
        with path.open(newline="") as stream:
            return list(recorded.read(stream, str(path)))
    except OSError as exc:
        raise ReplayFileError(f"cannot read {path}: {exc.strerror or exc}") from None


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
