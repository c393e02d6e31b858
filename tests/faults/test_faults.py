"""The fault suite: the whole system running (``stormalert up`` on the simulator, a private
Redis with AOF, a loopback webhook recording every delivery) while one fault after another
hits it. Each scenario covers the ticks written in its own time window (the feed keeps
running across scenarios) and ends with its counts printed and asserted: every alert those
ticks make is in ``sa:alerts`` exactly once and reached each of its user's channels exactly
once, and every process beat its heartbeat again within 5 s of the fault.

What "lost" means: the expected alerts are recomputed from the ticks that reached the tick
streams (``tests.faults.oracle``). A fault that keeps ticks from ever being written (the feed
down or stalled, ingest killed with frames queued, Redis refusing writes) makes no alerts
to lose; ticks are at-most-once by design. An alert of a written tick that is not in
``sa:alerts``, or not delivered to a channel, is lost.

What "duplicate" means: a second ``sa:alerts`` entry for one alert id, or a channel
answering one alert twice to a live sender. When the notifier is killed, the requests it
had in flight are held at the webhook's gate until after the kill (``kill_at_the_gate``):
the receiver took them but the sender never heard back, so they are sent again after the
restart, as any at-least-once sender must. Those are counted apart ("resent after a kill").
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import orjson
import pytest
import redis

from proto import keys
from tests.faults.conftest import SUMMARY
from tests.faults.oracle import Cut, Tally, engine_caught_up, entry_key, stream_ids, tally
from tests.faults.stack import HEALTHY_WITHIN_S, SLOW_PREFIX, Stack
from tests.helpers import alive, wait_for
from tests.webhook import kill_at_the_gate

RESULTS: dict[str, Tally] = {}
LEAD_S = 2.0  # ticks and alerts flowing before each fault
TAIL_S = 2.0  # and after recovery, before the window closes
SETTLE_S = 30.0  # for the window's alerts to be written and delivered (10 s slow sends)
MIN_ALERTS = 5  # a window with fewer says nothing


@dataclass
class Run:
    stack: Stack
    r: redis.Redis
    start: Cut

    def scenario(self, name: str, fault: Callable[[], float]) -> Tally:
        """Let the system run, apply ``fault`` (it returns the recovery time), run on, then
        wait until the window's alerts are all written and delivered (or SETTLE_S passed)
        and count."""
        time.sleep(LEAD_S)
        _exits, log_offset = self.stack.exits()
        recovery_s = fault()
        time.sleep(TAIL_S)
        end = stream_ids(self.r)
        wait_for(lambda: engine_caught_up(self.r, end), timeout_s=SETTLE_S,
                 what=f"the engine to read the window's ticks (logs: {self.stack.logs()})")
        hook, channels = self.stack.hook, self.stack.channels

        def settled() -> Tally | None:
            t = tally(name, self.r, hook, channels, self.start, end)
            return t if not t.lost else None

        with contextlib.suppress(AssertionError):  # the count below says what is missing
            wait_for(settled, timeout_s=SETTLE_S, what="every alert written and delivered")
        time.sleep(0.5)  # a second delivery of the same alert would come now
        result = tally(name, self.r, hook, channels, self.start, end)
        result.recovery_s = recovery_s
        result.exits = self.stack.exits(log_offset)[0]
        RESULTS[name] = result
        SUMMARY.append(result.line())
        print(result.line())
        self.start = end
        return result


def check(t: Tally, killed: str | None = None) -> None:
    """The issue's criteria; and the only process that died is the one killed (if any)."""
    assert t.expected >= MIN_ALERTS, f"too few alerts in the window to tell: {t.line()}"
    assert not t.problems(), f"{t.line()}: {t.problems()}"
    assert t.emitted == t.expected and t.deliveries == t.deliveries_expected, t.line()
    assert t.recovery_s <= HEALTHY_WITHIN_S, t.line()
    assert t.exits == ([f"{killed} (code -9)"] if killed else []), t.line()


@pytest.fixture(scope="module")
def run(stack: Stack) -> Iterator[Run]:
    r = stack.client()
    yield Run(stack, r, {0: "0-0", 1: "0-0"})
    r.close()


def kill_and_wait(stack: Stack, name: str) -> float:
    since = time.time()
    old = stack.kill(name)
    return stack.wait_healthy(since, frozenset({old}))


@pytest.mark.parametrize("process", ["ingest-sim", "engine-1", "web", "backtest"])
def test_kill_9_and_supervisor_restart(run: Run, process: str) -> None:
    check(run.scenario(f"kill -9 {process}", lambda: kill_and_wait(run.stack, process)),
          killed=process)


@dataclass
class Victim:
    """A supervised process to kill -9 at a moment kill_at_the_gate chooses."""

    stack: Stack
    name: str
    pid: int = 0
    killed_at: float = 0.0

    def kill(self) -> None:
        self.killed_at = time.time()
        self.pid = self.stack.kill(self.name)


def test_kill_9_notifier_with_sends_in_flight(run: Run) -> None:
    stack = run.stack
    victim = Victim(stack, "notify")

    def fault() -> float:
        kill_at_the_gate(stack.hook, victim, run.r, {c.path: c.cid for c in stack.channels})
        return stack.wait_healthy(victim.killed_at, frozenset({victim.pid}))

    check(run.scenario("kill -9 notify", fault), killed="notify")


def test_redis_killed_and_restarted_from_its_aof(run: Run) -> None:
    stack = run.stack

    def fault() -> float:
        stack.kill_redis()
        try:
            time.sleep(1.0)  # every process notices
        finally:
            stack.start_redis()
        return stack.wait_healthy(time.time())

    check(run.scenario("Redis kill -9 + restart (AOF)", fault))


def feed_back_s(stack: Stack, r: redis.Redis, since: float, timeout_s: float = 30.0) -> float:
    """Seconds from ``since`` until a tick stream gets a new entry."""
    before = stream_ids(r)
    wait_for(lambda: stream_ids(r) != before, timeout_s=timeout_s,
             what=f"ticks again (logs: {stack.logs()})")
    return time.time() - since


def test_feed_dropped(run: Run) -> None:
    """The simulator is killed (every feed socket drops); the supervisor starts it again and
    ingest reconnects. Ticks it never sent make no alerts; the processes stay healthy."""
    stack = run.stack
    recovered: dict[str, float] = {}

    def fault() -> float:
        old = stack.kill("sim")
        wait_for(lambda: (p := stack.pids().get("sim")) and p != old, timeout_s=10,
                 what="the supervisor to start the simulator again")
        restarted = time.time()
        recovered["feed"] = feed_back_s(stack, run.r, restarted)
        return stack.wait_healthy(restarted)

    t = run.scenario("feed dropped (sim kill -9)", fault)
    SUMMARY.append(f"  ticks again {recovered['feed']:.2f} s after the simulator restarted")
    check(t, killed="sim")
    assert recovered["feed"] <= HEALTHY_WITHIN_S


def test_feed_stalled_past_the_silence_window(run: Run) -> None:
    """SIGSTOP the simulator for twice ingest's silence window: its sockets stay open and
    carry nothing. Ingest must notice, reconnect, and take ticks again after SIGCONT."""
    stack = run.stack
    recovered: dict[str, float] = {}

    def silences() -> int:
        beat = stack.heartbeats(run.r)["ingest-sim"]
        return int(beat["counters"].get("silences", 0))

    def fault() -> float:
        before = silences()
        stopped = time.time()
        stack.kill("sim", signal.SIGSTOP)
        try:
            # STORMALERT_HEARTBEAT_SILENCE_S is 2; ingest beats every 2 s
            wait_for(lambda: silences() > before, timeout_s=10, what="ingest to notice")
            time.sleep(1.0)  # its reconnect attempt meets a process that does not answer
        finally:
            resumed = time.time()
            stack.kill("sim", signal.SIGCONT)
        recovered["stalled"] = resumed - stopped
        recovered["feed"] = feed_back_s(stack, run.r, resumed)
        return stack.wait_healthy(resumed)

    t = run.scenario("feed stalled (sim SIGSTOP)", fault)
    SUMMARY.append(f"  stalled {recovered['stalled']:.1f} s (ingest saw the silence); ticks "
                   f"again {recovered['feed']:.2f} s after SIGCONT")
    check(t)
    assert recovered["feed"] <= HEALTHY_WITHIN_S


OOM = "Redis refuses writes 4 s (OOM)"


def test_redis_refuses_writes(run: Run) -> None:
    """maxmemory below what Redis holds, noeviction: every write that adds data fails with
    OOM for 4 s, then the limit is lifted."""

    def fault() -> float:
        used = int(run.r.info("memory")["used_memory"])
        run.r.config_set("maxmemory-policy", "noeviction")
        run.r.config_set("maxmemory", used // 2)
        try:
            with pytest.raises(redis.exceptions.OutOfMemoryError):
                run.r.set("faults:probe", "x")
            time.sleep(4.0)
        finally:
            run.r.config_set("maxmemory", 0)
        return run.stack.wait_healthy(time.time())

    t = run.scenario(OOM, fault)
    check(t)  # no process exits meanwhile: each waits the refusal out


def test_slow_channel(run: Run) -> None:
    """One user's webhook takes 10 s per message: his alerts still arrive once each, and the
    other users' channels are not held up meanwhile."""
    stack = run.stack
    hook = stack.hook
    slowed: list[float] = []

    def fault() -> float:
        hook.slow_s = 10.0
        hook.slow_prefixes = (SLOW_PREFIX,)
        slowed.append(time.time())
        time.sleep(3.0)
        return 0.0

    try:
        t = run.scenario("slow channel (10 s a send)", fault)
    finally:
        hook.slow_prefixes = ()
    slow_cids = {c.cid for c in stack.channels if c.path.startswith(SLOW_PREFIX)}
    fast_ms, slow_ms = [], []
    # The alerts emitted while the channel was slow: after the switch, up to the window's
    # end (long before it was switched back, after every one of them was delivered).
    window_end = min(run.start.values(), key=entry_key)
    for _eid, fields in run.r.xrange(keys.ALERTS, min=f"{int(slowed[0] * 1000) + 1}-0",
                                     max=window_end):
        for cid, raw in run.r.hgetall(keys.delivery(fields["id"])).items():
            record = orjson.loads(raw)
            if record.get("status") == "sent":
                (slow_ms if cid in slow_cids else fast_ms).append(record["latency_ms"])
    SUMMARY.append(f"  slow channel: {len(slow_ms)} sent, latency {min(slow_ms, default=0):.0f}"
                   f"-{max(slow_ms, default=0):.0f} ms; the others: {len(fast_ms)} sent, "
                   f"latency max {max(fast_ms, default=0):.0f} ms")
    check(t)
    assert len(slow_ms) >= 3 and min(slow_ms) >= 10_000  # several, each slow
    assert fast_ms and max(fast_ms) < 2_000, "the other channels waited for the slow one"


def test_whole_run(run: Run, stack: Stack) -> None:
    """After a clean stop: over the whole run, every alert once, every delivery once, no
    alert given up (sa:alerts:dead empty)."""
    assert stack.up is not None
    pids = stack.pids()
    stack.stop_system()
    assert not any(alive(p) for p in pids.values())
    # Up to the end of the last scenario's window: later alerts may be waiting unread, for
    # the next start, when the stop came.
    t = tally("whole run", run.r, stack.hook, stack.channels, {0: "0-0", 1: "0-0"}, run.start)
    SUMMARY.append(t.line())
    assert not t.problems(), f"{t.line()}: {t.problems()}"
    assert run.r.xlen(keys.ALERTS_DEAD) == 0, run.r.xrange(keys.ALERTS_DEAD, count=3)
