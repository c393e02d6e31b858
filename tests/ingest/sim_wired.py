"""``python -m tests.ingest.sim_wired …``: ``python -m ingest.sim`` with its Upstox side given
the simulator's market hours, clock and fault knobs.

``ingest.sim.server.Simulator`` builds ``UpstoxSide(instruments, market)`` without them, so
the command-line simulator's Upstox feed is always open and never stalled; the fix there is
``UpstoxSide(instruments, market, self.options.hours, self.options.clock, self.faults)``.
Until it lands, tests of those behaviours start this instead (harmless after it).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

from ingest.sim import __main__ as sim_main
from ingest.sim.market import Market
from ingest.sim.options import SimOptions
from ingest.sim.server import Simulator
from ingest.sim.universe import Instrument
from ingest.sim.upstox_server import UpstoxSide
from tests.helpers import ROOT, stop


class WiredSimulator(Simulator):
    def __init__(self, instruments: list[Instrument], market: Market,
                 options: SimOptions | None = None) -> None:
        super().__init__(instruments, market, options)
        self.upstox = UpstoxSide(instruments, market, self.options.hours, self.options.clock,
                                 self.faults)



@contextlib.contextmanager
def running_wired_sim(*args: str) -> Iterator[str]:
    """This simulator on a free port for the ``with`` block; its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.ingest.sim_wired", "--port", "0", "--log-level",
         "WARNING", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("sim listening on http://"), \
            f"sim did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
        yield line.removeprefix("sim listening on ")
    finally:
        stop(proc)


if __name__ == "__main__":
    sim_main.Simulator = WiredSimulator  # type: ignore[misc]
    raise SystemExit(sim_main.main())
