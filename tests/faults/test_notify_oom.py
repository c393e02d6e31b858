"""Redis refuses writes (maxmemory, noeviction) just as a message goes out: the channel has
taken it, but the notifier cannot record that it did. Once Redis takes writes again the
record must say ``sent``, and the channel must not get the message a second time, however
long the refusal lasted (here longer than the send's lease, notify_send_timeout_s + 2 s)."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import redis

from proto import keys
from tests.helpers import spawn, stop, wait_for
from tests.notify.conftest import FAST_ENV, make_alert, make_user, publish, settled
from tests.webhook import serving_webhook

REFUSAL_S = 8.0  # FAST_ENV's send timeout is 2 s: the lease runs out after 4 s


def test_sent_while_redis_refuses_writes_is_sent_once(r: redis.Redis, redis_url: str,
                                                      tmp_path: Path) -> None:
    with serving_webhook() as hook:
        cid = make_user(r, "meera", {hook.url("/gate/meera"): "default"})[
            hook.url("/gate/meera")]
        notifier = spawn(["notify"], redis_url, tmp_path / "notify.log",
                         env={**FAST_ENV, "STORMALERT_NOTIFY_MAX_PER_MINUTE": "0"})
        try:
            hook.gate.clear()
            alert = make_alert("meera")
            publish(r, alert)
            wait_for(lambda: hook.at("/gate"), timeout_s=30, what="the send, held")
            used = int(r.info("memory")["used_memory"])
            r.config_set("maxmemory-policy", "noeviction")
            r.config_set("maxmemory", used // 2)
            try:
                hook.gate.set()  # the channel answers: sent, and Redis refuses the record
                wait_for(lambda: hook.at("/gate")[0].answered, what="the answer")
                time.sleep(REFUSAL_S)
            finally:
                r.config_set("maxmemory", 0)
            wait_for(lambda: settled(r), timeout_s=30, what="the alert acked")
            time.sleep(1.0)
        finally:
            assert stop(notifier) == 0
    record = orjson.loads(r.hget(keys.delivery(alert.id), cid))
    assert record["status"] == "sent"
    assert [h.alert_id() for h in hook.hits] == [alert.id], "sent twice"
