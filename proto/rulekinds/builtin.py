"""Params models of the built-in kinds: what a valid rule of each kind looks like.

Exact semantics: ARCHITECTURE.md ("Rules: kinds and exact semantics") for the first five
kinds, docs/RULES.md for the rest. The evaluators live in ``engine.kinds``.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import ValidationInfo, field_validator, model_validator

from proto.rulekinds.api import Params

MAX_BARS = 1000  # longest moving average or RSI period, in 1-minute bars
SESSION_MINUTES = 375  # NSE cash session, 09:15-15:30 IST
DAY_S = 86_400

Direction = Literal["up", "down", "either"]


def finite_positive(value: float, name: str) -> float:
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0")
    return value


def int_between(value: int, name: str, low: int, high: int) -> int:
    if not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}")
    return value


class LevelParams(Params):
    level: float

    @field_validator("level")
    @classmethod
    def _level(cls, v: float) -> float:
        return finite_positive(v, "level")


class ChangePctParams(Params):
    pct: float
    direction: Direction = "either"

    @field_validator("pct")
    @classmethod
    def _pct(cls, v: float) -> float:
        return finite_positive(v, "pct")


class TrailingPctParams(Params):
    pct: float
    direction: Literal["down", "up"] = "down"

    @field_validator("pct")
    @classmethod
    def _pct(cls, v: float) -> float:
        v = finite_positive(v, "pct")
        if v >= 100:
            raise ValueError("pct must be below 100")
        return v


class WindowPctParams(Params):
    pct: float
    window_s: float
    direction: Direction = "either"

    @field_validator("pct", "window_s")
    @classmethod
    def _positive(cls, v: float, info: ValidationInfo) -> float:
        return finite_positive(v, info.field_name or "value")


class LevelRearmParams(Params):
    """``above`` and ``below``: a level with a hysteresis band of ``rearm_pct`` percent."""

    level: float
    rearm_pct: float = 0.5

    @field_validator("level")
    @classmethod
    def _level(cls, v: float) -> float:
        return finite_positive(v, "level")

    @field_validator("rearm_pct")
    @classmethod
    def _rearm(cls, v: float) -> float:
        if not math.isfinite(v) or not 0 <= v < 100:
            raise ValueError("rearm_pct must be a number from 0 up to (not including) 100")
        return v


class ChannelParams(Params):
    low: float
    high: float
    on: Literal["enter", "exit", "both"] = "both"

    @field_validator("low")
    @classmethod
    def _low(cls, v: float) -> float:
        return finite_positive(v, "low")

    @field_validator("high")
    @classmethod
    def _high(cls, v: float, info: ValidationInfo) -> float:
        v = finite_positive(v, "high")
        low = info.data.get("low")
        if low is not None and v <= low:
            raise ValueError(f"high must be above low ({low:g})")
        return v


class VolumeSpikeParams(Params):
    window_s: int
    factor: float
    baseline_windows: int = 20

    @field_validator("window_s")
    @classmethod
    def _window(cls, v: int) -> int:
        return int_between(v, "window_s", 1, 3600)

    @field_validator("factor")
    @classmethod
    def _factor(cls, v: float) -> float:
        if not math.isfinite(v) or v < 1:
            raise ValueError("factor must be a finite number >= 1 (a spike is at least "
                             "the baseline average)")
        return v

    @field_validator("baseline_windows")
    @classmethod
    def _baseline(cls, v: int) -> int:
        return int_between(v, "baseline_windows", 1, 1000)

    @model_validator(mode="after")
    def _span(self) -> VolumeSpikeParams:
        span_s = (self.baseline_windows + 1) * self.window_s
        if span_s > DAY_S:
            raise ValueError(f"(baseline_windows + 1) * window_s must be at most {DAY_S} s "
                             f"(one day); got {span_s}")
        return self


class MaCrossParams(Params):
    """``sma_cross`` and ``ema_cross``: a fast and a slow average of 1-minute closes."""

    fast: int
    slow: int
    direction: Direction = "either"

    @field_validator("fast")
    @classmethod
    def _fast(cls, v: int) -> int:
        return int_between(v, "fast", 2, MAX_BARS - 1)

    @field_validator("slow")
    @classmethod
    def _slow(cls, v: int, info: ValidationInfo) -> int:
        v = int_between(v, "slow", 3, MAX_BARS)
        fast = info.data.get("fast")
        if fast is not None and v <= fast:
            raise ValueError(f"slow must be greater than fast ({fast})")
        return v


class RsiParams(Params):
    period: int = 14
    above: float | None = None
    below: float | None = None

    @field_validator("period")
    @classmethod
    def _period(cls, v: int) -> int:
        return int_between(v, "period", 2, MAX_BARS)

    @field_validator("above", "below")
    @classmethod
    def _threshold(cls, v: float | None, info: ValidationInfo) -> float | None:
        if v is None:
            return v
        if not math.isfinite(v) or not 0 < v < 100:
            raise ValueError(f"{info.field_name} must be a number between 0 and 100 "
                             "(exclusive)")
        above = info.data.get("above")
        if info.field_name == "below" and above is not None and v >= above:
            raise ValueError(f"below must be less than above ({above:g})")
        return v

    @model_validator(mode="after")
    def _some_threshold(self) -> RsiParams:
        if self.above is None and self.below is None:
            raise ValueError("give above, below or both (RSI thresholds between 0 and 100)")
        return self


class OrbParams(Params):
    minutes: int = 15
    direction: Direction = "either"

    @field_validator("minutes")
    @classmethod
    def _minutes(cls, v: int) -> int:
        return int_between(v, "minutes", 1, SESSION_MINUTES - 1)


BUILTIN_PARAMS: dict[str, type[Params]] = {
    "cross_above": LevelParams,
    "cross_below": LevelParams,
    "change_pct": ChangePctParams,
    "trailing_pct": TrailingPctParams,
    "window_pct": WindowPctParams,
    "above": LevelRearmParams,
    "below": LevelRearmParams,
    "channel": ChannelParams,
    "volume_spike": VolumeSpikeParams,
    "sma_cross": MaCrossParams,
    "ema_cross": MaCrossParams,
    "rsi": RsiParams,
    "orb": OrbParams,
}
