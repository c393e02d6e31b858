"""The simulator's knobs beyond the universe and the rate: login and token checks, market
hours and clock, fault injection, and replay. Defaults give the always-open demo."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ingest.sim.faults import FaultConfig
from ingest.sim.hours import MarketHours
from ingest.sim.kite_auth import KiteAuth
from ingest.sim.replay import ReplayRow


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    rows: list[ReplayRow]
    speed: float = 1.0  # 0: as fast as clients take them


@dataclass(slots=True)
class SimOptions:
    auth: KiteAuth = field(default_factory=KiteAuth)
    hours: MarketHours = field(default_factory=MarketHours)
    clock: Callable[[], float] = time.time
    faults: FaultConfig = field(default_factory=FaultConfig)
    replay: ReplayPlan | None = None
