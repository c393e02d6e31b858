"""``python -m ingest.decode`` as a real subprocess on the captured fixture frames."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]


def run_decode(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ingest.decode", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_decodes_fixture_files(fixtures_dir: Path) -> None:
    kite_dir = fixtures_dir / "kite"
    files = [kite_dir / "kiteconnectjs/ltpMode_binary.packet",
             kite_dir / "kiteconnectjs/fullMode_binary.packet",
             kite_dir / "kiteconnect-mocks/ticker_full.packet",
             kite_dir / "kiteconnect-mocks/ticker_quote.packet"]
    proc = run_decode("--feed", "kite", *files)
    assert proc.returncode == 0, proc.stderr
    ticks = [orjson.loads(line) for line in proc.stdout.splitlines()]
    assert [t["tok"] for t in ticks] == ["884737", "884737", "408065", "408065"]
    ltp_tick, full_tick, infy_full, infy_quote = ticks
    assert ltp_tick["ltp"] == 392.95 and ltp_tick["vol"] == 0 and "pc" not in ltp_tick
    assert full_tick["vol"] == 22261032 and full_tick["bid"] == 392.95 and "ask" not in full_tick
    assert infy_full["ltp"] == 1573.7 and infy_full["ts"] == 1625461887000
    assert infy_quote["ltp"] == 1573.15 and infy_quote["pc"] == 1567.8
    for t in ticks:
        assert t["src"] == "kite" and t["sym"] == f"KITE:{t['tok']}"
        assert isinstance(t["ts"], int) and isinstance(t["rx"], int)


def test_base64_text_with_several_frames(tmp_path: Path, fixtures_dir: Path) -> None:
    import base64

    raw = (fixtures_dir / "kite/kiteconnectjs/quoteMode_binary.packet").read_bytes()
    capture = tmp_path / "two.b64"
    capture.write_text(base64.b64encode(raw).decode() + "\n" + base64.b64encode(raw).decode())
    proc = run_decode("--feed", "kite", capture)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 2


def test_broken_frame_names_the_file(tmp_path: Path, fixtures_dir: Path) -> None:
    raw = (fixtures_dir / "kite/kiteconnectjs/fullMode_binary.packet").read_bytes()
    broken = tmp_path / "broken.bin"
    broken.write_bytes(raw[:100])
    proc = run_decode("--feed", "kite", broken)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(broken) in lines[0] and "truncated" in lines[0]


def test_missing_file_is_one_line_error(tmp_path: Path) -> None:
    proc = run_decode("--feed", "kite", tmp_path / "nope.bin")
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1 and "nope.bin" in proc.stderr


def test_unknown_feed_is_refused() -> None:
    proc = run_decode("--feed", "nasdaq", "x")
    assert proc.returncode == 2
