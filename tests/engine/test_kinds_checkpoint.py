"""Every newer kind keeps its whole state in JSON-able slots: a rule checkpointed at any tick
and restored into a fresh evaluator fires exactly as an uninterrupted one (engine.checkpoint)."""

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.book import Armed
from engine.checkpoint import restore, snapshot
from proto.rules import parse_rule

RULES = [
    {"kind": "above", "params": {"level": 100, "rearm_pct": 0.5}, "cooldown_s": 30},
    {"kind": "below", "params": {"level": 99, "rearm_pct": 1}},
    {"kind": "channel", "params": {"low": 99, "high": 101}},
    {"kind": "volume_spike", "params": {"window_s": 30, "factor": 1.5, "baseline_windows": 3}},
    {"kind": "sma_cross", "params": {"fast": 2, "slow": 4}},
    {"kind": "ema_cross", "params": {"fast": 2, "slow": 4}, "cooldown_s": 60},
    {"kind": "rsi", "params": {"period": 3, "above": 60, "below": 40}},
    {"kind": "orb", "params": {"minutes": 5}},
]
OPEN_IST = 1_705_290_000_000  # 2024-01-15 09:10 IST


@st.composite
def ticks(draw):
    out, t, p, vol = [], OPEN_IST, 100.0, 1000
    for _ in range(draw(st.integers(1, 150))):
        t += draw(st.integers(0, 90_000))
        p = round(p + draw(st.integers(-3, 3)) * 0.05, 2)
        vol = draw(st.integers(1, 500)) if draw(st.integers(0, 30)) == 0 else (
            vol + draw(st.integers(0, 400)))
        out.append((t, p, vol))
    return out


def fires(armed_at, tick_list):
    return [i for i, (t, p, vol) in enumerate(tick_list)
            if armed_at(i).on_tick(p, t, None, vol) is not None]


@settings(max_examples=150, deadline=None)
@given(ticks(), st.sampled_from(RULES), st.data())
def test_a_restored_rule_continues_exactly(tick_list, rule_json, data):
    rule = parse_rule({"id": "r", "symbol": "NSE:INFY", **rule_json})
    whole = Armed(rule)
    expected = fires(lambda _i: whole, tick_list)
    cut = data.draw(st.integers(0, len(tick_list)))
    first = Armed(rule)
    holder = {"armed": first}

    def armed_at(i):
        if i == cut:
            restored = Armed(rule)
            raw = snapshot(holder["armed"])
            orjson.loads(raw)  # plain JSON
            assert restore(restored, raw)
            holder["armed"] = restored
        return holder["armed"]
    assert fires(armed_at, tick_list) == expected
