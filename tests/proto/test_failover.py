"""A failover behind one address (a Kubernetes Service, a DNS name, a proxy): the server a
client is connected to is demoted to a replica and the address now leads to the promoted one.
Every client the bus makes must then reach the new primary instead of asking the replica on its
old connections forever."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from deploy.embedded_redis import EmbeddedRedis, free_port
from engine.checkpoint import STATE_FIELD
from engine.checkpointer import Checkpointer, Fenced
from proto import bus, keys


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
    for server in (a, b):  # a replica's full sync starts at once, not 5 s later
        redis.Redis(port=server.port).config_set("repl-diskless-sync-delay", 0)
    redis.Redis(port=b.port).replicaof("127.0.0.1", a.port)  # b follows a until the failover
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def fail_over(old: EmbeddedRedis, new: EmbeddedRedis, forwarder: Forwarder) -> None:
    """Once ``new`` has all of ``old``'s writes: promote it, demote ``old``, move the address."""
    assert redis.Redis(port=old.port).wait(1, 10_000) == 1, "the replica did not catch up"
    redis.Redis(port=new.port).replicaof("NO", "ONE")
    redis.Redis(port=old.port).replicaof("127.0.0.1", new.port)
    forwarder.target = new.port


def test_a_plain_client_keeps_asking_the_demoted_server(
        two_servers: tuple[EmbeddedRedis, EmbeddedRedis]) -> None:
    """The trap the bus clients avoid: redis-py's own client, after the failover."""
    old, new = two_servers
    forwarder = Forwarder(old.port)
    r = redis.Redis(port=forwarder.port, decode_responses=True)
    try:
        r.set("k", "before")
        fail_over(old, new, forwarder)
        for _ in range(3):
            with pytest.raises(redis.exceptions.ReadOnlyError):
                r.set("k", "after")
    finally:
        r.close()
        forwarder.close()


def test_bus_clients_reach_the_new_primary(two_servers: tuple[EmbeddedRedis, EmbeddedRedis]
                                           ) -> None:
    old, new = two_servers
    forwarder = Forwarder(old.port)
    url = f"redis://127.0.0.1:{forwarder.port}/0"
    r, reader = bus.connect(url), bus.connect(url, blocking=True)
    try:
        r.set("k", "before")
        r.xgroup_create("s", "g", id="0", mkstream=True)
        assert reader.xreadgroup("g", "c", {"s": ">"}, count=1) == []
        fail_over(old, new, forwarder)
        new_r = redis.Redis(port=new.port, decode_responses=True)
        r.set("k", "after")  # a command
        assert new_r.get("k") == "after"
        with r.pipeline(transaction=True) as pipe:  # a MULTI (the tick writer's)
            pipe.xadd("s", {"n": "1"})
            pipe.incr("n")
            pipe.execute()
        assert new_r.xlen("s") == 1 and new_r.get("n") == "1"  # applied once
        assert len(reader.xreadgroup("g", "c", {"s": ">"}, count=1)[0][1]) == 1  # a consumer
    finally:
        r.close()
        reader.close()
        forwarder.close()


def test_asyncio_bus_clients_reach_the_new_primary(
        two_servers: tuple[EmbeddedRedis, EmbeddedRedis]) -> None:
    old, new = two_servers
    forwarder = Forwarder(old.port)

    async def main() -> None:
        r = bus.aconnect(f"redis://127.0.0.1:{forwarder.port}/0")
        try:
            await r.set("k", "before")
            fail_over(old, new, forwarder)
            await r.set("k", "after")
            async with r.pipeline(transaction=True) as pipe:
                pipe.xadd("s", {"n": "1"})
                await pipe.execute()
        finally:
            await r.aclose()

    try:
        asyncio.run(main())
        new_r = redis.Redis(port=new.port, decode_responses=True)
        assert new_r.get("k") == "after" and new_r.xlen("s") == 1
    finally:
        forwarder.close()


def test_a_checkpoint_cut_by_the_failover_is_waited_out_not_fenced(
        two_servers: tuple[EmbeddedRedis, EmbeddedRedis]) -> None:
    """A transaction on a watched key that meets READONLY reaches the caller as a WatchError
    (redis-py: the watch went with the connection). Taken for a newer writer, it stopped the
    shard as fenced; it is the failover, to wait out, and the retry writes on the new primary.
    The backtest worker's fenced writes go through the same check."""
    old, new = two_servers
    forwarder = Forwarder(old.port)
    r = bus.connect(f"redis://127.0.0.1:{forwarder.port}/0")
    state, stream = keys.engine_state(0), keys.ticks(0)
    try:
        r.xgroup_create(stream, keys.ENGINE_GROUP, id="0", mkstream=True)
        writer = Checkpointer(r, state, stream, keys.ENGINE_GROUP)
        writer.claim_epoch()
        writer.write(r, b"before", [])
        fail_over(old, new, forwarder)
        with pytest.raises(redis.exceptions.ReadOnlyError):
            writer.write(r, b"after", [])
        writer.write(r, b"after", [])  # the caller's retry, on a new connection
        assert redis.Redis(port=new.port).hget(state, STATE_FIELD) == b"after"
        with pytest.raises(Fenced):  # a newer incarnation still fences it
            Checkpointer(r, state, stream, keys.ENGINE_GROUP).claim_epoch()
            writer.write(r, b"stale", [])
    finally:
        r.close()
        forwarder.close()
