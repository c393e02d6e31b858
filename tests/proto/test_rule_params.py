"""Params of every newer kind are checked when a rule is stored, one clear message per field
(docs/RULES.md lists the limits)."""

import orjson
import pytest

from proto import keys, store
from proto.rulekinds import BUILTIN_PARAMS, REGISTRY
from proto.rules import PARAMS_BY_KIND, RuleError, parse_rule

BAD = [
    ("above", {"level": -1}, "params.level: level must be a finite number > 0"),
    ("above", {"level": 100, "rearm_pct": 100},
     "params.rearm_pct: rearm_pct must be a number from 0 up to (not including) 100"),
    ("below", {"level": 100, "rearm_pct": -1},
     "params.rearm_pct: rearm_pct must be a number from 0 up to (not including) 100"),
    ("below", {}, "params.level: Field required"),
    ("channel", {"low": 110, "high": 100}, "params.high: high must be above low (110)"),
    ("channel", {"low": 100, "high": 110, "on": "cross"},
     "params.on: Input should be 'enter', 'exit' or 'both'"),
    ("volume_spike", {"window_s": 0, "factor": 2},
     "params.window_s: window_s must be an integer from 1 to 3600"),
    ("volume_spike", {"window_s": 1.5, "factor": 2},
     "params.window_s: Input should be a valid integer, got a number with a fractional part"),
    ("volume_spike", {"window_s": 60, "factor": 0.5},
     "params.factor: factor must be a finite number >= 1 (a spike is at least the baseline "
     "average)"),
    ("volume_spike", {"window_s": 3600, "factor": 3, "baseline_windows": 24},
     "params: (baseline_windows + 1) * window_s must be at most 86400 s (one day); got 90000"),
    ("sma_cross", {"fast": 20, "slow": 10}, "params.slow: slow must be greater than fast (20)"),
    ("sma_cross", {"fast": 1, "slow": 10}, "params.fast: fast must be an integer from 2 to 999"),
    ("ema_cross", {"fast": 5, "slow": 5000},
     "params.slow: slow must be an integer from 3 to 1000"),
    ("ema_cross", {"fast": 5, "slow": 8, "direction": "sideways"},
     "params.direction: Input should be 'up', 'down' or 'either'"),
    ("rsi", {"period": 14}, "params: give above, below or both (RSI thresholds between 0 and 100)"),
    ("rsi", {"period": 1, "above": 70}, "params.period: period must be an integer from 2 to 1000"),
    ("rsi", {"above": 100}, "params.above: above must be a number between 0 and 100 (exclusive)"),
    ("rsi", {"above": 30, "below": 70}, "params.below: below must be less than above (30)"),
    ("orb", {"minutes": 0}, "params.minutes: minutes must be an integer from 1 to 374"),
    ("orb", {"minutes": 15, "size": 2}, "params.size: Extra inputs are not permitted"),
]


@pytest.mark.parametrize(("kind", "params", "message"), BAD, ids=[f"{k}-{m}" for k, _, m in BAD])
def test_bad_params_are_named(kind, params, message):
    with pytest.raises(RuleError) as exc:
        parse_rule({"symbol": "NSE:INFY", "kind": kind, "params": params})
    assert str(exc.value) == message


def test_defaults_are_filled_in_when_stored():
    rule = parse_rule({"symbol": "NSE:INFY", "kind": "volume_spike",
                       "params": {"window_s": 60, "factor": 3}})
    assert rule.params == {"window_s": 60, "factor": 3.0, "baseline_windows": 20}
    rule = parse_rule({"symbol": "NSE:INFY", "kind": "rsi", "params": {"below": 30}})
    assert rule.params == {"period": 14, "above": None, "below": 30.0}


def test_every_builtin_kind_is_known_and_unknown_kinds_list_them():
    assert set(BUILTIN_PARAMS) <= set(PARAMS_BY_KIND)
    assert PARAMS_BY_KIND["orb"] is BUILTIN_PARAMS["orb"] and "nope" not in PARAMS_BY_KIND
    with pytest.raises(RuleError, match="unknown kind 'nope'; known: above, below, change_pct"):
        parse_rule({"symbol": "NSE:INFY", "kind": "nope"})
    assert REGISTRY.names() == sorted(PARAMS_BY_KIND)


def test_a_stored_rule_of_a_kind_not_installed_is_skipped_not_fatal(r, caplog):
    good = parse_rule({"id": "ok", "symbol": "NSE:INFY", "kind": "above", "params": {"level": 1}})
    r.hset(keys.RULES, mapping={"ok": good.to_json(), "gone": orjson.dumps(
        {"id": "gone", "symbol": "NSE:INFY", "kind": "uninstalled_plugin", "params": {}})})
    assert [rule.id for rule in store.list_rules(r)] == ["ok"]
    assert "stored rule gone skipped: kind: unknown kind 'uninstalled_plugin'" in caplog.text
    assert r.hexists(keys.RULES, "gone")  # kept for when the plug-in is back


def test_list_rules_filters_by_symbol_before_validating_and_reports_unreadable_ones(r, caplog):
    rules = {sym: parse_rule({"id": sym.split(":")[1].lower(), "symbol": sym, "kind": "above",
                              "params": {"level": 1}}) for sym in ("NSE:INFY", "NSE:TCS")}
    r.hset(keys.RULES, mapping={rule.id: rule.to_json() for rule in rules.values()} | {
        "elsewhere": orjson.dumps({"id": "elsewhere", "symbol": "NSE:TCS", "kind": "nope"}),
        "broken": b"{not json"})
    kept = store.list_rules(r, symbol_filter=lambda symbol: symbol == "NSE:INFY")
    assert [rule.id for rule in kept] == ["infy"]
    assert "elsewhere" not in caplog.text  # another shard's rule: not even validated here
    assert "stored rule ? skipped: " in caplog.text  # unreadable: validated, so reported
