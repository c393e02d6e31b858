"""The stormalert command's admin verbs against a real Redis: clear one-line errors, nothing
stored on bad input."""

import os
import subprocess
import sys

import orjson
import pytest

from proto import keys, store
from tests.helpers import ROOT


def cli(redis_url, *args, stdin=""):
    env = {**os.environ, "STORMALERT_REDIS_URL": redis_url}
    return subprocess.run([sys.executable, "-m", "deploy", *args], input=stdin, env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def master(r):
    r.hset(keys.INSTRUMENTS, "NSE:INFY", orjson.dumps({"tok": "408065", "src": "sim"}))
    return r


def test_user_rule_lifecycle(master, redis_url):
    assert cli(redis_url, "user", "add", "alice", stdin="a long password\n").returncode == 0
    assert store.check_password(master, "alice", "a long password")
    out = cli(redis_url, "user", "channel", "alice", "json://127.0.0.1:9/hook")
    assert out.returncode == 0 and "added to alice" in out.stdout
    rule = '{"symbol": "NSE:INFY", "kind": "cross_above", "params": {"level": 1500}}'
    added = cli(redis_url, "rule", "add", "--user", "alice", "--json", rule)
    assert added.returncode == 0, added.stderr
    rule_id = added.stdout.strip()
    listed = cli(redis_url, "rule", "list", "--user", "alice")
    assert rule_id in listed.stdout and "cross_above" in listed.stdout
    assert cli(redis_url, "rule", "rm", rule_id).returncode == 0
    assert store.list_rules(master, "alice") == []
    changes = [f["op"] for _id, f in master.xrange(keys.RULE_CHANGES)]
    assert changes == ["put", "rm"]


@pytest.mark.parametrize(("rule", "message"), [
    ("{not json", "rule is not valid JSON"),
    ('{"symbol": "NSE:INFY", "kind": "nope"}', "kind: unknown kind 'nope'"),
    ('{"symbol": "NSE:NOPE", "kind": "cross_above", "params": {"level": 1}}',
     "unknown symbol 'NSE:NOPE'"),
    ('{"symbol": "NSE:INFY", "kind": "window_pct", "params": {"pct": 1, "window_s": -5}}',
     "params.window_s: window_s must be a finite number > 0"),
    ('{"symbol": "NSE:INFY", "kind": "cross_above", "params": {}}', "params.level: Field required"),
    ('{"symbol": "NSE:INFY", "kind": "cross_above", "params": {"level": 1}, "extra": 1}',
     "extra: Extra inputs are not permitted"),
])
def test_bad_rules_get_one_line_errors_and_store_nothing(master, redis_url, rule, message):
    store.add_user(master, "bob", "a long password")
    out = cli(redis_url, "rule", "add", "--user", "bob", "--json", rule)
    assert out.returncode == 1
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert master.hlen(keys.RULES) == 0 and not master.exists(keys.RULE_CHANGES)


def test_bad_user_and_channel_input(master, redis_url):
    assert "unknown user 'ghost'" in cli(
        redis_url, "rule", "add", "--user", "ghost", "--json",
        '{"symbol": "NSE:INFY", "kind": "cross_above", "params": {"level": 1}}').stderr
    assert "at least 8" in cli(redis_url, "user", "add", "carol", stdin="short\n").stderr
    store.add_user(master, "carol", "a long password")
    assert "already exists" in cli(redis_url, "user", "add", "carol", stdin="x" * 9).stderr
    bad = cli(redis_url, "user", "channel", "carol", "nonsense://secret-token@host")
    assert bad.returncode == 1 and "secret-token" not in bad.stderr
    assert store.list_channels(master, "carol") == []


def test_unreachable_redis():
    out = cli("redis://127.0.0.1:1/0", "rule", "list")
    assert out.returncode == 1
    assert "cannot reach Redis" in out.stderr and "Traceback" not in out.stderr


def test_status_reports_streams_and_latency(master, redis_url):
    master.xadd(keys.ALERTS, {"id": "a", "rule": "r", "user": "u", "sym": "NSE:INFY",
                              "kind": "cross_above", "ltp": "1", "ts": "1", "rx": "1000",
                              "at": "3000", "msg": "m"})
    out = cli(redis_url, "status")
    assert out.returncode == 0
    assert "sa:alerts" in out.stdout and "p50=2.00 ms" in out.stdout
    data = orjson.loads(cli(redis_url, "status", "--json").stdout)
    assert data["streams"]["sa:alerts"]["length"] == 1


def test_status_shows_a_feed_that_needs_login(master, redis_url):
    master.hset(keys.feed_state("kite"), mapping={"state": "needs_login", "since": "1",
                                                  "reason": "403 TokenException"})
    out = cli(redis_url, "status")
    assert "Feed kite: needs_login" in out.stdout and "log in to the broker" in out.stdout
