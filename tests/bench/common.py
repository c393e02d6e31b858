"""Shared pieces of the benchmarks: machine facts, a private Redis, redis-benchmark."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import subprocess


def machine() -> str:
    cpu = "unknown cpu"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{platform.node()}: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def redis_benchmark_xadd(port: int, n: int = 200_000, pipeline: int = 128) -> float | None:
    """XADD of 8 fields per second by redis-benchmark against the same server (the ceiling)."""
    tool = shutil.which("redis-benchmark")
    if tool is None:
        return None
    fields = " ".join(f"f{i} v{i}" for i in range(8)).split()
    out = subprocess.run(
        [tool, "-p", str(port), "-n", str(n), "-P", str(pipeline), "-q",
         "XADD", "bench:xadd", "MAXLEN", "~", "100000", "*", *fields],
        capture_output=True, text=True, timeout=120).stdout
    match = re.search(r"([\d.]+) requests per second", out)
    subprocess.run([shutil.which("redis-cli") or "redis-cli", "-p", str(port), "DEL",
                    "bench:xadd"], capture_output=True, timeout=10)
    return float(match.group(1)) if match else None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cores_for_two() -> tuple[set[int], set[int]] | None:
    """Two disjoint CPU sets from this process's allowed CPUs: (the rest, the measured
    process). None on a single-core machine, where pinning cannot separate anything."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None
    return set(allowed[:-1]), {allowed[-1]}


def pin(pid: int, cpus: set[int]) -> None:
    """Pin every thread of a running process (affinity is per thread on Linux; threads it
    starts later inherit from their creator)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError, FileNotFoundError):  # thread ended
            os.sched_setaffinity(int(task), cpus)


def runqueue_wait_s(pid: int) -> float:
    """Seconds a process's threads have spent runnable but waiting for a CPU (schedstat):
    what other processes on its CPU took from it."""
    total_ns = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError), \
                open(f"/proc/{pid}/task/{task}/schedstat") as f:
            total_ns += int(f.read().split()[1])
    return total_ns / 1e9
