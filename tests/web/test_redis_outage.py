"""The web process rides out a Redis restart: health turns 503 and back, open streams say
so and keep delivering alerts afterwards, with no reconnect needed."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import redis

from deploy.embedded_redis import EmbeddedRedis
from proto import keys
from tests.web.conftest import PASSWORDS, add_alert, login
from tests.web.server import WebServer
from tests.web.sse import READ_TIMEOUT_S, next_event, stream


def crash(server: EmbeddedRedis) -> None:
    """SIGKILL: an outage as abrupt as a crash (and quicker than a clean SHUTDOWN)."""
    if server.proc is not None:
        server.proc.kill()
        server.proc.wait(5)


def test_stream_survives_a_redis_restart(tmp_path: Path,
                                         user_records: dict[str, dict[str, str]]) -> None:
    data_dir = tmp_path / "redis"
    own_redis = EmbeddedRedis(data_dir, appendonly=True).start()
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    client.sadd(keys.USERS, "alice")
    client.hset(keys.user("alice"), mapping=user_records["alice"])
    server = WebServer(own_redis.url, tmp_path).start()
    try:
        with httpx.Client(base_url=server.url, timeout=READ_TIMEOUT_S) as web:
            assert login(web, "alice", PASSWORDS["alice"]).status_code == 303
            with stream(web) as events:
                crash(own_redis)
                assert orjson.loads(next_event(events, "status").data) == {"redis": "down"}
                assert web.get("/healthz").status_code == 503
                own_redis = EmbeddedRedis(data_dir, port=own_redis.port, appendonly=True).start()
                assert orjson.loads(next_event(events, "status").data) == {"redis": "ok"}
                assert web.get("/healthz").status_code == 200
                entry_id = add_alert(client, "alice", "after the restart")
                assert next_event(events, "alert").id == entry_id
    finally:
        server.kill()
        client.close()
        crash(own_redis)

