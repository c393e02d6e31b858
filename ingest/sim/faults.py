"""Fault knobs for the Kite ticker: drop every connection every S seconds (the TCP connection
is aborted, no close frame), stall every connection open at that moment for a while (the
socket stays open but carries nothing, not even heartbeats), and a broken binary frame after
every N data frames."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from ingest.sim.connection import SimConnection

log = logging.getLogger("stormalert.sim")


@dataclass(frozen=True, slots=True)
class FaultConfig:
    drop_every_s: float | None = None
    stall_every_s: float | None = None
    stall_for_s: float = 3.0
    malformed_every: int | None = None

    @property
    def any(self) -> bool:
        return bool(self.drop_every_s or self.stall_every_s or self.malformed_every)


class Faults:
    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self._connections: weakref.WeakSet[SimConnection] = weakref.WeakSet()

    def attach(self, conn: object) -> None:
        """Put a ticker connection under the knobs (only ``SimConnection`` has them)."""
        if not isinstance(conn, SimConnection):
            return
        conn.corrupt_every = self.config.malformed_every or 0
        self._connections.add(conn)

    async def run(self) -> None:
        """Drive the timed faults until cancelled."""
        async with asyncio.TaskGroup() as tg:
            if self.config.drop_every_s:
                tg.create_task(self._every(self.config.drop_every_s, self._drop),
                               name="sim-fault-drop")
            if self.config.stall_every_s:
                tg.create_task(self._every(self.config.stall_every_s, self._stall),
                               name="sim-fault-stall")

    @staticmethod
    async def _every(period_s: float, action: Callable[[], None]) -> None:
        while True:
            await asyncio.sleep(period_s)
            action()

    def _drop(self) -> None:
        conns = list(self._connections)
        for conn in conns:
            conn.transport.abort()
        log.info("fault: dropped %d ticker connection(s)", len(conns))

    def _stall(self) -> None:
        conns = list(self._connections)
        until = asyncio.get_running_loop().time() + self.config.stall_for_s
        for conn in conns:
            conn.stalled_until = until
        log.info("fault: stalled %d ticker connection(s) for %.1f s", len(conns),
                 self.config.stall_for_s)
