"""Reading /events from a test the way a browser does."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from httpx_sse import ServerSentEvent, connect_sse

READ_TIMEOUT_S = 5.0


def next_event(events: Iterator[ServerSentEvent], kind: str) -> ServerSentEvent:
    """The next event of one type, skipping others (quotes, cursor updates)."""
    for event in events:
        if event.event == kind:
            return event
    raise AssertionError(f"stream ended before a {kind!r} event")


@contextmanager
def stream(client: httpx.Client, headers: dict[str, str] | None = None,
           params: dict[str, str] | None = None) -> Iterator[Iterator[ServerSentEvent]]:
    """Open /events and wait for its first message, so later writes come after its cursor."""
    with connect_sse(client, "GET", "/events", headers=dict(headers or {}),
                     params=params) as source:
        assert source.response.status_code == 200
        events = source.iter_sse()
        assert next(events).retry is not None
        yield events
