"""The page's and the JSON answer's view of a backtest job's hash (``keys.backtest``),
and the formatting of the worker's result. Pure: a hash and a time in, a dict out."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson

from proto.backtest import MAX_QUEUED_S, STALLED_S
from proto.display import format_ist
from web.views import price


def job_state(raw: dict[str, str], at_ms: int, wait_s: float) -> tuple[str, str]:
    """(state, message) of a job's hash at ``at_ms``: queued | no_worker | running |
    stalled | done | failed. A job ends: unpicked or stalled for long, it is failed."""
    status = raw.get("status", "queued")
    if status == "done":
        return "done", "Done."
    if status == "failed":
        return "failed", "The backtest failed: " + (raw.get("error") or "no reason given")
    if status == "running":
        silent_s = (at_ms - int(raw.get("hb_ms") or 0)) / 1000
        if silent_s > MAX_QUEUED_S:
            return "failed", ("The backtest failed: its worker stopped while running it and "
                              "none took it over.")
        if silent_s > STALLED_S:
            return "stalled", ("The worker running this job stopped answering; a restarted "
                               "or another worker takes it over.")
        return "running", "Running…"
    waited_s = (at_ms - int(raw.get("hb_ms") or raw.get("requested_ms") or 0)) / 1000
    if waited_s > MAX_QUEUED_S:
        return "failed", (f"No engine worker picked this job up within "
                          f"{MAX_QUEUED_S / 60:.0f} minutes.")
    if waited_s > wait_s:
        return "no_worker", ("No engine worker running: nothing picked this job up within "
                             f"{wait_s:g} s. Start the backtest worker (`stormalert backtest`, "
                             "which `stormalert up` starts); the job waits for it "
                             f"{MAX_QUEUED_S / 60:.0f} minutes.")
    return "queued", "Waiting for an engine worker…"


def job_view(job_id: str, raw: dict[str, str], at_ms: int, wait_s: float) -> dict[str, Any]:
    state, message = job_state(raw, at_ms, wait_s)
    result: dict[str, Any] | None = None
    if state == "done":
        try:
            result = orjson.loads(raw.get("result") or "null")
        except orjson.JSONDecodeError:
            state, message = "failed", "The backtest failed: its result cannot be read."
    progress = raw.get("progress", "0")
    job: dict[str, Any] = {}
    with contextlib.suppress(orjson.JSONDecodeError):
        job = orjson.loads(raw.get("job") or "{}")
    return {"id": job_id, "state": state, "message": message,
            "pending": state in ("queued", "no_worker", "running", "stalled"),
            "progress": int(progress) if progress.isdigit() else 0,
            "rule": job.get("rule"), "stored": raw.get("draft") == "0",
            "source": job.get("source"), "days": job.get("days"),
            "csv_format": job.get("csv_format"), "result": result}


def _when(ts_ms: int | None) -> str:
    return "" if ts_ms is None else format_ist(ts_ms)


def result_view(result: dict[str, Any]) -> dict[str, Any]:
    """The page's formatting of a worker's result."""
    period = result.get("period") or {}
    sources = result.get("sources") or {}
    spans = [{"name": name, "n": span.get("n", 0), "from": _when(span.get("from_ms")),
              "to": _when(span.get("to_ms"))}
             for name, span in (("ticks", sources.get("ticks") or {}),
                                ("one-minute bars", sources.get("bars") or {}))
             if span.get("n")]
    return {
        "count": result.get("count", 0),
        "truncated": bool(result.get("truncated")),
        "from": _when(period.get("from_ms")), "to": _when(period.get("to_ms")),
        "spans": spans, "prices": result.get("prices", 0),
        "other_rows": result.get("other_rows", 0),
        "rule_errors": result.get("rule_errors", 0),
        "ended_at": _when(result.get("ended_at")),
        "firings": [{"time": format_ist(f["ts"]), "ltp": price(f["ltp"]), "msg": f["msg"],
                     "bar": f.get("src") == "bar",
                     "ref": [{"name": k, "value": f"{v:,.4g}" if abs(v) < 1000 else price(v)}
                             for k, v in sorted((f.get("ref") or {}).items())]}
                    for f in result.get("firings", [])],
    }
