"""A slow channel with more alerts at once than the notifier has slots: the scenario of the
fault suite's slow channel, at a burst. The notifier holds ``notify_concurrency`` (64)
alerts in flight; before the slow lane, 64 alerts waiting on a channel that takes 10 s a
send stopped every other user's alerts for those 10 s (and for as long as the burst lasted)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import redis

from notify import http11
from tests.helpers import spawn, stop, wait_for
from tests.notify.conftest import FAST_ENV, make_alert, make_user, publish, settled
from tests.webhook import answered, serving_webhook

BURST = 100  # more than the 64 slots
SLOW_S = 10.0
# The burst's users, each with an endpoint of its own on the slow host: one URL path takes at
# most a quarter of its host's connections (notify.http11.PATH_SHARE), so the burst needs
# that many paths to go out at once.
SLOW_USERS = http11.PATH_SHARE
ENV = {**FAST_ENV, "STORMALERT_NOTIFY_SEND_TIMEOUT_S": "15",  # longer than a slow send
       "STORMALERT_NOTIFY_MAX_PER_MINUTE": "0"}


def test_a_burst_on_a_slow_channel_holds_up_no_other_user(r: redis.Redis, redis_url: str,
                                                          tmp_path: Path) -> None:
    # Two receivers: webhooks share keep-alive connections per host (100 by default; the
    # paths of the slow host hold them all here), which would hold up another endpoint of
    # the same host (tests/notify/test_http11.py covers that one).
    with serving_webhook() as hook, serving_webhook() as other:
        hook.slow_s = SLOW_S
        slowpokes = [f"slowpoke{i}" for i in range(SLOW_USERS)]
        for name in slowpokes:
            make_user(r, name, {hook.url(f"/slow/{name}"): "default"})
        make_user(r, "quick", {other.url("/fast/hook"): "default"})
        notifier = spawn(["notify"], redis_url, tmp_path / "notify.log", env=ENV)
        try:
            slow = [make_alert(slowpokes[i % SLOW_USERS]) for i in range(BURST)]
            for alert in slow:
                publish(r, alert)
            wait_for(lambda: len(hook.at("/slow")) >= 64, timeout_s=30,
                     what="the slow channel's sends under way")
            fast = [make_alert("quick") for _ in range(5)]
            published = time.monotonic()
            for alert in fast:
                publish(r, alert)
            wait_for(lambda: len(other.at("/fast")) == len(fast), timeout_s=30,
                     what="the other user's alerts")
            waited_s = time.monotonic() - published
            assert waited_s < 3.0, f"the other user's alerts waited {waited_s:.1f} s"
            wait_for(lambda: settled(r), timeout_s=60, what="every alert delivered and acked")
        finally:
            assert stop(notifier) == 0
    # Each exactly once, the slow ones too.
    assert answered(hook, "/slow") == Counter(a.id for a in slow)
    assert answered(other, "/fast") == Counter(a.id for a in fast)
    assert all(h.at - hook.at("/slow")[0].at < SLOW_S for h in hook.at("/slow")), \
        "the burst went out at once, not 64 at a time"
