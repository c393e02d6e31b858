"""A failover behind one address (a Kubernetes Service, a DNS name, a proxy): the server a
client is connected to is demoted to a replica and the address now leads to the promoted one.
A process that waits out READONLY (``bus.wait_out``) must then reach the new primary instead
of asking the replica on its old connections forever."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from deploy.embedded_redis import EmbeddedRedis, free_port
from proto import bus


class Forwarder:
    """A TCP address whose new connections go to ``target`` (a port), changeable at any time;
    connections already open stay with the server they reached."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[EmbeddedRedis, EmbeddedRedis]]:
    a = EmbeddedRedis(tmp_path / "a", appendonly=False).start()
    b = EmbeddedRedis(tmp_path / "b", appendonly=False).start()
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def fail_over(old: EmbeddedRedis, new: EmbeddedRedis, forwarder: Forwarder) -> None:
    redis.Redis(port=new.port).replicaof("NO", "ONE")
    redis.Redis(port=old.port).replicaof("127.0.0.1", new.port)
    forwarder.target = new.port


def test_wait_out_reconnects_after_readonly(two_servers: tuple[EmbeddedRedis, EmbeddedRedis]
                                            ) -> None:
    old, new = two_servers
    forwarder = Forwarder(old.port)
    r = redis.Redis(port=forwarder.port, decode_responses=True)
    try:
        r.set("k", "before")
        fail_over(old, new, forwarder)
        with pytest.raises(bus.TRANSIENT_ERRORS) as refused:
            r.set("k", "after")
        assert isinstance(refused.value, redis.exceptions.ReadOnlyError)
        with pytest.raises(redis.exceptions.ReadOnlyError):  # the old connection stays put
            r.set("k", "after")
        bus.wait_out(r, refused.value)
        r.set("k", "after")
        assert redis.Redis(port=new.port, decode_responses=True).get("k") == "after"
    finally:
        r.close()
        forwarder.close()


def test_wait_out_keeps_connections_on_other_errors(r: redis.Redis) -> None:
    before = r.client_id()
    bus.wait_out(r, redis.exceptions.OutOfMemoryError("OOM"))
    assert r.client_id() == before
