"""Per-field rule errors (``RuleError.fields``), what the web form shows beside each field."""

from __future__ import annotations

from typing import Any

import pytest

from proto.rules import RuleError, parse_rule


def fields_of(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(RuleError) as caught:
        parse_rule(data, user="alice")
    return caught.value.fields


def test_every_bad_field_is_named_with_its_own_reason() -> None:
    errors = fields_of({"symbol": "infy", "kind": "window_pct",
                        "params": {"pct": -1, "window_s": 0}, "cooldown_s": -5})
    assert set(errors) == {"symbol", "cooldown_s", "params.pct", "params.window_s"}
    assert errors["symbol"].startswith("symbol must look like EXCHANGE:TRADINGSYMBOL")
    assert errors["params.pct"] == "pct must be a finite number > 0"
    assert errors["params.window_s"] == "window_s must be a finite number > 0"
    assert errors["cooldown_s"] == "cooldown_s must be a finite number >= 0"


def test_params_alone_keep_the_one_line_message_the_cli_prints() -> None:
    with pytest.raises(RuleError) as caught:
        parse_rule({"symbol": "NSE:INFY", "kind": "window_pct",
                    "params": {"pct": 1, "window_s": -5}}, user="alice")
    assert str(caught.value) == "params.window_s: window_s must be a finite number > 0"
    assert caught.value.fields == {"params.window_s": "window_s must be a finite number > 0"}


def test_missing_unknown_and_whole_params_problems() -> None:
    assert fields_of({"symbol": "NSE:INFY", "kind": "cross_above", "params": {}}) == {
        "params.level": "Field required"}
    assert set(fields_of({"symbol": "NSE:INFY", "kind": "cross_above",
                          "params": {"level": 10, "lvl": 1}})) == {"params.lvl"}
    # A check of two params together has no one field to blame.
    assert fields_of({"symbol": "NSE:INFY", "kind": "rsi", "params": {}}) == {
        "params": "give above, below or both (RSI thresholds between 0 and 100)"}
    errors = fields_of({"symbol": "NSE:INFY", "kind": "nope", "frequency": "sometimes"})
    assert set(errors) == {"kind", "frequency"} and "unknown kind 'nope'" in errors["kind"]


def test_list_items_and_iso_times() -> None:
    errors = fields_of({"symbol": "NSE:INFY", "kind": "cross_above", "params": {"level": 1},
                        "channels": [], "expires_at": "2026-12-01T10:00"})
    assert errors == {
        "channels": "channels must be a non-empty list of tag names without commas",
        "expires_at": "expires_at must carry a UTC offset, e.g. +05:30"}
