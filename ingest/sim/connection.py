"""The simulator's server connection: websockets' own, plus two things it lacks.

1. REST requests with a body. websockets parses handshake requests only and rejects a
   ``Content-Length``; ``POST /session/token`` carries a form body. The first request's body
   is taken off the wire before websockets parses the head, and kept in ``request_body``
   for ``process_request``.
2. Fault injection on the Kite ticker (see ``ingest.sim.faults``): a connection can be
   stalled (frames silently not sent) and its frames corrupted.
"""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.asyncio.server import ServerConnection

MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024
_HEAD_END = b"\r\n\r\n"


def content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                return int(value.strip())
            except ValueError:
                return 0
    return 0


def without_content_length(head: bytes) -> bytes:
    lines = head[:-len(_HEAD_END)].split(b"\r\n")
    kept = [line for line in lines
            if line.partition(b":")[0].strip().lower() != b"content-length"]
    return b"\r\n".join(kept) + _HEAD_END


class SimConnection(ServerConnection):
    request_body: bytes = b""
    stalled_until: float = 0.0  # loop time; frames before it are not sent
    corrupt_every: int = 0  # send a broken copy after every N-th data frame; 0: never
    frames_sent: int = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._head: bytearray | None = bytearray()
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        head = self._head
        if head is None:
            super().data_received(data)
            return
        head += data
        end = head.find(_HEAD_END)
        if end < 0 and len(head) <= MAX_HEAD:
            return
        if end < 0:
            self._release(bytes(head))  # let websockets reject the oversized head
            return
        end += len(_HEAD_END)
        length = content_length(bytes(head[:end]))
        if length <= 0 or length > MAX_BODY:
            self._release(bytes(head))
            return
        if len(head) < end + length:
            return
        self.request_body = bytes(head[end:end + length])
        self._release(without_content_length(bytes(head[:end])) + bytes(head[end + length:]))

    def _release(self, data: bytes) -> None:
        self._head = None
        super().data_received(data)

    async def send(self, message: Any, *, text: bool | None = None) -> None:
        if self.stalled_until and isinstance(message, bytes | bytearray):
            if self.loop.time() < self.stalled_until:
                return
            self.stalled_until = 0.0
        await super().send(message, text=text)
        if self.corrupt_every and isinstance(message, bytes | bytearray) and len(message) > 1:
            self.frames_sent += 1
            if self.frames_sent % self.corrupt_every == 0:
                await super().send(broken_copy(bytes(message)))


def broken_copy(frame: bytes) -> bytes:
    """The frame cut short: its header still promises every packet, so no decoder can read it
    (and at two bytes or more it is never mistaken for a heartbeat)."""
    return frame[:max(2, len(frame) // 2)]
