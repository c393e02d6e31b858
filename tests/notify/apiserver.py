"""A loopback HTTP server standing in for a service's API (Telegram, WhatsApp Cloud API,
Twilio, a webhook): records every request whole and answers from a per-path script.

Unlike the conftest ``webhook`` it speaks HTTP/1.1 keep-alive and has a deep accept
backlog, so a burst of concurrent connections is not delayed by SYN retries (the default
backlog of 5 made the sixth of twelve simultaneous connects wait one second).
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

OK_BODY = orjson.dumps({"ok": True, "result": {"message_id": 1}, "messages": [{"id": "m1"}],
                        "sid": "SM1"})


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float
    peer_port: int  # the client's port: one per connection

    def json(self) -> Any:
        return orjson.loads(self.body)

    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode(), keep_blank_values=True)


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = OK_BODY
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0
    chunked: bool = False  # body framed by Transfer-Encoding: chunked, in two chunks


@dataclass
class ApiServer:
    port: int = 0
    requests: list[Request] = field(default_factory=list)
    # path prefix -> answers given in order to requests under it (then 200 OK_BODY)
    script: dict[str, list[Answer]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    idle_timeout_s: float | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def under(self, prefix: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path.startswith(prefix)]

    def answer_for(self, path: str) -> Answer:
        with self.lock:
            for prefix, answers in self.script.items():
                if path.startswith(prefix) and answers:
                    return answers.pop(0)
        return Answer()

    def wait_for(self, prefix: str, count: int, timeout_s: float = 10.0) -> list[Request]:
        deadline = time.monotonic() + timeout_s
        while len(hits := self.under(prefix)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(hits)} of {count} requests under {prefix}")
            time.sleep(0.01)
        return hits


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def _handler(api: ApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = api.idle_timeout_s  # a kept connection idle this long is closed

        def _any(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            split = urlsplit(self.path)
            with api.lock:
                api.requests.append(Request(self.command, split.path,
                                            parse_qs(split.query, keep_blank_values=True),
                                            dict(self.headers), body, time.monotonic(),
                                            self.client_address[1]))
            answer = api.answer_for(split.path)
            time.sleep(answer.delay_s)
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            if answer.chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(len(answer.body)))
            for name, value in answer.headers:
                self.send_header(name, value)
            self.end_headers()
            if not answer.chunked:
                self.wfile.write(answer.body)
                return
            half = len(answer.body) // 2
            for part in (answer.body[:half], answer.body[half:], b""):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any

        def log_message(self, *_args: Any) -> None:
            pass

    return Handler


@contextmanager
def serving(idle_timeout_s: float | None = None,
            tls: ssl.SSLContext | None = None) -> Iterator[ApiServer]:
    """An ApiServer on a free loopback port for the duration of the block (HTTPS with
    ``tls``, a server-side context)."""
    server_state = ApiServer(idle_timeout_s=idle_timeout_s)
    server = _Server(("127.0.0.1", 0), _handler(server_state))
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server_state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="api", daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        server.shutdown()
        server.server_close()
