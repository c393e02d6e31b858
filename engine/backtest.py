"""``python -m engine.backtest [--shards N]``: the backtest worker ("test on history").

The web queues a job (``keys.BACKTEST_JOBS``, the job in ``keys.backtest(user, id)``); this
process reads the stream in group ``backtest``, runs the rule with the live shard's rule
book (``engine.backtest_run``) and writes progress and the result into the job's hash. It is
a process of its own, niced, so a long backtest never takes a core from a shard.

Crash safety: a job is acked only once its outcome is written. While it runs, the worker
renews the entry's idle time with each progress write; a restarted worker (same consumer
name) redoes its own pending jobs first, and another worker takes over a job whose entry
stayed idle for ``backtest_claim_idle_ms`` (its worker died). A job that was picked up more
than ``backtest_max_attempts`` times is reported failed rather than tried again.

Redis down or refusing writes (``bus.TRANSIENT_ERRORS``: maxmemory, a read-only replica, ...)
is waited out: the job stays pending and the worker retries each second. A run cut short by
it is not counted as another attempt, and an outcome Redis refused to store is kept and
written on the retry, not computed again. A refused progress write does not cut the run
short (progress is advisory): it is counted (``progress_write_errors``) and logged once a job.
The claim is renewed with XCLAIM, which Redis at maxmemory still takes, so a run whose other
writes are refused keeps its job, through the run and the retries of its outcome.

One outcome a job: a run is fenced by the job hash's ``worker`` and ``attempts`` it set when
it picked the job up (another worker's takeover changes them). Every write of a run (progress,
claim renewal, outcome) is made in a MULTI watching the hash, only while the hash still shows
that run; a run that finds another one took over (its worker was cut off from Redis, or
stopped, for longer than the claim time) or that the job ended is dropped with what the
worker kept for it, and its entry is left to the other run. The worker keeps records only for
entries pending with its own consumer: at each (re)connection it forgets the others.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import date
from typing import Any

import orjson
import redis
from pydantic import Field

from engine.backtest_run import run_job
from proto import bus, health, keys, settings
from proto.backtest import MAX_QUEUED_S, PROGRESS_S, CsvError, Job, JobError, parse_job
from proto.runtime import Runtime, setup_logging
from proto.settings import BaseSettings

log = logging.getLogger(__name__)

JOBS, GROUP = keys.BACKTEST_JOBS, keys.BACKTEST_GROUP
CLAIM_EVERY_S = 5.0
FINAL = ("done", "failed")


class BacktestSettings(BaseSettings):
    shards: int = Field(default=2, ge=1)  # to find a symbol's tick stream
    engine_holidays: tuple[date, ...] = ()
    backtest_consumer: str = Field(default="backtest", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    backtest_block_ms: int = Field(default=1000, ge=1, le=4000)  # under the 5 s socket timeout
    backtest_claim_idle_ms: int = Field(default=30_000, ge=1000)
    backtest_max_attempts: int = Field(default=2, ge=1)
    backtest_max_shown: int = Field(default=1000, ge=1)  # firings listed (all are counted)
    backtest_nice: int = Field(default=10, ge=0, le=19)


class Stopping(Exception):
    """SIGTERM arrived mid-job: the job is left pending for the next worker."""


class Superseded(Exception):
    """The job is no longer this worker's run: it ended (``ended``: its entry may be acked),
    or another worker's run took it over (the entry is that run's)."""

    def __init__(self, why: str, *, ended: bool) -> None:
        super().__init__(why)
        self.ended = ended


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Worker:
    def __init__(self, s: BacktestSettings, r: redis.Redis, rt: Runtime) -> None:
        self.s = s
        self.r = r
        self.rt = rt
        self.consumer = s.backtest_consumer
        self.holidays = frozenset(s.engine_holidays)
        self._next_claim = 0.0
        # Of pending entries whose work Redis cut short (TRANSIENT_ERRORS): the job hash's
        # ``attempts`` this worker's run got (the run's fence, with ``worker``), the outcomes
        # Redis refused to store, and the jobs whose refused progress was logged. Forgotten
        # at the ack, when the run is superseded, and when the entry is no longer pending
        # with this consumer (checked at each (re)connection).
        self._runs: dict[str, int] = {}
        self._unwritten: dict[str, dict[str, str]] = {}
        self._progress_refused: set[str] = set()

    def run(self) -> None:
        started = False
        while not self.rt.stopping:
            try:
                if not started:
                    bus.ensure_group(self.r, JOBS, GROUP, start="0")
                    self.forget_others()
                    # Jobs this consumer read before a crash or a stop: redo them first.
                    self.handle_all(bus.read_group(self.r, JOBS, GROUP, self.consumer,
                                                   count=100, block_ms=None, start="0"))
                    started = True
                self.rt.tick()
                if time.monotonic() >= self._next_claim:
                    self._next_claim = time.monotonic() + CLAIM_EVERY_S
                    claimed = bus.claim_stale(self.r, JOBS, GROUP, self.consumer,
                                              min_idle_ms=self.s.backtest_claim_idle_ms)
                    if claimed:
                        log.info("took over %d jobs another worker left", len(claimed))
                    self.handle_all(claimed)
                self.handle_all(bus.read_group(self.r, JOBS, GROUP, self.consumer, count=1,
                                               block_ms=self.s.backtest_block_ms))
            except Stopping:
                break
            except bus.TRANSIENT_ERRORS as exc:
                log.warning("redis unavailable or refusing writes (%s); retrying in 1 s", exc)
                self.rt.stats.inc("redis_errors")
                started = False  # the group may be gone (a flushed or new Redis)
                time.sleep(1.0)
            except redis.ResponseError as exc:
                log.warning("redis refused a command (%s); retrying in 1 s", exc)
                started = False
                time.sleep(1.0)
        self.rt.stop_beat()
        log.info("backtest worker stopped")

    def forget_others(self) -> None:
        """Drop the records of entries no longer pending with this consumer: another worker
        took them over while this one was cut off from Redis (and may have finished them)."""
        for entry_id in set(self._runs) | set(self._unwritten):
            holder = self.holder(entry_id)
            if holder != self.consumer:
                log.warning("job entry %s is pending with %s, no longer with this worker: "
                            "dropped what this worker kept for it", entry_id,
                            holder or "no one (acked)")
                self.rt.stats.inc("jobs_superseded")
                self.forget(entry_id)

    def holder(self, entry_id: str) -> str | None:
        """The consumer the entry is pending with; None once acked."""
        pending: Any = self.r.xpending_range(JOBS, GROUP, min=entry_id, max=entry_id, count=1)
        return str(pending[0]["consumer"]) if pending else None

    def forget(self, entry_id: str) -> None:
        self._runs.pop(entry_id, None)
        self._unwritten.pop(entry_id, None)
        self._progress_refused.discard(entry_id)
        self.rt.stats.gauges["kept_outcomes"] = len(self._unwritten)

    def handle_all(self, entries: list[bus.Entry]) -> None:
        for entry_id, fields in entries:
            if self.rt.stopping:
                raise Stopping
            self.handle(entry_id, fields)

    def handle(self, entry_id: str, fields: dict[str, str]) -> None:
        """One job, to its outcome, then the ack. A transient Redis error (also one refusing
        the outcome) and a stop leave it pending; a run superseded by another is dropped
        (the entry left to the other run); anything else fails the job (logged) and acks it."""
        user, job_id = fields.get("user", ""), fields.get("id", "")
        key = keys.backtest(user, job_id)
        try:
            try:
                self.answer(entry_id, key)
            except (Stopping, Superseded, *bus.TRANSIENT_ERRORS):
                raise
            except Exception:
                log.exception("backtest %s of %s failed", job_id, user)
                self.rt.stats.inc("jobs_failed")
                self.finish(entry_id, key, status="failed",
                            error="the backtest worker hit an internal error (it is logged)")
        except Superseded as exc:
            log.warning("backtest %s of %s: %s; this worker's run of it is dropped",
                        job_id, user, exc)
            self.rt.stats.inc("jobs_superseded")
            self.forget(entry_id)
            if not exc.ended:
                return
        self.r.xack(JOBS, GROUP, entry_id)
        self.forget(entry_id)

    def answer(self, entry_id: str, key: str) -> None:
        raw: Any = self.r.hgetall(key)
        if not raw or raw.get("status") in FINAL:
            return  # expired, or finished before a crash kept it from being acked
        run = self._runs.get(entry_id)
        if run is not None and (raw.get("worker"), raw.get("attempts")) != (self.consumer,
                                                                            str(run)):
            log.info("job entry %s was run by %s since this worker's run of it: taken afresh",
                     entry_id, raw.get("worker"))
            self.forget(entry_id)  # its entry came back to this worker: the other run ended
            run = None
        if entry_id in self._unwritten:
            self.finish(entry_id, key, **self._unwritten[entry_id])
            return
        if "picked_ms" not in raw and now_ms() - int(raw.get("requested_ms") or 0) \
                > MAX_QUEUED_S * 1000:
            self.finish(entry_id, key, status="failed",
                        error=f"no backtest worker picked the job up within "
                              f"{MAX_QUEUED_S / 60:.0f} minutes")
            return
        attempts = self.pick_up(entry_id, key, retry=run is not None)
        if attempts > self.s.backtest_max_attempts:
            self.rt.stats.inc("jobs_failed")
            stops = attempts - 1
            self.finish(entry_id, key, status="failed",
                        error=f"the backtest worker stopped {stops} time{'s' if stops > 1 else ''}"
                              " while running this job; it was not tried again")
            return
        try:
            job = parse_job(raw.get("job", ""))
        except JobError as exc:
            self.finish(entry_id, key, status="failed", error=f"bad job: {exc}")
            return
        self.run_rule(entry_id, key, job, raw.get("csv"))

    def pick_up(self, entry_id: str, key: str, *, retry: bool) -> int:
        """Mark the job running by this worker and return its attempt: counted anew, unless
        this is a retry after a Redis error (still the same attempt, the same run)."""
        running = {"picked_ms": now_ms(), "hb_ms": now_ms(), "progress": 0,
                   "status": "running", "worker": self.consumer}

        def mark(pipe: redis.client.Pipeline) -> None:
            if not retry:
                pipe.hincrby(key, "attempts", 1)
            pipe.hset(key, mapping=running)  # type: ignore[arg-type]
            pipe.expire(key, keys.BACKTEST_TTL_S)

        replies = self.fenced(entry_id, key, mark, renew=retry)
        if not retry:
            self._runs[entry_id] = int(replies[0])
        return self._runs[entry_id]

    def run_rule(self, entry_id: str, key: str, job: Job, csv_text: str | None) -> None:
        next_write = [time.monotonic() + PROGRESS_S]

        def progress(fraction: float) -> None:
            if self.rt.stopping:
                raise Stopping
            if time.monotonic() < next_write[0]:
                return
            next_write[0] = time.monotonic() + PROGRESS_S
            self.write_progress(entry_id, key, int(fraction * 100))
            self.rt.tick()

        try:
            result = run_job(self.r, job, csv_text, shards=self.s.shards,
                             holidays=self.holidays, max_shown=self.s.backtest_max_shown,
                             progress=progress)
        except CsvError as exc:
            self.finish(entry_id, key, status="failed",
                        error=f"the file cannot be used: {exc}")
            return
        except Stopping:
            def requeue(pipe: redis.client.Pipeline) -> None:
                pipe.hset(key, mapping={"status": "queued", "progress": 0})
                pipe.hincrby(key, "attempts", -1)  # a clean stop is not the job's fault

            with contextlib.suppress(Superseded):
                self.fenced(entry_id, key, requeue)
            raise
        self.rt.stats.inc("jobs")
        self.rt.stats.inc("prices", result["prices"])
        log.info("backtest of rule %s over %d prices: %d firings in %d ms", job.rule.id,
                 result["prices"], result["count"], result["elapsed_ms"])
        self.finish(entry_id, key, status="done", result=orjson.dumps(result).decode())

    def write_progress(self, entry_id: str, key: str, percent: int) -> None:
        """Progress and ``hb_ms``, and the claim renewed. Advisory: a write Redis refuses is
        counted and logged once a job, and the run goes on (its outcome has its own retry)."""
        def write(pipe: redis.client.Pipeline) -> None:
            pipe.hset(key, mapping={"progress": percent, "hb_ms": now_ms()})

        try:
            self.fenced(entry_id, key, write, renew=True)
        except bus.TRANSIENT_ERRORS as exc:
            self.rt.stats.inc("progress_write_errors")
            if entry_id not in self._progress_refused:
                self._progress_refused.add(entry_id)
                log.warning("job entry %s: redis refused a progress write (%s); the run goes "
                            "on, its outcome is kept until redis takes it", entry_id, exc)

    def fenced(self, entry_id: str, key: str, write: Callable[[redis.client.Pipeline], None],
               *, renew: bool = False) -> list[Any]:
        """``write(pipe)``'s commands in one MULTI, made only while the job's hash still shows
        this worker's run of the entry (or, before it has one, a job not ended); else raises
        Superseded. ``renew``: first renew the entry's claim (idle time), with XCLAIM, which
        Redis at maxmemory still takes, and only then: never take an entry from another run."""
        with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    fence: Any = pipe.hmget(key, "status", "worker", "attempts")
                    status, worker, attempts = fence
                    if status is None or status in FINAL:
                        raise Superseded("the job ended (or expired) meanwhile", ended=True)
                    run = self._runs.get(entry_id)
                    if run is not None and (worker, attempts) != (self.consumer, str(run)):
                        raise Superseded(f"{worker} took the job over meanwhile (attempt "
                                         f"{attempts}; this worker's was {run})", ended=False)
                    if renew:
                        self.renew_claim(entry_id)
                    pipe.multi()
                    write(pipe)
                    return pipe.execute()
                except redis.WatchError as exc:
                    bus.raise_if_cut(exc)  # READONLY or a lost connection: waited out
                    continue  # the hash changed since it was read: look again

    def renew_claim(self, entry_id: str) -> None:
        """The entry's idle time renewed (XCLAIM, which Redis at maxmemory still takes). With
        the jobs stream or its group gone while the job's hash survives (a flushed node of a
        cluster: they sit in different slots), there is no claim to renew: the hash is the
        fence, so the run's outcome is still written, not failed over a NOGROUP."""
        try:
            # Another worker's XAUTOCLAIM may have taken the entry before its run marked the
            # hash: that run is the job's now (taking the entry back would leave it to a run
            # this worker is dropping).
            holder = self.holder(entry_id)
            if holder is not None and holder != self.consumer:
                raise Superseded(f"{holder} claimed the job's entry meanwhile", ended=False)
            self.r.xclaim(JOBS, GROUP, self.consumer, 0, [entry_id], justid=True)
        except redis.ResponseError as exc:
            if not str(exc).startswith("NOGROUP"):
                raise

    def finish(self, entry_id: str, key: str, **fields: str) -> None:
        """The outcome in one MULTI, fenced by this worker's run; the uploaded file is
        dropped, the hash kept a while. An outcome a transient Redis error kept out is kept
        for the retry of the entry."""
        at_ms = now_ms()
        outcome: dict[str, str | int] = {**fields, "done_ms": at_ms, "hb_ms": at_ms,
                                         "progress": 100}

        def write(pipe: redis.client.Pipeline) -> None:
            pipe.hset(key, mapping=outcome)  # type: ignore[arg-type]
            pipe.hdel(key, "csv")
            pipe.expire(key, keys.BACKTEST_TTL_S)

        try:
            self.fenced(entry_id, key, write, renew=entry_id in self._runs)
        except bus.TRANSIENT_ERRORS:
            self._unwritten[entry_id] = fields
            self.rt.stats.gauges["kept_outcomes"] = len(self._unwritten)
            raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stormalert backtest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, help="number of engine shards (tick streams)")
    parser.add_argument("--consumer", help="this worker's consumer name (stable across restarts)")
    parser.add_argument("--check", action="store_true",
                        help="exit 0 if this worker's heartbeat is fresh, else 1")
    args = parser.parse_args(argv)
    s = settings.load(BacktestSettings, shards=args.shards, backtest_consumer=args.consumer)
    if args.check:
        return health.run_check(s.redis_url, s.backtest_consumer)
    setup_logging(s.backtest_consumer, s.log_level)
    os.nice(s.backtest_nice)  # a backtest yields the CPU to the shards
    r = bus.connect(s.redis_url)
    try:
        bus.check(r, s.redis_url)
    except bus.RedisUnavailable as exc:
        print(f"stormalert backtest: {exc}", file=sys.stderr)
        return 2
    Worker(s, r, Runtime(s.backtest_consumer, r, s.stats_interval_s)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
