"""A small HTTP/1.1 client on asyncio streams with keep-alive connections per origin, for
webhooks: h11 reads and writes the protocol, this module only pools connections.

Why not httpx: its connection pool (httpcore 1.0) scans every connection for every queued
request; with 64 webhook sends in flight to one host it managed 170-1,300 posts/s on this
2-core machine, under what one apprise thread pool did with a new connection per send.
Plain asyncio streams with h11 do well over 10,000/s, so sending is never the bottleneck.

Scope, on purpose: what webhooks need. HTTP and HTTPS (certificates checked against certifi's
bundle, like requests, or not at all when the URL says so), basic auth, a body of bytes,
redirects followed like requests does (303, and 301/302 of a POST, become a GET without a
body; Authorization dropped when the host changes), answers of any framing h11 understands.
Not proxies, not HTTP/2, not compressed answers (we ask for ``identity``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from dataclasses import dataclass
from urllib.parse import urlencode, urljoin, urlsplit

import certifi
import h11
from requests.utils import requote_uri

MAX_REDIRECTS = 5
MAX_BODY_BYTES = 1 << 20  # an answer's body is read (so the connection can be reused) up to this
READ_CHUNK = 65536
# Of an origin's connections, one URL path (one user's webhook, say) may hold 1/PATH_SHARE at
# once: many users' webhooks share a host (a chat service, an automation platform), and
# without it one endpoint that hangs would take every slot of that host until its requests
# time out, holding up the others' alerts. A quarter still lets one busy endpoint take 25 of
# the default 100 (`bench delivery`, all alerts to one path, 500/s: p50 62 ms, 97 without it).
PATH_SHARE = 4


class HTTPError(Exception):
    """The request could not be made or its answer not read."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a connection goes; connections are pooled per origin."""
    scheme: str
    host: str
    port: int
    verified: bool = True  # an unverified TLS connection never serves a verified request

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.h11 = h11.Connection(our_role=h11.CLIENT)
        self.answered = False  # some bytes of an answer arrived

    def reusable(self) -> bool:
        # A server closing an idle connection shows as EOF here before we write on it.
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()

    async def exchange(self, request: h11.Request, body: bytes) -> tuple[Response, bool]:
        """Send one request and read its answer; True second when the connection can be
        kept."""
        data = self.h11.send(request) or b""
        if body:
            data += self.h11.send(h11.Data(data=body)) or b""
        data += self.h11.send(h11.EndOfMessage()) or b""
        self.writer.write(data)
        head: h11.Response | None = None
        chunks: list[bytes] = []
        size = 0
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                received = await self.reader.read(READ_CHUNK)
                self.answered = self.answered or bool(received)
                self.h11.receive_data(received)
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size <= MAX_BODY_BYTES:
                    chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
        if head is None:
            raise HTTPError("connection closed before an answer")
        response = Response(head.status_code, head.reason.decode("latin-1"),
                            {k.decode().lower(): v.decode("latin-1") for k, v in head.headers},
                            b"".join(chunks))
        keep = (self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE
                and size <= MAX_BODY_BYTES)
        if keep:
            self.h11.start_next_cycle()
        return response, keep


class _PathGate:
    """Requests in flight to one URL path, at most ``limit`` of them at once."""

    __slots__ = ("sem", "users")

    def __init__(self, limit: int) -> None:
        self.sem = asyncio.Semaphore(limit)
        self.users = 0  # holding or waiting: the gate is dropped when none is left


class Client:
    """Keep-alive connections per origin, at most ``max_connections`` open to each, and at
    most ``max_per_path`` (default: a ``PATH_SHARE``th of them, at least 1) taken by requests
    to one URL path."""

    def __init__(self, max_connections: int, max_per_path: int | None = None) -> None:
        self._max = max_connections
        self._per_path = max_per_path or max(1, max_connections // PATH_SHARE)
        self._idle: dict[Origin, list[_Connection]] = {}
        self._slots: dict[Origin, asyncio.Semaphore] = {}
        self._paths: dict[tuple[Origin, str], _PathGate] = {}
        self._tls = {True: ssl.create_default_context(cafile=certifi.where()),
                     False: ssl._create_unverified_context()}  # the URL asked for it (?verify=no)

    async def request(self, method: str, url: str, *, params: dict[str, str] | None = None,
                      headers: dict[str, str] | None = None, body: bytes = b"",
                      auth: tuple[str, str] | None = None, verify: bool = True,
                      follow_redirects: bool = True, timeout_s: float = 10.0) -> Response:
        """One request and its redirects; raises HTTPError, or TimeoutError when connecting
        or the answer takes longer than ``timeout_s`` (each on its own, as requests times
        them: a slow connect does not eat into the server's time to answer)."""
        url = requote_uri(url)
        if params:
            url += ("&" if urlsplit(url).query else "?") + urlencode(params)
        extra = dict(headers or {})
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode("latin-1")).decode()
            extra["Authorization"] = f"Basic {token}"
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._once(method, url, extra, body, verify, timeout_s)
            location = response.headers.get("location")
            if not (follow_redirects and location and response.status in
                    (301, 302, 303, 307, 308)):
                return response
            method, url, body, extra = _redirected(method, url, location, response.status,
                                                   body, extra)
        raise HTTPError(f"more than {MAX_REDIRECTS} redirects")

    async def _once(self, method: str, url: str, headers: dict[str, str], body: bytes,
                    verify: bool, timeout_s: float) -> Response:
        split = urlsplit(url)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise HTTPError(f"cannot send to a {split.scheme or 'relative'} URL")
        https = split.scheme == "https"
        origin = Origin(split.scheme, split.hostname, split.port or (443 if https else 80),
                        verified=verify or not https)
        target = (split.path or "/") + (f"?{split.query}" if split.query else "")
        all_headers = [("Host", origin.host_header), ("Accept", "*/*"),
                       ("Accept-Encoding", "identity"), *headers.items()]
        if body or method in ("POST", "PUT", "PATCH"):
            all_headers.append(("Content-Length", str(len(body))))
        request = h11.Request(method=method, target=target, headers=all_headers)
        slots = self._slots.setdefault(origin, asyncio.Semaphore(self._max))
        path_key = (origin, split.path or "/")
        gate = self._paths.get(path_key)
        if gate is None:
            gate = self._paths[path_key] = _PathGate(self._per_path)
        gate.users += 1
        try:
            async with gate.sem, slots:
                return await self._on_a_connection(origin, request, body, timeout_s)
        finally:
            gate.users -= 1
            if not gate.users:
                del self._paths[path_key]

    async def _on_a_connection(self, origin: Origin, request: h11.Request, body: bytes,
                               timeout_s: float) -> Response:
        conn = self._reuse(origin)
        fresh = conn is None
        if conn is None:
            async with asyncio.timeout(timeout_s):
                conn = await self._connect(origin)
        try:
            async with asyncio.timeout(timeout_s):
                response, keep = await conn.exchange(request, body)
        except TimeoutError:
            conn.close()  # the server may have the request: never sent again from here
            raise
        except (OSError, h11.ProtocolError, HTTPError) as exc:
            conn.close()
            if not fresh and not conn.answered:
                # A kept connection the server dropped meanwhile: once more on a new one.
                return await self._on_a_connection(origin, request, body, timeout_s)
            raise HTTPError(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            conn.close()  # cancelled or timed out mid-exchange: the connection is unusable
            raise
        if keep:
            self._idle.setdefault(origin, []).append(conn)
        else:
            conn.close()
        return response

    def _reuse(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if conn.reusable():
                return conn
            conn.close()
        return None

    async def _connect(self, origin: Origin) -> _Connection:
        tls = self._tls[origin.verified] if origin.scheme == "https" else None
        try:
            reader, writer = await asyncio.open_connection(
                origin.host, origin.port, ssl=tls,
                server_hostname=origin.host if tls else None)
        except OSError as exc:
            raise HTTPError(f"cannot connect: {exc.strerror or exc}") from exc
        return _Connection(reader, writer)

    async def aclose(self) -> None:
        conns = [c for idle in self._idle.values() for c in idle]
        self._idle.clear()
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                await conn.writer.wait_closed()


def _redirected(method: str, url: str, location: str, status: int, body: bytes,
                headers: dict[str, str]) -> tuple[str, str, bytes, dict[str, str]]:
    """The next request of a redirect, as requests makes it."""
    new_url = requote_uri(urljoin(url, location))
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method, body = "GET", b""
        headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    if urlsplit(new_url).hostname != urlsplit(url).hostname:
        headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
    return method, new_url, body, headers
