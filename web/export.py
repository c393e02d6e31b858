"""Downloads and uploads of a user's own data: the alert history as CSV, the rules as JSON.

CSV cells are written for spreadsheets: text a user or a rule wrote (symbols, messages, rule
ids) that starts like a formula gets a leading apostrophe, so opening the file never runs
it. The file starts with a UTF-8 byte-order mark, which Excel needs to read non-ASCII text.

Rules go out in the shape ``GET /api/rules`` answers (``{"rules": [...]}``) and come back in
that shape or as a bare list. Each uploaded rule is checked and stored on its own by the same
code as the rules form (``proto.rules.parse_rule``, ``proto.store.add_rule``): good rules are
stored, bad ones reported with their reason. Every imported rule gets a new id; one that is
the same as a rule the user has (or an earlier one of the file) is skipped.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import redis

from proto import store
from proto.display import IST
from proto.events import Alert
from proto.rules import Rule, RuleError, parse_rule
from web.ruleform import errors_detail, errors_of
from web.views import User, ist_datetime

BOM = "\ufeff"
ALERT_COLUMNS = ("time_ist", "time_ms", "symbol", "rule_id", "kind", "price", "message",
                 "ref", "user", "alert_id", "tick_to_alert_ms", "delivery", "folded_into")
# What a spreadsheet reads as the start of a formula (tab and CR too: OWASP's list).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

IMPORT_MAX_BYTES = 1024 * 1024
IMPORT_MAX_RULES = 1000
# Fields of a rule that say what it does: two rules equal in these are the same rule.
_IDENTITY_EXCLUDED = {"id", "user", "active"}


def safe_cell(text: str) -> str:
    """A text cell a spreadsheet shows as text, never evaluates."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_text(rows: Iterable[Iterable[str]]) -> str:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()


def csv_header() -> str:
    return BOM + csv_text([ALERT_COLUMNS])


def truncated_row(reason: str) -> str:
    """The last row of an export that stopped early: the file has started, so it can only
    say so at its end."""
    return csv_text([[f"# truncated: {reason}"]])


def _deliveries(log: dict[str, Any]) -> str:
    """``channel (tag): status`` per channel, as the history page lists them."""
    parts = []
    for d in log["deliveries"]:
        tag = f" ({d['tag']})" if d["tag"] else ""
        tries = f" after {d['attempts']} tries" if d["attempts"] > 1 else ""
        parts.append(f"{d['channel']}{tag}: {d['status']}{tries}")
    return "; ".join(parts)


def alert_row(alert: Alert, log: dict[str, Any]) -> list[str]:
    """One CSV row (``ALERT_COLUMNS``); ``log`` as ``web.history.delivery_logs`` gives it."""
    text = [alert.sym, alert.rule, alert.kind, alert.msg]
    symbol, rule_id, kind, message = (safe_cell(t) for t in text)
    return [
        ist_datetime(alert.ts), str(alert.ts), symbol, rule_id, kind, repr(alert.ltp), message,
        orjson.dumps(alert.ref, option=orjson.OPT_SORT_KEYS).decode(),
        safe_cell(alert.user), safe_cell(alert.id), f"{alert.latency_us() / 1000:.2f}",
        safe_cell(_deliveries(log)), safe_cell(log["folded_into"] or ""),
    ]


def filename(what: str, ext: str, now: datetime | None = None) -> str:
    """``stormalert-WHAT-YYYYMMDD.EXT``, dated by today in IST."""
    day = (now or datetime.now(IST)).astimezone(IST).strftime("%Y%m%d")
    return f"stormalert-{what}-{day}.{ext}"


def attachment(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}"'}


# Rules -----------------------------------------------------------------------------------


def rule_doc(rule: Rule) -> dict[str, Any]:
    """A rule as ``GET /api/rules`` lists it (everything but its owner)."""
    return rule.model_dump(mode="json", exclude={"user"})


def rules_json(rules: list[Rule]) -> bytes:
    return orjson.dumps({"rules": [rule_doc(rule) for rule in rules]},
                        option=orjson.OPT_INDENT_2)


def _identity(rule: Rule) -> bytes:
    return orjson.dumps(rule.model_dump(mode="json", exclude=_IDENTITY_EXCLUDED),
                        option=orjson.OPT_SORT_KEYS)


class ImportFileError(ValueError):
    """An upload that cannot be read as a list of rules; nothing of it was stored."""


def read_rules_file(data: bytes) -> list[Any]:
    """The rules of an uploaded file: ``{"rules": [...]}`` (an export) or a bare list."""
    if not data.strip():
        raise ImportFileError("the file is empty")
    if len(data) > IMPORT_MAX_BYTES:
        raise ImportFileError(f"the file is larger than {IMPORT_MAX_BYTES // 1024} KiB")
    try:
        doc = orjson.loads(data.removeprefix(BOM.encode()))
    except orjson.JSONDecodeError as exc:
        raise ImportFileError(f"the file is not JSON: {exc}") from None
    items = doc.get("rules") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise ImportFileError('expected a list of rules, or {"rules": [...]} as exported')
    if not items:
        raise ImportFileError("the file holds no rules")
    if len(items) > IMPORT_MAX_RULES:
        raise ImportFileError(f"{len(items)} rules: at most {IMPORT_MAX_RULES} a file")
    return items


@dataclass
class ImportReport:
    """What an import did, rule by rule; ``number`` is the rule's place in the file (1-...)."""

    active: bool
    imported: list[tuple[int, Rule]] = field(default_factory=list)
    skipped: list[tuple[int, str, str]] = field(default_factory=list)  # number, label, same as
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # number, label, reason


def _label(item: Any) -> str:
    if not isinstance(item, dict):
        return "not a rule"
    return " ".join(str(item.get(k)) for k in ("symbol", "kind") if isinstance(item.get(k), str))


def import_rules(r: redis.Redis, user: User, items: list[Any], *, active: bool) -> ImportReport:
    """Check and store each rule of ``items`` as ``user``'s, with a new id, ``active`` or
    paused as chosen (the file's ``id`` and ``active`` are not used)."""
    report = ImportReport(active=active)
    have = {_identity(rule): rule.id for rule in store.list_rules(r, user.name)}
    for number, item in enumerate(items, 1):
        label = _label(item)
        try:
            if not isinstance(item, dict):
                raise RuleError("a rule must be a JSON object")
            data = {k: v for k, v in item.items() if k not in ("id", "active")}
            rule = parse_rule(data, user=user.name, active=active)
            same = have.get(_identity(rule))
            if same is not None:
                report.skipped.append((number, label, same))
                continue
            store.add_rule(r, rule)
        except (RuleError, store.StoreError) as exc:
            report.rejected.append((number, label, errors_detail(errors_of(exc))))
            continue
        have[_identity(rule)] = rule.id
        report.imported.append((number, rule))
    return report
