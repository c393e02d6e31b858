"""Strategies on 1-minute closes: ``sma_cross``, ``ema_cross`` and ``rsi``. Semantics:
docs/RULES.md.

A bar is the minute ``t // 60000``; it closes when a tick of a later minute arrives, and the
decision is taken at that tick. Per tick an evaluator only compares minutes and remembers the
price; the indicator work happens once per closed bar.

Means are exact: closes are counted in ten-thousandths (``q(x) = round(x * 10000)``, which is
the quoted price itself for prices of up to four decimals, as all Indian quotes are) and summed
as integers, and a mean is one division of integers, rounded once to float64. So a moving sum
never drifts, and the state stays plain JSON numbers for the shard's checkpoint.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from engine.kinds.runs import Fail, Hits, Run
from proto.rulekinds import API_VERSION, Ref, RuleKind
from proto.rulekinds.builtin import MaCrossParams, RsiParams

MINUTE_MS = 60_000
NO_BAR = -(2**63)
UNITS = 10_000  # q(x): a price in ten-thousandths


def q(x: float) -> int:
    return round(x * UNITS)


def exact_mean(total_q: int, count: int) -> float:
    """The mean of ``count`` values whose q() sum is ``total_q``, rounded once to float64."""
    return total_q / (count * UNITS)


class OnBarClose:
    """Base of the bar strategies: ``on_close(close)`` runs when a bar closes."""

    __slots__ = ("close", "minute")

    def __init__(self) -> None:
        self.minute = NO_BAR
        self.close = 0.0

    def step(self, p: float, t: int, pc: float | None, vol: int) -> Ref | None:
        minute = t // MINUTE_MS
        if minute <= self.minute:  # the open bar's minute, or a late tick: extends the bar
            self.close = p
            return None
        closed, had_bar = self.close, self.minute != NO_BAR
        self.close, self.minute = p, minute
        return self.on_close(closed) if had_bar else None

    def on_close(self, c: float) -> Ref | None:
        raise NotImplementedError

    def fired(self, p: float, t: int) -> None:
        pass


class Cross(OnBarClose):
    """A fast and a slow line; up when fast goes from <= slow to > slow, down mirrored."""

    __slots__ = ("down", "prev_fast", "prev_slow", "up")

    def __init__(self, direction: str) -> None:
        super().__init__()
        self.up = direction in ("up", "either")
        self.down = direction in ("down", "either")
        self.prev_fast: float | None = None
        self.prev_slow = 0.0

    def decide(self, c: float, fast: float, slow: float) -> Ref | None:
        prev_fast, prev_slow = self.prev_fast, self.prev_slow
        self.prev_fast, self.prev_slow = fast, slow
        if prev_fast is None:
            return None
        if (self.up and prev_fast <= prev_slow and fast > slow) or (
                self.down and prev_fast >= prev_slow and fast < slow):
            return {"close": c, "fast": fast, "slow": slow}
        return None


class SmaCross(Cross):
    __slots__ = ("closes", "fast", "fast_sum", "slow", "slow_sum")

    def __init__(self, fast: int, slow: int, direction: str) -> None:
        super().__init__(direction)
        self.fast, self.slow = fast, slow
        self.closes: deque[int] = deque()  # q() of the last `slow` closes
        self.fast_sum = self.slow_sum = 0

    def on_close(self, c: float) -> Ref | None:
        closes, x = self.closes, q(c)
        closes.append(x)
        self.fast_sum += x
        self.slow_sum += x
        if len(closes) > self.fast:
            self.fast_sum -= closes[-1 - self.fast]
        if len(closes) > self.slow:
            self.slow_sum -= closes.popleft()
        if len(closes) < self.slow:
            return None
        return self.decide(c, exact_mean(self.fast_sum, self.fast),
                           exact_mean(self.slow_sum, self.slow))


class EmaCross(Cross):
    __slots__ = ("alpha_fast", "alpha_slow", "bars", "ema_fast", "ema_slow", "fast",
                 "seed_sum", "slow")

    def __init__(self, fast: int, slow: int, direction: str) -> None:
        super().__init__(direction)
        self.fast, self.slow = fast, slow
        self.alpha_fast = 2 / (fast + 1)
        self.alpha_slow = 2 / (slow + 1)
        self.bars = 0
        self.seed_sum = 0  # q() sum of the closes until both averages are seeded
        self.ema_fast = self.ema_slow = 0.0

    def on_close(self, c: float) -> Ref | None:
        k = self.bars
        self.bars = k + 1
        if k < self.slow:
            self.seed_sum += q(c)
        if k == self.fast - 1:
            self.ema_fast = exact_mean(self.seed_sum, self.fast)
        elif k >= self.fast:
            self.ema_fast = self.alpha_fast * c + (1 - self.alpha_fast) * self.ema_fast
        if k < self.slow - 1:
            return None
        if k == self.slow - 1:
            self.ema_slow = exact_mean(self.seed_sum, self.slow)
        else:
            self.ema_slow = self.alpha_slow * c + (1 - self.alpha_slow) * self.ema_slow
        return self.decide(c, self.ema_fast, self.ema_slow)


class Rsi(OnBarClose):
    """Wilder's RSI of 1-minute closes; fires when it crosses ``above`` or ``below``."""

    __slots__ = ("above", "avg_gain", "avg_loss", "below", "changes", "gain_sum", "loss_sum",
                 "period", "prev_close", "prev_rsi")

    def __init__(self, period: int, above: float | None, below: float | None) -> None:
        super().__init__()
        self.period = period
        self.above, self.below = above, below
        self.prev_close: int | None = None  # q() of the previous close
        self.changes = 0
        self.gain_sum = self.loss_sum = 0  # of the first `period` changes, in q units
        self.avg_gain = self.avg_loss = 0.0
        self.prev_rsi: float | None = None

    def on_close(self, c: float) -> Ref | None:
        x = q(c)
        prev_close, self.prev_close = self.prev_close, x
        if prev_close is None:
            return None
        delta = x - prev_close
        gain_q, loss_q = max(delta, 0), max(-delta, 0)
        n = self.period
        self.changes += 1
        if self.changes <= n:
            self.gain_sum += gain_q
            self.loss_sum += loss_q
            if self.changes < n:
                return None
            self.avg_gain = exact_mean(self.gain_sum, n)
            self.avg_loss = exact_mean(self.loss_sum, n)
        else:
            self.avg_gain = (self.avg_gain * (n - 1) + gain_q / UNITS) / n
            self.avg_loss = (self.avg_loss * (n - 1) + loss_q / UNITS) / n
        total = self.avg_gain + self.avg_loss
        rsi = 100 * self.avg_gain / total if total > 0 else 50.0
        prev_rsi, self.prev_rsi = self.prev_rsi, rsi
        if prev_rsi is None:
            return None
        if self.above is not None and prev_rsi < self.above <= rsi:
            return {"rsi": rsi, "prev_rsi": prev_rsi, "threshold": self.above, "close": c}
        if self.below is not None and prev_rsi > self.below >= rsi:
            return {"rsi": rsi, "prev_rsi": prev_rsi, "threshold": self.below, "close": c}
        return None


def _describe_cross(name: str) -> Any:
    def describe(params: MaCrossParams, symbol: str, p: float, ref: Ref) -> str:
        side = "above" if ref["fast"] > ref["slow"] else "below"
        return (f"{symbol} {name}({params.fast}) crossed {side} {name}({params.slow}) at a "
                f"1-minute close of {ref['close']:g}: {ref['fast']:.6g} vs {ref['slow']:.6g} "
                f"(now {p:g})")
    return describe


def _describe_rsi(params: RsiParams, symbol: str, p: float, ref: Ref) -> str:
    side = "above" if ref["rsi"] >= ref["prev_rsi"] else "below"
    return (f"{symbol} RSI({params.period}) crossed {side} {ref['threshold']:g}: "
            f"{ref['prev_rsi']:.2f} -> {ref['rsi']:.2f} at a 1-minute close of "
            f"{ref['close']:g} (now {p:g})")


class OnBarCloseRun(Run):
    """``OnBarClose.step`` over one symbol's bar strategies: a tick within the open bar (most
    ticks) costs a minute comparison and a store, without a call; ``on_close`` at a close."""

    __slots__ = ()

    def run(self, p: float, t: int, pc: float | None, vol: int, hits: Hits, fail: Fail) -> bool:
        self.ticks += 1
        minute = t // MINUTE_MS
        quiet = self.quiet
        for i, ev in enumerate(self.evs):
            try:
                if minute <= ev.minute:  # the open bar's minute, or a late tick
                    ev.close = p
                    continue
                closed, had_bar = ev.close, ev.minute != NO_BAR
                ev.close, ev.minute = p, minute
                if had_bar:
                    ref = ev.on_close(closed)
                    if ref is not None and t >= quiet[i]:
                        hits.append((self.arms[i], ref))
            except Exception:
                fail(self.arms[i])
        return False


RUNS = {SmaCross: OnBarCloseRun, EmaCross: OnBarCloseRun, Rsi: OnBarCloseRun}


KINDS: tuple[RuleKind[Any], ...] = (
    RuleKind(name="sma_cross", params=MaCrossParams,
             evaluator=lambda p: SmaCross(p.fast, p.slow, p.direction),
             describe=_describe_cross("SMA"), api_version=API_VERSION),
    RuleKind(name="ema_cross", params=MaCrossParams,
             evaluator=lambda p: EmaCross(p.fast, p.slow, p.direction),
             describe=_describe_cross("EMA"), api_version=API_VERSION),
    RuleKind(name="rsi", params=RsiParams,
             evaluator=lambda p: Rsi(p.period, p.above, p.below),
             describe=_describe_rsi, api_version=API_VERSION),
)
