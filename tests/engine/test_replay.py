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


def test_recorded_kite_frames_replay_through_decode(tmp_path, fixtures_dir):
    """stormalert decode | stormalert replay: frames in, firings out."""
    frame = fixtures_dir / "kite" / "kiteconnectjs" / "fullMode_binary.packet"
    decoded = subprocess.run([sys.executable, "-m", "deploy", "decode", "--feed", "kite",
                              str(frame)], capture_output=True, cwd=ROOT, timeout=60, check=True)
    tick = orjson.loads(decoded.stdout.splitlines()[0])
    rules = [{"id": "t", "symbol": tick["sym"], "kind": "cross_above",
              "params": {"level": tick["ltp"]}}]
    (tmp_path / "r.json").write_bytes(orjson.dumps(rules))
    below = {**tick, "ltp": tick["ltp"] - 1, "ts": tick["ts"] - 1000}
    stdin = orjson.dumps(below) + b"\n" + decoded.stdout
    out = subprocess.run([sys.executable, "-m", "deploy", "replay", "--ticks", "-", "--rules",
                          str(tmp_path / "r.json")], input=stdin, capture_output=True, cwd=ROOT,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    fired = [orjson.loads(line) for line in out.stdout.splitlines()]
    assert [(f["rule"], f["ts"], f["ltp"]) for f in fired] == [("t", tick["ts"], tick["ltp"])]


def test_json_lines_errors_name_the_line(tmp_path):
    (tmp_path / "r.json").write_bytes(orjson.dumps(RULES))
    out = subprocess.run([sys.executable, "-m", "deploy", "replay", "--ticks", "-", "--rules",
                          str(tmp_path / "r.json")], input=b'{"sym": "NSE:INFY"}\n',
                         capture_output=True, cwd=ROOT, timeout=60)
    assert out.returncode == 2 and b"stdin:1: not a tick" in out.stderr
