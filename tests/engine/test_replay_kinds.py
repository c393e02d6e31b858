"""``python -m engine.replay`` runs the bar strategies and the opening-range breakout over a
recorded CSV exactly as the live book does."""

import subprocess
import sys

import orjson

from tests.helpers import ROOT

RULES = [
    {"id": "sma", "symbol": "NSE:INFY", "kind": "sma_cross", "params": {"fast": 2, "slow": 3}},
    {"id": "orb", "symbol": "NSE:INFY", "kind": "orb", "params": {"minutes": 2}},
    {"id": "rsi", "symbol": "NSE:INFY", "kind": "rsi", "params": {"period": 2, "above": 70}},
]
CSV = """ts,symbol,ltp,volume
2024-01-15T09:14:00+05:30,NSE:INFY,11,100
2024-01-15T09:15:00+05:30,NSE:INFY,10,200
2024-01-15T09:16:00+05:30,NSE:INFY,10,300
2024-01-15T09:16:30+05:30,NSE:INFY,10.5,350
2024-01-15T09:17:00+05:30,NSE:INFY,9,400
2024-01-15T09:18:00+05:30,NSE:INFY,13,500
2024-01-15T09:19:00+05:30,NSE:INFY,12,600
"""
T0 = 1705290240000  # 2024-01-15T09:14:00+05:30


def test_replay_runs_strategy_rules_over_a_csv(tmp_path):
    (tmp_path / "t.csv").write_text(CSV)
    (tmp_path / "r.json").write_bytes(orjson.dumps(RULES))
    out = subprocess.run([sys.executable, "-m", "engine.replay", "--ticks", "t.csv",
                          "--rules", "r.json"], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [orjson.loads(line) for line in out.stdout.splitlines()]
    assert [(x["rule"], (x["ts"] - T0) // 1000, x["ltp"]) for x in lines] == [
        ("orb", 180, 9.0),  # 09:17 is below the 09:15-09:17 range low of 10
        ("sma", 300, 12.0),  # 09:19 closes the 09:18 bar (13): SMA2 11 > SMA3 10.83
        ("rsi", 300, 12.0),  # the same close takes RSI(2) from 11.1 to 80.5
    ]
    assert lines[1]["ref"] == {"close": 13.0, "fast": 11.0, "slow": 32.5 / 3}
    assert round(lines[2]["ref"]["prev_rsi"], 4) == 11.1111
    assert round(lines[2]["ref"]["rsi"], 4) == round(100 * 2.0625 / 2.5625, 4)
    assert lines[0]["msg"] == "NSE:INFY broke below its 2-minute opening range (10 - 10.5) at 9"
