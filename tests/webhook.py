"""A real loopback webhook receiver that records every POST, shared by the notify tests and
the fault suite, and the kill -9 of a notifier timed while its sends are held at the
receiver's gate (the one moment a receiver may rightly see a message twice)."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import orjson
import redis

from notify.policy import DIGEST_REF
from proto import keys
from tests.helpers import wait_for


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float
    held: bool = False  # arrived while the gate was closed: answered only once it opened
    answered: bool = False  # the whole answer was written

    def alert_id(self) -> str:
        """The alert id in the message's dashboard link (its last line), or a digest's id
        from its ``Digest id:`` line (a digest links to the dashboard's alert list)."""
        message = str(self.body.get("message", ""))
        _head, sep, alert_id = message.rsplit("\n", 1)[-1].partition("/alerts/")
        if sep:
            return alert_id
        refs = [line.removeprefix(DIGEST_REF) for line in message.splitlines()
                if line.startswith(DIGEST_REF)]
        assert len(refs) == 1, f"no alert link nor digest id in {self.body!r}"
        return refs[0]


@dataclass
class Webhook:
    """Records every POST. Paths starting /fail answer 500; paths starting with one of
    ``slow_prefixes`` (``/slow``) answer after ``slow_s``; /gate answer when ``gate`` is set
    (it is, until a test clears it: ``close_gate``)."""

    port: int = 0
    hits: list[Hit] = field(default_factory=list)
    slow_s: float = 1.0
    slow_prefixes: tuple[str, ...] = ("/slow",)
    lock: threading.Lock = field(default_factory=threading.Lock)
    gate: threading.Event = field(default_factory=threading.Event)
    listener: socket.socket | None = None
    # Connections accepted whose request is not yet a hit (nor dropped), under ``lock``.
    undecided: int = 0

    def close_gate(self) -> None:
        """Hold /gate requests from now on. Under ``lock``, as a hit's ``held`` is decided
        and the hit recorded: a request that found the gate open is in ``hits`` by the
        time this returns, never recorded later as an answer the sender could hear."""
        with self.lock:
            self.gate.clear()

    def drained(self) -> bool:
        """Every request that reached this receiver is in ``hits``: no connection waits to
        be accepted and none accepted is still being read."""
        assert self.listener is not None
        with self.lock:  # accepting a connection counts it under the same lock
            waiting = select.select([self.listener], [], [], 0)[0]
            return not waiting and self.undecided == 0

    def url(self, path: str) -> str:
        return f"json://127.0.0.1:{self.port}{path}"

    def at(self, prefix: str) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if h.path.startswith(prefix)]


@contextlib.contextmanager
def serving_webhook() -> Iterator[Webhook]:
    """A Webhook listening on a free loopback port until the block ends."""
    hook = Webhook()
    hook.gate.set()

    class Handler(BaseHTTPRequestHandler):
        decided = False  # this connection no longer counts in hook.undecided

        def decide(self) -> None:  # call with hook.lock held
            if not self.decided:
                self.decided = True
                hook.undecided -= 1

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = orjson.loads(raw)
            with hook.lock:
                held = self.path.startswith("/gate") and not hook.gate.is_set()
                hit = Hit(self.path, dict(self.headers), body, time.monotonic(), held)
                hook.hits.append(hit)
                self.decide()
            if self.path.startswith(hook.slow_prefixes):
                time.sleep(hook.slow_s)
            if held:
                hook.gate.wait()
            # Telegram's and WhatsApp's plugins read a JSON answer.
            answer = b'{"ok": true, "result": {}, "messages": [{"id": "m1"}]}'
            try:
                self.send_response(500 if self.path.startswith("/fail") else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                self.wfile.flush()
                hit.answered = True
            except OSError:  # a held request whose sender was killed meanwhile
                self.close_connection = True

        def finish(self) -> None:
            try:
                super().finish()
            finally:
                with hook.lock:  # a request that never became a hit (no body, not a POST)
                    self.decide()

        def log_message(self, *_args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        # socketserver's backlog of 5 drops the SYNs of a burst of new connections, which
        # then arrive over seconds of TCP retransmits instead of at once.
        request_queue_size = 256
        daemon_threads = True

        def get_request(self) -> tuple[socket.socket, Any]:
            with hook.lock:  # see Webhook.drained
                accepted = self.socket.accept()
                hook.undecided += 1
            return accepted

    server = Server(("127.0.0.1", 0), Handler)
    hook.port = server.server_address[1]
    hook.listener = server.socket
    thread = threading.Thread(target=server.serve_forever, name="webhook", daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        hook.gate.set()
        server.shutdown()
        server.server_close()


class Killable(Protocol):
    def kill(self) -> None: ...


def kill_at_the_gate(webhook: Webhook, proc: Killable, r: redis.Redis,
                     cids: dict[str, str], after_hits: int = 0,
                     held: Callable[[Hit], bool] = lambda _hit: True) -> None:
    """kill -9 ``proc`` while its sends are piled up at the webhook's closed gate.

    ``cids``: the channel id of each gated path. Before the kill, every request that got
    through the gate has been answered and its delivery record says ``sent``, so the sender
    knows of it; requests held at the gate are answered only after the kill, to a dead
    sender, which therefore never learned they arrived: the one case where a receiver may
    see a message twice, which no sender can avoid. Tests count held hits apart.
    The kill waits for ``after_hits`` requests, then for a held one, arrived since the gate
    closed, that ``held`` accepts. The gate opens again only once every request the dead
    sender had on its way (in the listen queue, or accepted and not yet read: a loaded
    machine keeps some there for a while) is recorded, held: opened earlier, those would
    count as answered to a live sender, though none heard the answer."""
    wait_for(lambda: len(webhook.hits) >= after_hits, timeout_s=30, what="sends before kill")
    webhook.close_gate()
    with webhook.lock:
        closed_at = len(webhook.hits)

    def held_since_closed() -> bool:
        with webhook.lock:
            return any(h.held and held(h) for h in webhook.hits[closed_at:])

    wait_for(held_since_closed, timeout_s=30, what="sends held at the gate")

    def known_to_sender(hit: Hit) -> bool:
        raw = r.hget(keys.delivery(hit.alert_id()), cids[hit.path])
        return hit.answered and raw is not None and orjson.loads(raw)["status"] == "sent"  # type: ignore[arg-type]

    def unknown() -> list[str]:
        return [f"{h.path} {h.alert_id()} answered={h.answered}"
                for h in webhook.at("/gate") if not (h.held or known_to_sender(h))]

    try:
        wait_for(lambda: not unknown(), timeout_s=30,
                 what="every answered send recorded by the sender")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; not recorded: {unknown()[:10]}") from None
    proc.kill()
    # Killed, it writes nothing more, and loopback delivers a write within the writing call:
    # each request it made is now in the listen queue or on an accepted connection.
    wait_for(webhook.drained, timeout_s=30, what="the killed sender's requests recorded")
    webhook.gate.set()


def answered(webhook: Webhook, prefix: str) -> Counter[str]:
    """Alert ids of the requests to ``prefix`` answered to a live sender, with counts."""
    return Counter(h.alert_id() for h in webhook.at(prefix) if not h.held)
