"""The notification verbs of the stormalert command against a real Redis, a real webhook
receiver and a real notifier: user prefs, channel test, alerts show / list."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import orjson
import pytest
import redis

from proto import keys, store
from tests.helpers import ROOT
from tests.notify.conftest import (  # noqa: F401 - webhook and notifier are fixtures
    NotifierProc,
    Webhook,
    free_port,
    make_alert,
    make_user,
    minute_start_us,
    notifier,
    publish,
    settled,
    wait_until,
    webhook,
)

SECRETS = ("S3cr3tT0ken1", "Pa55w0rdXyz", "K3yInPath9")


def cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STORMALERT_REDIS_URL": redis_url,
           "STORMALERT_NOTIFY_SEND_TIMEOUT_S": "3"}
    return subprocess.run([sys.executable, "-m", "deploy", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_prefs_set_show_clear(r: redis.Redis, redis_url: str) -> None:
    store.add_user(r, "asha", "a long password")
    out = cli(redis_url, "user", "prefs", "asha", "--max-per-minute", "20", "--quiet", "22:00-8:00")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "asha: max_per_minute=20 quiet=22:00-08:00 IST"
    assert r.hgetall(keys.user_prefs("asha")) == {"max_per_minute": "20", "quiet": "22:00-08:00"}
    assert "asha channels=0 max_per_minute=20 quiet=22:00-08:00 IST" in cli(
        redis_url, "user", "list").stdout
    assert cli(redis_url, "user", "prefs", "asha").stdout.strip() == (
        "asha: max_per_minute=20 quiet=22:00-08:00 IST")
    out = cli(redis_url, "user", "prefs", "asha", "--quiet", "off")
    assert out.stdout.strip() == "asha: max_per_minute=20 quiet=off"
    out = cli(redis_url, "user", "prefs", "asha", "--max-per-minute", "default",
              "--quiet", "13:00-14:30")
    assert out.stdout.strip() == "asha: max_per_minute=default quiet=13:00-14:30 IST"
    assert cli(redis_url, "user", "prefs", "asha", "--clear").stdout.strip() == (
        "asha: max_per_minute=default quiet=off")
    assert not r.exists(keys.user_prefs("asha"))


@pytest.mark.parametrize(("args", "message"), [
    (("--quiet", "25:00-08:00"), "bad quiet hours '25:00-08:00': hours 00-23"),
    (("--quiet", "22:00"), "expected HH:MM-HH:MM"),
    (("--quiet", "08:00-08:00"), "start and end are the same time"),
    (("--max-per-minute", "-3"), "bad max per minute -3"),
    (("--max-per-minute", "lots", "--clear"), "bad max per minute 'lots'"),
])
def test_bad_prefs_are_one_line_and_change_nothing(r: redis.Redis, redis_url: str,
                                                   args: tuple[str, ...], message: str) -> None:
    store.add_user(r, "bala", "a long password")
    store.set_prefs(r, "bala", max_per_minute=5, quiet="22:00-08:00")
    out = cli(redis_url, "user", "prefs", "bala", *args)
    assert out.returncode == 1
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert r.hgetall(keys.user_prefs("bala")) == {"max_per_minute": "5", "quiet": "22:00-08:00"}
    assert "unknown user 'ghost'" in cli(redis_url, "user", "prefs", "ghost", "--clear").stderr


def test_channel_test_sends_through_each_channel(
        r: redis.Redis, redis_url: str,
        webhook: Webhook,  # noqa: F811 - the fixture imported above
) -> None:
    good = webhook.url("/hook/ok")
    refused = f"json://127.0.0.1:{free_port()}/hook?token=S3cr3tT0ken1"
    broken = f"json://bob:Pa55w0rdXyz@127.0.0.1:{webhook.port}/fail/K3yInPath9"
    cids = make_user(r, "chitra", {good: "default", refused: "phone", broken: "default"})
    out = cli(redis_url, "user", "channel", "test", "chitra")
    assert out.returncode == 1
    lines = dict(line.split(": ", 1) for line in out.stdout.strip().splitlines())
    assert lines[f"json:{cids[good]} (default)"] == "ok"
    assert lines[f"json:{cids[refused]} (phone)"].startswith("failed: ")
    assert "500" in lines[f"json:{cids[broken]} (default)"]
    for secret in SECRETS:
        assert secret not in out.stdout + out.stderr
    [hit] = webhook.at("/hook/ok")
    assert hit.body["title"] == "StormAlert test message"
    assert f"json:{cids[good]}" in hit.body["message"]

    one = cli(redis_url, "user", "channel", "test", "chitra", "--channel", cids[good])
    assert one.returncode == 0 and one.stdout.strip() == f"json:{cids[good]} (default): ok"
    assert len(webhook.at("/hook/ok")) == 2
    assert r.keys(f"{keys.PREFIX}:dlv:*") == []  # a test message leaves no delivery record
    missing = cli(redis_url, "user", "channel", "test", "chitra", "--channel", "nope")
    assert missing.returncode == 1 and "has no channel 'nope'" in missing.stderr
    store.add_user(r, "dev", "a long password")
    empty = cli(redis_url, "user", "channel", "test", "dev")
    assert empty.returncode == 1 and "has no channels" in empty.stderr
    # A user called "test" can still be given a channel the usual way.
    store.add_user(r, "test", "a long password")
    assert cli(redis_url, "user", "channel", "test", good).returncode == 0
    assert len(store.list_channels(r, "test")) == 1


def test_alerts_show_and_list_the_delivery_log(
        r: redis.Redis, redis_url: str,
        webhook: Webhook,  # noqa: F811 - the fixtures imported above
        notifier: Callable[..., NotifierProc],  # noqa: F811
) -> None:
    good = webhook.url("/hook/ok")
    broken = f"json://bob:Pa55w0rdXyz@127.0.0.1:{webhook.port}/fail/K3yInPath9"
    cids = make_user(r, "devi", {good: "default", broken: "default"})
    store.set_prefs(r, "devi", max_per_minute=1)
    at = minute_start_us(2)
    alerts = [make_alert("devi", at=at), make_alert("devi", at=at + 1)]
    for alert in alerts:
        publish(r, alert)
    proc = notifier(STORMALERT_NOTIFY_DIGEST_GRACE_S="0.2")
    wait_until(lambda: settled(r), timeout_s=30, what="alert, digest and give-ups done")
    assert proc.stop() == 0
    # Read concurrently, either may be the one over the limit.
    [folded] = [a for a in alerts if r.hexists(keys.delivery(a.id), "folded")]
    [first] = [a for a in alerts if a is not folded]

    out = cli(redis_url, "alerts", "show", first.id)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert f"alert {first.id}" in text and "NSE:INFY cross_above" in text
    assert f"json:{cids[good]} (default)  sent  attempts=1  latency=" in text
    assert f"json:{cids[broken]} (default)  failed  attempts=3" in text and "500" in text
    for secret in (*SECRETS, "bob", str(webhook.port)):
        assert secret not in text

    report = orjson.loads(cli(redis_url, "alerts", "show", first.id, "--json").stdout)
    assert report["alert"]["id"] == first.id
    rows = {row["channel"]: row for row in report["deliveries"]}
    assert rows[f"json:{cids[good]}"]["status"] == "sent"
    assert rows[f"json:{cids[good]}"]["latency_ms"] > 0
    assert rows[f"json:{cids[broken]}"]["attempts"] == 3

    digest = f"digest:devi:m{at // 60_000_000}"
    shown = cli(redis_url, "alerts", "show", folded.id).stdout
    assert f"folded into {digest}" in shown
    shown = cli(redis_url, "alerts", "show", digest).stdout
    assert f"digest of 1 alerts: {folded.id}" in shown and "sent" in shown

    listed = cli(redis_url, "alerts", "list", "--user", "devi").stdout.strip().splitlines()
    assert [line.split("\t")[1] for line in listed] == [alerts[1].id, alerts[0].id]  # newest first
    summaries = {line.split("\t")[1]: line.split("\t")[-1] for line in listed}
    assert summaries == {folded.id: f"folded into {digest}", first.id: "failed 1/2, sent 1/2"}
    last = cli(redis_url, "alerts", "list", "--last", "1", "--json").stdout.strip().splitlines()
    assert [orjson.loads(line)["id"] for line in last] == [alerts[1].id]
    nope = cli(redis_url, "alerts", "show", "no-such-alert")
    assert nope.returncode == 1 and "no alert 'no-such-alert'" in nope.stderr


def test_notify_verbs_fail_in_one_line(r: redis.Redis, redis_url: str) -> None:
    for args in (("alerts", "list"), ("alerts", "show", "x")):
        out = cli("redis://127.0.0.1:1/0", *args)
        assert out.returncode == 1
        assert "cannot reach Redis" in out.stderr and "Traceback" not in out.stderr
    ghost = cli(redis_url, "user", "channel", "test", "ghost")
    assert ghost.returncode == 1 and "unknown user 'ghost'" in ghost.stderr
    assert "unknown user 'ghost'" in cli(redis_url, "alerts", "list", "--user", "ghost").stderr
    assert cli(redis_url, "alerts", "list").stdout == ""  # nothing yet, and no error
