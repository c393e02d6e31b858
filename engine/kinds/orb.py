"""``orb``: opening-range breakout on the IST session that opens at 09:15. Semantics:
docs/RULES.md."""

from __future__ import annotations

from typing import Any

from proto.rulekinds import API_VERSION, Ref, RuleKind
from proto.rulekinds.builtin import OrbParams

IST_OFFSET_MS = 19_800_000  # UTC+05:30
DAY_MS = 86_400_000
SESSION_OPEN_MS = 33_300_000  # 09:15 after IST midnight


def ist_day(t: int) -> int:
    """Days since 1970-01-01 in IST of an epoch-ms time."""
    return (t + IST_OFFSET_MS) // DAY_MS


def session_open(day: int) -> int:
    """Epoch ms of 09:15 IST on an IST day."""
    return day * DAY_MS - IST_OFFSET_MS + SESSION_OPEN_MS


class Orb:
    __slots__ = ("day_end", "day_start", "done", "down", "end", "high", "low", "range_ms",
                 "ranged", "start", "up")

    def __init__(self, minutes: int, direction: str) -> None:
        self.range_ms = minutes * 60_000
        self.up = direction in ("up", "either")
        self.down = direction in ("down", "either")
        self.day_start = self.day_end = -(2**63)  # the IST day of the last tick, [start, end)
        self.start = self.end = 0  # its opening range, [start, end)
        self.high = self.low = 0.0
        self.ranged = False  # the range has a tick
        self.done = False  # fired this day

    def step(self, p: float, t: int, pc: float | None, vol: int) -> Ref | None:
        if t >= self.day_end:
            day = ist_day(t)
            self.day_start = day * DAY_MS - IST_OFFSET_MS
            self.day_end = self.day_start + DAY_MS
            self.start = session_open(day)
            self.end = self.start + self.range_ms
            self.ranged = self.done = False
        elif t < self.day_start:
            return None  # a late tick of an earlier day
        if self.done or t < self.start:
            return None
        if t < self.end:
            if not self.ranged:
                self.high = self.low = p
                self.ranged = True
            elif p > self.high:
                self.high = p
            elif p < self.low:
                self.low = p
            return None
        if self.ranged and ((self.up and p > self.high) or (self.down and p < self.low)):
            return {"range_high": self.high, "range_low": self.low}
        return None

    def fired(self, p: float, t: int) -> None:
        self.done = True


def _describe(params: OrbParams, symbol: str, p: float, ref: Ref) -> str:
    side = "above" if p > ref["range_high"] else "below"
    return (f"{symbol} broke {side} its {params.minutes}-minute opening range "
            f"({ref['range_low']:g} - {ref['range_high']:g}) at {p:g}")


KINDS: tuple[RuleKind[Any], ...] = (
    RuleKind(name="orb", params=OrbParams, evaluator=lambda p: Orb(p.minutes, p.direction),
             describe=_describe, api_version=API_VERSION),
)
