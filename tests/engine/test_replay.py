"""stormalert replay: the live rule book over a recorded CSV."""

import subprocess
import sys

import orjson

from tests.helpers import ROOT

RULES = [
    {"id": "x", "symbol": "NSE:INFY", "kind": "cross_above", "params": {"level": 100}},
    {"id": "d", "symbol": "NSE:INFY", "kind": "change_pct",
     "params": {"pct": 2, "direction": "down"}, "frequency": "once"},
    {"id": "w", "symbol": "NSE:TCS", "kind": "window_pct",
     "params": {"pct": 1, "window_s": 60, "direction": "up"}},
]
CSV = """ts,symbol,ltp,volume,pc
1700000000000,NSE:INFY,99,10,100
2023-11-14T22:13:21+00:00,NSE:INFY,101,20,100
2023-11-15T03:43:22+05:30,NSE:TCS,3000,5,
1700000003000,NSE:TCS,3030,6,
1700000004000,NSE:INFY,97.9,30,100
1700000005000,NSE:INFY,97,40,100
"""


def run(tmp_path, csv_text=CSV, rules=RULES):
    (tmp_path / "t.csv").write_text(csv_text)
    (tmp_path / "r.json").write_bytes(orjson.dumps(rules))
    return subprocess.run(
        [sys.executable, "-m", "deploy", "replay", "--ticks", str(tmp_path / "t.csv"),
         "--rules", str(tmp_path / "r.json")], capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_replay_prints_firings_in_order(tmp_path):
    out = run(tmp_path)
    assert out.returncode == 0, out.stderr
    lines = [orjson.loads(line) for line in out.stdout.splitlines()]
    assert [(x["rule"], x["ts"], x["ltp"]) for x in lines] == [
        ("x", 1700000001000, 101.0), ("w", 1700000003000, 3030.0), ("d", 1700000004000, 97.9)]
    assert lines[0]["symbol"] == "NSE:INFY" and lines[0]["kind"] == "cross_above"


def test_replay_errors_name_the_line(tmp_path):
    out = run(tmp_path, CSV.replace("1700000003000,NSE:TCS,3030", "soon,NSE:TCS,3030"))
    assert out.returncode == 2 and "t.csv:5" in out.stderr
    out = run(tmp_path, "time,sym,price\n1,NSE:INFY,1\n")
    assert out.returncode == 2 and "header lacks" in out.stderr
    bad = [{"symbol": "NSE:INFY", "kind": "trailing_pct", "params": {"pct": 150}}]
    out = run(tmp_path, rules=bad)
    assert out.returncode == 2 and "rule #0: params.pct: pct must be below 100" in out.stderr
