"""Writes a shard's checkpoints from a forked child, off the shard's hot path.

At a checkpoint the shard forks. The child's memory is a copy-on-write image of the parent
at that instant, so it serialises a consistent state while the parent goes on evaluating
ticks; it writes the state and acks exactly the entries processed before the fork in one
MULTI on its own connection, then exits. The parent starts no other checkpoint until it has
reaped the child. A child that fails (or is killed) acks nothing: the parent acks those
entries with its next checkpoint, and a crash in between redoes them after a restore.

Fencing: every incarnation of a shard takes a new epoch (HINCRBY on the state hash) before
it reads the state, and a checkpoint commits only under WATCH of that hash while the epoch is
still its own. So a child left over from a killed shard can never overwrite the state a
newer incarnation restored from (it also dies with its parent, PR_SET_PDEATHSIG, on Linux).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

import redis

from engine.checkpoint import EPOCH_FIELD, STATE_FIELD
from proto import bus

log = logging.getLogger(__name__)

ACKS_PER_COMMAND = 10_000
CHILD_SOCKET_TIMEOUT_S = 30.0
CHILD_NICE = 10
_EXIT_FENCED = 3
_PR_SET_PDEATHSIG = 1


class Fenced(RuntimeError):
    """A newer incarnation of this shard took over the state: this one must stop."""


class Checkpointer:
    def __init__(self, r: redis.Redis, state_key: str, stream: str, group: str,
                 timeout_s: float = 300.0) -> None:
        self.r = r
        self.state_key, self.stream, self.group = state_key, stream, group
        self.timeout_s = timeout_s
        self.epoch = 0
        self.child: int | None = None
        self.in_flight: list[str] = []  # entries the running child acks
        self.started = 0.0
        self.fork_ms = 0.0  # how long the parent stood still for the last fork
        self.fork_cpu_ms = 0.0  # of which on the CPU (the rest: preempted)
        self.child_ms = 0.0  # fork to reap of the last successful child
        self.child_cpu_ms = 0.0  # CPU time that child used
        self.fenced = False

    def claim_epoch(self) -> int:
        """Become the incarnation allowed to write; call before reading the state."""
        self.epoch = int(self.r.hincrby(self.state_key, EPOCH_FIELD, 1))
        return self.epoch

    def write(self, r: redis.Redis, doc: bytes, acks: list[str]) -> None:
        """The state and the acks of the entries it covers, in one transaction; Fenced
        when this epoch is no longer the current one."""
        with r.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(self.state_key)
                current = pipe.hget(self.state_key, EPOCH_FIELD)
                if current is None or int(current) != self.epoch:
                    raise Fenced(f"{self.state_key} now belongs to epoch {current!r}, "
                                 f"not {self.epoch}")
                pipe.multi()
                pipe.hset(self.state_key, STATE_FIELD, doc)
                for i in range(0, len(acks), ACKS_PER_COMMAND):
                    pipe.xack(self.stream, self.group, *acks[i:i + ACKS_PER_COMMAND])
                pipe.execute()
            except redis.WatchError as exc:
                bus.raise_if_cut(exc)  # a failover or a lost connection: not fenced
                raise Fenced(f"{self.state_key} was taken over while writing") from None

    # The forked path ----------------------------------------------------------------

    def start(self, encode: Callable[[], bytes], acks: list[str]) -> bool:
        """Fork a child that writes ``encode()`` and acks ``acks``; False when a fork is not
        safe here (other threads) or failed, and the caller should write inline."""
        if self.child is not None:
            raise RuntimeError("a checkpoint child is still running")
        if threading.active_count() > 1:  # fork copies only this thread: locks could be held
            return False
        t0, cpu0 = time.perf_counter(), time.thread_time()
        parent = os.getpid()
        try:
            pid = os.fork()
        except OSError as exc:
            log.warning("cannot fork a checkpoint writer (%s); writing inline", exc)
            return False
        if pid == 0:
            self._child_main(parent, encode, acks)  # never returns
        self.fork_ms = (time.perf_counter() - t0) * 1000
        self.fork_cpu_ms = (time.thread_time() - cpu0) * 1000
        self.child, self.in_flight, self.started = pid, acks, time.monotonic()
        return True

    def poll(self, block: bool = False) -> tuple[bool, list[str]] | None:
        """None while no child finished; else (ok, entries to ack again: none when ok). A
        child running longer than ``timeout_s`` is killed and counts as failed."""
        if self.child is None:
            return None
        pid, status, usage = os.wait4(self.child, 0 if block else os.WNOHANG)
        if pid == 0:
            if time.monotonic() - self.started < self.timeout_s:
                return None
            log.warning("checkpoint writer %d ran over %.0f s; killing it", self.child,
                        self.timeout_s)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.child, signal.SIGKILL)
            _pid, status, usage = os.wait4(self.child, 0)
        code = os.waitstatus_to_exitcode(status)
        acks, self.child, self.in_flight = self.in_flight, None, []
        if code == 0:
            self.child_ms = (time.monotonic() - self.started) * 1000
            self.child_cpu_ms = (usage.ru_utime + usage.ru_stime) * 1000
            return True, []
        if code == _EXIT_FENCED:
            self.fenced = True
        log.warning("checkpoint writer failed (exit %d); its %d entries stay unacked until "
                    "the next checkpoint", code, len(acks))
        return False, acks

    def _child_main(self, parent: int, encode: Callable[[], bytes], acks: list[str]) -> None:
        code = 1
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent drains, then waits for us
            _die_with_parent(parent)
            # Behind the shards on a busy machine: the checkpoint can wait, ticks cannot.
            with contextlib.suppress(OSError):
                os.nice(CHILD_NICE)
            gc.disable()  # short-lived; a collection would touch (and copy) every page
            doc = encode()
            self.write(client_like(self.r, socket_timeout=CHILD_SOCKET_TIMEOUT_S), doc, acks)
            code = 0
        except Fenced as exc:
            log.error("checkpoint not written: %s", exc)
            code = _EXIT_FENCED
        except BaseException:
            log.exception("checkpoint writer failed")
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os._exit(code)  # no atexit, no finalisers of the parent's objects


def client_like(r: redis.Redis, **overrides: object) -> redis.Redis:
    """A client on a new pool to the same server (or cluster) as ``r`` (a forked child must
    not use the parent's connections), with some connection settings changed."""
    return bus.clone(r, **overrides)


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this child when the parent dies (a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
