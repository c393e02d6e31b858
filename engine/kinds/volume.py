"""``volume_spike``: the volume traded in the last ``window_s`` seconds against the average
per window over the ``baseline_windows`` windows before it. Semantics: docs/RULES.md.

Volume is kept in per-second buckets, and only seconds that traded are stored, so a tick
costs O(1) amortised: it adds to the newest bucket, and each bucket moves once into the window,
once on to the baseline and once out; the deques slide only when a new second begins.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from proto.rulekinds import API_VERSION, Ref, RuleKind
from proto.rulekinds.builtin import VolumeSpikeParams


class VolumeSpike:
    __slots__ = ("base_sum", "baseline", "cur_sec", "cur_vol", "excluded", "factor", "fire_part",
                 "fire_sec", "last_vol", "n", "span_s", "start_sec", "w", "win_sum", "window")

    def __init__(self, window_s: int, factor: float, baseline_windows: int) -> None:
        self.w = window_s
        self.n = baseline_windows
        self.span_s = (baseline_windows + 1) * window_s
        self.factor = factor
        self.last_vol = 0  # 0: no reference tick yet
        self._reset(0)

    def _reset(self, sec: int) -> None:
        self.start_sec = self.cur_sec = sec
        self.cur_vol = 0  # traded in second cur_sec, the newest; not yet in `window`
        self.window: deque[tuple[int, int]] = deque()  # (second, volume) in (cur - w, cur)
        self.baseline: deque[tuple[int, int]] = deque()  # in (cur - (n+1)w, cur - w]
        self.win_sum = self.base_sum = 0  # of the buckets in each deque
        self.excluded = 0  # volume in the window traded at or before the last firing
        self.fire_sec = -1
        self.fire_part = 0  # the firing second's volume at the firing

    def step(self, p: float, t: int, pc: float | None, vol: int) -> Ref | None:
        if vol <= 0:
            return None  # this tick carries no volume
        last_vol, self.last_vol = self.last_vol, vol
        if last_vol == 0 or vol < last_vol:  # the first tick, or a new day: a new reference
            self._reset(t // 1000)
            return None
        sec = t // 1000
        if sec > self.cur_sec:
            self._advance(sec)
        self.cur_vol += vol - last_vol
        if self.cur_sec - self.start_sec < self.span_s:
            return None  # the baseline does not yet lie wholly after the reference tick
        base_avg = self.base_sum / self.n
        recent = self.win_sum + self.cur_vol - self.excluded
        if base_avg > 0 and recent >= self.factor * base_avg:
            return {"window_volume": recent, "baseline_avg": base_avg}
        return None

    def _advance(self, sec: int) -> None:
        """Close second cur_sec and slide both deques to end at ``sec``."""
        window, baseline = self.window, self.baseline
        if self.cur_vol:
            window.append((self.cur_sec, self.cur_vol))
            self.win_sum += self.cur_vol
        self.cur_sec, self.cur_vol = sec, 0
        edge = sec - self.w
        while window and window[0][0] <= edge:
            bucket = window.popleft()
            self.win_sum -= bucket[1]
            if self.excluded:
                self.excluded -= bucket[1] if bucket[0] < self.fire_sec else (
                    self.fire_part if bucket[0] == self.fire_sec else 0)
            baseline.append(bucket)
            self.base_sum += bucket[1]
        edge = sec - self.span_s
        while baseline and baseline[0][0] <= edge:
            self.base_sum -= baseline.popleft()[1]

    def fired(self, p: float, t: int) -> None:
        self.excluded = self.win_sum + self.cur_vol
        self.fire_sec, self.fire_part = self.cur_sec, self.cur_vol


def _describe(params: VolumeSpikeParams, symbol: str, p: float, ref: Ref) -> str:
    ratio = ref["window_volume"] / ref["baseline_avg"]
    return (f"{symbol} traded {ref['window_volume']:g} in {params.window_s}s, "
            f"{ratio:.1f}x its average of {ref['baseline_avg']:g} over the previous "
            f"{params.baseline_windows} windows (price {p:g})")


KINDS: tuple[RuleKind[Any], ...] = (
    RuleKind(name="volume_spike", params=VolumeSpikeParams,
             evaluator=lambda p: VolumeSpike(p.window_s, p.factor, p.baseline_windows),
             describe=_describe, api_version=API_VERSION),
)
