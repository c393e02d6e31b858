"""One running system for the fault suite's scenarios (they run in file order, each on the
ticks of its own time window), and their counts printed at the end of the pytest run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.stack import Stack
from tests.webhook import serving_webhook

SUMMARY: list[str] = []


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Its own Redis (never STORMALERT_TEST_REDIS_URL: the suite kills and restarts it)."""
    if not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists():
        pytest.skip("needs /proc/PID/task/TID/children (Linux) to find the supervisor's children")
    with serving_webhook() as hook:
        hook.slow_prefixes = ()  # nothing is slow until the slow-channel scenario
        system = Stack(tmp_path_factory.mktemp("faults"), hook)
        try:
            system.start()
            yield system
        finally:
            system.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARY:
        terminalreporter.section("fault suite counts")
        for line in SUMMARY:
            terminalreporter.write_line(line)
