"""docs/RULES.md, ``volume_spike``, ``sma_cross``, ``ema_cross``, ``rsi`` and ``orb``, pinned
case by case. Ticks are (t_ms, price[, pc[, cumulative volume]])."""

from datetime import datetime, timedelta, timezone

import pytest

from tests.engine.cases import fire_indices, firings

IST = timezone(timedelta(hours=5, minutes=30))
M = 60_000


def vticks(*pairs: tuple[int, int]) -> list[tuple]:
    """(t_ms, cumulative volume) pairs at price 100."""
    return [(t, 100.0, None, v) for t, v in pairs]


def minutes(*closes: float) -> list[tuple]:
    """One tick per minute; the tick of minute k + 1 closes bar k at its price."""
    return [(k * M, c) for k, c in enumerate(closes)]


def ist(day: int, hh: int, mm: int, ss: int = 0) -> int:
    return int(datetime(2024, 1, 14 + day, hh, mm, ss, tzinfo=IST).timestamp() * 1000)


SPIKE = {"kind": "volume_spike", "params": {"window_s": 1, "factor": 2, "baseline_windows": 2}}
BASE = [(0, 100), (1000, 110), (2000, 120), (3000, 130)]  # 10 a second after the reference
SMA = {"kind": "sma_cross", "params": {"fast": 2, "slow": 3}}
EMA = {"kind": "ema_cross", "params": {"fast": 3, "slow": 7}}
RSI = {"kind": "rsi", "params": {"period": 2, "above": 70, "below": 30}}
ORB = {"kind": "orb", "params": {"minutes": 15}}
ORB_DAY = [(ist(1, 9, 10), 200), (ist(1, 9, 15), 100), (ist(1, 9, 20), 105),
           (ist(1, 9, 29, 59), 98), (ist(1, 9, 30), 104), (ist(1, 9, 31), 105),
           (ist(1, 9, 32), 105.5), (ist(1, 9, 33), 110), (ist(1, 9, 40), 90)]

CASES = [
    # volume_spike: window (s-1, s], baseline (s-3, s-1] averaged over 2, warm-up 3 s
    ("spike fires; the window restarts after a firing", SPIKE,
     vticks(*BASE, (4000, 160), (4500, 170), (5000, 200), (6000, 300)), [4, 7]),
    ("spike not before the baseline lies after the reference tick", SPIKE,
     vticks((0, 100), (1000, 110), (2000, 1000)), []),
    ("spike without a day reset", SPIKE,
     vticks(*BASE, (4000, 140), (5000, 150), (6000, 1000)), [6]),
    ("spike: a fall in volume is a new day and a new warm-up", SPIKE,
     vticks(*BASE, (4000, 50), (5000, 60), (6000, 1000), (7000, 1010)), []),
    ("spike: ticks without volume are ignored", SPIKE,
     vticks(*BASE, (3500, 0), (4000, 160), (4100, 0)), [5]),
    ("spike never against a silent baseline", SPIKE,
     vticks((0, 100), (1000, 100), (2000, 100), (3000, 100), (4000, 200)), []),
    ("spike without cooldown: new volume after a firing fires again", SPIKE,
     vticks(*BASE, (4000, 160), (4200, 260), (4600, 260)), [4, 5]),
    ("spike cooldown: a suppressed firing does not restart the window",
     {**SPIKE, "cooldown_s": 0.5}, vticks(*BASE, (4000, 160), (4200, 260), (4600, 260)), [4, 6]),
    ("spike once", {**SPIKE, "frequency": "once"},
     vticks(*BASE, (4000, 160), (4200, 260), (6000, 1000)), [4]),
    # sma_cross: SMA2 vs SMA3 of closes; decided at the tick that closes a bar
    ("sma either", SMA, minutes(10, 10, 10, 9, 12, 12), [4, 5]),
    ("sma up", {**SMA, "params": {**SMA["params"], "direction": "up"}},
     minutes(10, 10, 10, 9, 12, 12), [5]),
    ("sma down", {**SMA, "params": {**SMA["params"], "direction": "down"}},
     minutes(10, 10, 10, 9, 12, 12), [4]),
    ("sma: ticks inside a minute only move its close", SMA,
     [(0, 10), (M, 10), (2 * M, 10), (3 * M, 50), (3 * M + 59_999, 9), (4 * M, 12), (5 * M, 12)],
     [5, 6]),
    ("sma: the open bar never decides", SMA, minutes(10, 10, 10, 9), []),
    ("sma cooldown suppresses without changing the lines",
     {**SMA, "cooldown_s": 90}, minutes(10, 10, 10, 9, 12, 12, 9, 9), [4, 7]),
    # ema_cross: alpha 0.5 and 0.25, seeded with the SMA of the first 3 and 7 closes
    ("ema either", EMA, minutes(*[100] * 7, 104, 96, 96), [8, 9]),
    ("ema: the bar that seeds the slow EMA only records", EMA, minutes(*[100] * 6, 104, 104), []),
    # rsi(2): first RSI at bar 2 (100), then 50, 83.3, 27.8
    ("rsi above and below", RSI, minutes(100, 101, 102, 101, 103, 100, 100), [5, 6]),
    ("rsi first value never fires", {"kind": "rsi", "params": {"period": 2, "above": 70}},
     minutes(100, 101, 102, 103), []),
    ("rsi once", {**RSI, "frequency": "once"}, minutes(100, 101, 102, 101, 103, 100, 100), [5]),
    # orb: range = ticks in [09:15, 09:30) IST, fires once a day on a break after 09:30
    ("orb up then done for the day", ORB, ORB_DAY, [6]),
    ("orb down", {"kind": "orb", "params": {"minutes": 15, "direction": "down"}}, ORB_DAY, [8]),
    ("orb again the next day", ORB,
     [*ORB_DAY, (ist(2, 9, 15), 100), (ist(2, 9, 30), 120)], [6, 10]),
    ("orb ignores a late tick of an earlier day", ORB,
     [*ORB_DAY[:6], (ist(2, 9, 15), 100), (ist(1, 9, 32), 120), (ist(2, 9, 29), 101)], []),
    ("orb needs a tick inside the range", ORB,
     [(ist(1, 9, 14), 100), (ist(1, 9, 45), 120)], []),
    ("orb cooldown: a suppressed break leaves the day open",
     {**ORB, "cooldown_s": 86_400},
     [*ORB_DAY, (ist(2, 9, 15), 100), (ist(2, 9, 30), 120), (ist(2, 9, 33), 121)], [6, 11]),
]


@pytest.mark.parametrize(("name", "rule", "tick_list", "expected"), CASES,
                         ids=[c[0] for c in CASES])
def test_semantics(name, rule, tick_list, expected):
    assert fire_indices(rule, tick_list) == expected


def test_reference_values_and_messages():
    [spike] = firings(SPIKE, vticks(*BASE, (4000, 160)))
    assert spike.ref == {"window_volume": 30, "baseline_avg": 10.0}
    assert spike.msg == ("NSE:INFY traded 30 in 1s, 3.0x its average of 10 over the previous "
                         "2 windows (price 100)")
    down, up = firings(SMA, minutes(10, 10, 10, 9, 12, 12))
    assert down.ref == {"close": 9, "fast": 9.5, "slow": 29 / 3}
    assert up.msg.startswith("NSE:INFY SMA(2) crossed above SMA(3) at a 1-minute close of 12")
    over, _under = firings(RSI, minutes(100, 101, 102, 101, 103, 100, 100))
    assert over.ref == {"rsi": 100 * 1.25 / 1.5, "prev_rsi": 50.0, "threshold": 70, "close": 103}
    [orb] = firings(ORB, ORB_DAY)
    assert orb.ref == {"range_high": 105, "range_low": 98}
    assert orb.msg == "NSE:INFY broke above its 15-minute opening range (98 - 105) at 105.5"
