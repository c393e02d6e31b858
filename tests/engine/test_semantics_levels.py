"""docs/RULES.md, ``above`` / ``below`` / ``channel``, pinned case by case."""

import pytest

from tests.engine.cases import fire_indices, firings, ticks

ABOVE = {"kind": "above", "params": {"level": 100, "rearm_pct": 1}}
BELOW = {"kind": "below", "params": {"level": 100, "rearm_pct": 1}}

CASES = [
    # above: ready at i = 0, fires at p >= level, re-arms at p < level*(1 - rearm_pct/100) = 99
    ("above fires at i=0 when already above", ABOVE, ticks(101, 102), [0]),
    ("above touching the level fires", ABOVE, ticks(98, 100), [1]),
    ("above hovering at the level does not spam", ABOVE,
     ticks(99.5, 100, 99.5, 100.2, 99.01, 100.1, 99.2, 100), [1]),
    ("above re-arms strictly below the band", ABOVE, ticks(100, 99, 100, 98.99, 100), [0, 4]),
    ("above re-arm tick cannot fire", ABOVE, ticks(100, 98, 100), [0, 2]),
    ("above rearm_pct 0 re-arms below the level",
     {"kind": "above", "params": {"level": 100, "rearm_pct": 0}},
     ticks(100, 100, 99.99, 100, 101, 99, 100), [0, 3, 6]),
    ("above default band is 0.5%", {"kind": "above", "params": {"level": 100}},
     ticks(100, 99.6, 100, 99.49, 100), [0, 4]),
    ("above float as written: band edge 99.0 does not re-arm", ABOVE,
     ticks(100, 99.0, 100), [0]),  # 100*(1-0.01) == 99.0 and 99.0 < 99.0 is false
    # below mirrors: re-arms at p > 101
    ("below", BELOW, ticks(102, 100, 99, 100.5, 101, 100, 101.01, 99.9), [1, 7]),
    ("below fires at i=0", BELOW, ticks(90, 95), [0]),
    # cooldown: a suppressed firing leaves the rule ready, so it fires once cooldown ends
    ("above cooldown: suppressed firing keeps it ready",
     {**ABOVE, "cooldown_s": 3}, ticks(100, 98, 100, 100, 100, 100), [0, 3]),
    ("above cooldown and hysteresis together",
     {**ABOVE, "cooldown_s": 1}, ticks(100, 100, 98, 100, 100), [0, 3]),
    ("above once", {**ABOVE, "frequency": "once"}, ticks(100, 98, 100), [0]),
    # channel: inside = low <= p <= high; i = 0 only establishes inside/outside
    ("channel both", {"kind": "channel", "params": {"low": 100, "high": 110}},
     ticks(99, 100, 110, 110.5, 120, 105, 99, 99.5), [1, 3, 5, 6]),
    ("channel never at i=0", {"kind": "channel", "params": {"low": 100, "high": 110}},
     ticks(105, 106), []),
    ("channel enter only", {"kind": "channel", "params": {"low": 100, "high": 110, "on": "enter"}},
     ticks(99, 100, 111, 109, 95), [1, 3]),
    ("channel exit only", {"kind": "channel", "params": {"low": 100, "high": 110, "on": "exit"}},
     ticks(99, 100, 111, 109, 95), [2, 4]),
    ("channel jumping across the range is no entry",
     {"kind": "channel", "params": {"low": 100, "high": 110}}, ticks(95, 115, 95), []),
    ("channel cooldown suppresses; the inside state still follows the price",
     {"kind": "channel", "params": {"low": 100, "high": 110}, "cooldown_s": 2},
     ticks(99, 105, 111, 105, 99, 105), [1, 3, 5]),
]


@pytest.mark.parametrize(("name", "rule", "tick_list", "expected"), CASES,
                         ids=[c[0] for c in CASES])
def test_semantics(name, rule, tick_list, expected):
    assert fire_indices(rule, tick_list) == expected


def test_messages_and_reference_values():
    [above] = firings(ABOVE, ticks(101))
    assert above.ref == {"level": 100, "rearm_at": 99.0}
    assert above.msg == "NSE:INFY is at or above 100: 101 (alerts again after a dip below 99)"
    entered, left = firings({"kind": "channel", "params": {"low": 100, "high": 110}},
                            ticks(99, 105, 112))
    assert entered.msg == "NSE:INFY entered the channel [100, 110] at 105 (from 99)"
    assert left.msg == "NSE:INFY left the channel [100, 110] upwards at 112 (from 105)"
    assert left.ref == {"low": 100, "high": 110, "prev": 105}
