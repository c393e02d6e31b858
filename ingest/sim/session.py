"""What every simulator client session shares, whatever protocol it speaks: market steps
arrive through a bounded queue, and one task sends while the session reads commands."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Generic, TypeVar

from websockets.asyncio.server import ServerConnection

SESSION_QUEUE = 50  # market steps a slow client may lag before steps are dropped for it

# A step's traded instruments: a list of indices for Upstox, a numpy array for Kite.
StepT = TypeVar("StepT")


class StepSession(ABC, Generic[StepT]):
    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.steps: asyncio.Queue[StepT] = asyncio.Queue(SESSION_QUEUE)

    def notify(self, indices: StepT) -> None:
        """Hand over one market step's traded instruments without ever waiting."""
        if self.steps.full():
            self.steps.get_nowait()  # a slow client loses the oldest step, never stalls others
        self.steps.put_nowait(indices)

    async def serve(self, name: str) -> None:
        """Send steps while reading the client's commands, until it goes."""
        async with asyncio.TaskGroup() as tg:
            sender = tg.create_task(self._send_loop(), name=name)
            try:
                await self._receive_loop()
            finally:
                sender.cancel()

    @abstractmethod
    async def _send_loop(self) -> None: ...

    @abstractmethod
    async def _receive_loop(self) -> None: ...
