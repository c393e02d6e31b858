"""Run a feed supervisor (``UpstoxFeed``, ``KiteFeed``) with its tick writer in a thread of the
test process, against real servers and a real Redis, so that a test can give it a clock and
read its live counters; and a scripted HTTP server to stand in front of a real endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import io
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

import redis.asyncio as aredis

from ingest.settings import IngestSettings
from ingest.writer import TickWriter
from proto import bus
from proto.runtime import Stats


class Feed(Protocol):
    async def run(self) -> None: ...


FeedFactory = Callable[[IngestSettings, aredis.Redis, Stats, TickWriter], Feed]


@contextlib.contextmanager
def running_feed(settings: IngestSettings, make: FeedFactory,
                 shards: int = 1) -> Iterator[Stats]:
    """The feed ``make`` builds, running until the block ends; its Stats (read-only here)."""
    stats = Stats("ingest-test")
    loop = asyncio.new_event_loop()
    failure: list[BaseException] = []

    async def main() -> None:
        r = bus.aconnect(settings.redis_url)  # as ingest does (see bus.aconnect on timeouts)
        writer = TickWriter(r, stats, shards=shards, batch_max=settings.batch_max,
                            flush_ms=settings.flush_ms, queue_max_ticks=settings.queue_max_ticks)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(writer.run())
                tg.create_task(make(settings, r, stats, writer).run())
        finally:
            await r.aclose()

    tasks: list[asyncio.Task[None]] = []
    started = threading.Event()

    def thread_main() -> None:
        task = loop.create_task(main())
        tasks.append(task)
        started.set()
        try:
            loop.run_until_complete(task)
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # reported to the test below
            failure.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=thread_main, name="feed-under-test", daemon=True)
    thread.start()
    try:
        yield stats
    finally:
        started.wait(5)
        with contextlib.suppress(RuntimeError):  # the loop already closed: the feed failed
            loop.call_soon_threadsafe(tasks[0].cancel)
        thread.join(15)
        assert not thread.is_alive(), f"the feed did not stop:\n{stuck(loop, thread)}"
    if failure:
        raise AssertionError(f"the feed failed: {failure[0]!r}") from failure[0]


def stuck(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> str:
    """Where a feed that ignored its cancellation is: the thread's stack and each task's."""
    frame = sys._current_frames().get(thread.ident or 0)
    lines = ["thread:", *traceback.format_stack(frame)] if frame else ["thread: gone"]
    try:
        tasks = list(asyncio.all_tasks(loop))
    except RuntimeError:  # the set changed under us: the loop is still running
        tasks = []
    for task in tasks:
        out = io.StringIO()
        task.print_stack(limit=8, file=out)
        lines.append(out.getvalue())
    return "".join(lines)


Answer = Callable[[], tuple[int, bytes]]  # HTTP status and body


@contextlib.contextmanager
def scripted_http(answers: list[Answer]) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server whose n-th GET gets ``answers[n]`` (the last one repeats); its base URL
    and the log of requested paths."""
    requests_seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            n = len(requests_seen)
            requests_seen.append(self.path)
            status, body = answers[min(n, len(answers) - 1)]()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="scripted-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests_seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
