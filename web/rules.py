"""The rules pages: the signed-in user's rules, a form per kind to create and edit them,
pause, resume and delete. Every form works without script; with htmx the kind's fields
swap in place and a row's buttons update only that row.

A rule is checked by ``proto.rules.parse_rule`` and written through ``proto.store``, the
same code as ``stormalert rule add``; the store appends each change to ``sa:rules:changes``,
which the engine shards apply live. A user sees and changes only their own rules: anybody
else's rule id is a 404, as if it did not exist (admins included).

*Export rules* downloads them as JSON (the shape ``GET /api/rules`` answers); *Import rules*
uploads such a file and stores each rule on its own, paused unless asked otherwise
(``web.export`` says how).
"""

from __future__ import annotations

from typing import Annotated, Any, cast

import redis
from litestar import MediaType, Request, Response, get, post
from litestar.concurrency import sync_to_thread
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotFoundException
from litestar.params import Body, FromPath, QueryParameter
from litestar.response import Redirect, Template
from litestar.status_codes import (
    HTTP_200_OK,
    HTTP_303_SEE_OTHER,
    HTTP_422_UNPROCESSABLE_ENTITY,
)

from proto import keys, store
from proto.display import alert_path
from proto.rules import RULE_ID_RE, Rule, RuleError, parse_rule
from web import export, ruleform
from web.settings import WebSettings
from web.views import User

Form = Annotated[dict[str, str | list[str]],
                 Body(media_type=RequestEncodingType.URL_ENCODED)]
DEFAULT_KIND = "cross_above"
_SCAN_CHUNK = 500


def own_rule(r: redis.Redis, user: User, rule_id: str) -> Rule:
    """The user's rule with this id; NotFoundException for any other id."""
    if not RULE_ID_RE.match(rule_id):
        raise NotFoundException()
    rule = store.get_user_rule(r, rule_id, user.name)
    if rule is None:
        raise NotFoundException()
    return rule


def delete_own_rule(r: redis.Redis, user: User, rule_id: str) -> None:
    """Remove the user's rule, even one stored but no longer valid here (its plug-in kind
    uninstalled, which ``own_rule`` reports); NotFoundException for any other id."""
    if not RULE_ID_RE.match(rule_id):
        raise NotFoundException()
    try:
        store.remove_rule(r, rule_id, user=user.name)
    except store.StoreError:
        raise NotFoundException() from None


def save_rule(r: redis.Redis, user: User, data: dict[str, Any], *, rule_id: str | None = None,
              active: bool | None = None) -> Rule:
    """Check and store the rule ``data`` describes: a new one, or the replacement of the
    user's rule ``rule_id`` (which keeps its active state unless ``active`` is given).
    Raises RuleError or StoreError, whose ``ruleform.errors_of`` say what is wrong where."""
    overrides: dict[str, Any] = {"user": user.name}
    if rule_id is None:
        if active is not None:
            overrides["active"] = active
        return store.add_rule(r, parse_rule(data, **overrides))
    current = own_rule(r, user, rule_id)
    overrides.update(id=rule_id, active=current.active if active is None else active)
    return store.update_rule(r, parse_rule(data, **overrides))


def form_errors(errors: dict[str, str]) -> dict[str, str]:
    """Errors by form input: a list item's error (``channels.0``) goes to its list."""
    out: dict[str, list[str]] = {}
    for where, msg in errors.items():
        parts = where.split(".")
        name = ".".join(parts[:2]) if parts[0] == "params" else parts[0]
        out.setdefault(name, []).append(msg)
    return {name: "; ".join(msgs) for name, msgs in out.items()}


def last_fired(r: redis.Redis, user: str, rule_ids: set[str],
               scan: int) -> dict[str, tuple[int, str]]:
    """Rule id -> (tick time in epoch ms, alert id) of its newest alert, for the rules that
    fired within the newest ``scan`` entries of ``sa:alerts``."""
    found: dict[str, tuple[int, str]] = {}
    upper, scanned = "+", 0
    while scanned < scan and len(found) < len(rule_ids):
        count = min(_SCAN_CHUNK, scan - scanned)
        chunk = cast(list[tuple[str, dict[str, str]]],
                     r.xrevrange(keys.ALERTS, max=upper, min="-", count=count))
        for _entry_id, fields in chunk:
            rule = fields.get("rule", "")
            if fields.get("user") == user and rule in rule_ids and rule not in found:
                try:
                    found[rule] = (int(fields.get("ts", "")), fields.get("id", ""))
                except ValueError:
                    continue
        scanned += len(chunk)
        if len(chunk) < count:
            break
        upper = "(" + chunk[-1][0]
    return found


def row_of(rule: Rule, last: tuple[int, str] | None) -> dict[str, Any]:
    row = ruleform.rule_row(rule, last)
    if row["last_fired"] is not None:
        row["last_fired"]["href"] = alert_path(row["last_fired"]["id"])
    return row


def _form_page(r: redis.Redis, user: User, values: dict[str, Any], *,
               errors: dict[str, str] | None = None, rule_id: str | None = None,
               status: int = 200) -> Template:
    kind = str(values.get("kind") or DEFAULT_KIND)
    chosen = values.get("channels") or ([] if errors else ["default"])
    return Template("rules_form.html", status_code=status, media_type=MediaType.HTML, context={
        "user": user, "rule_id": rule_id, "kind": kind,
        "action": f"/rules/{rule_id}" if rule_id else "/rules",
        "values": {**values, "kind": kind, "channels": chosen},
        "errors": form_errors(errors or {}),
        "kinds": ruleform.kinds(), "kind_help": ruleform.kind_help(kind),
        "fields": ruleform.param_fields(kind), "frequencies": ruleform.FREQUENCIES,
        "tags": ruleform.channel_tags(store.list_channels(r, user.name), chosen),
    })


def _submit(r: redis.Redis, user: User, data: dict[str, str | list[str]],
            rule_id: str | None) -> Response[Any]:
    """A posted form: show the other kind's fields, or save and go back to the list (or,
    for "Save and test", to the rule's test on history: a new rule is saved paused, so it
    is tested before it is armed)."""
    values = ruleform.submitted_values(data)
    action = values.pop("_action", "")
    values.pop("_csrf_token", None)
    if action == "kind":
        return _form_page(r, user, values, rule_id=rule_id)
    testing = action == "test"
    try:
        rule = save_rule(r, user, ruleform.rule_data(data), rule_id=rule_id,
                         active=False if testing and rule_id is None else None)
    except (RuleError, store.StoreError) as exc:
        return _form_page(r, user, values, errors=ruleform.errors_of(exc), rule_id=rule_id,
                          status=HTTP_422_UNPROCESSABLE_ENTITY)
    target = f"/rules/{rule.id}/test" if testing else f"/rules?saved={rule.id}"
    return Redirect(target, status_code=HTTP_303_SEE_OTHER)


# The handlers are async and hand the store's blocking calls to a worker thread themselves:
# Litestar 2.25 wraps a ``sync_to_thread`` handler a second time when a later handler joins
# its path, and the wrapped one then answers with a coroutine.


def _list_page(r: redis.Redis, user: User, scan: int, saved: str | None, *,
               report: export.ImportReport | None = None, import_error: str | None = None,
               status: int = HTTP_200_OK) -> Template:
    rules = store.list_rules(r, user.name)
    last = last_fired(r, user.name, {rule.id for rule in rules}, scan)
    rows = [row_of(rule, last.get(rule.id)) for rule in rules]
    return Template("rules.html", status_code=status, media_type=MediaType.HTML, context={
        "user": user, "rows": rows,
        "saved": saved if saved in {rule.id for rule in rules} else None,
        "report": report, "import_error": import_error,
        "import_max_rules": export.IMPORT_MAX_RULES,
        "import_max_kib": export.IMPORT_MAX_BYTES // 1024})


@get("/rules")
async def rules_page(request: Request[User, Any, Any], r: NamedDependency[redis.Redis],
                     settings: NamedDependency[WebSettings],
                     saved: Annotated[str | None, QueryParameter(max_length=64)] = None,
                     ) -> Template:
    return await sync_to_thread(_list_page, r, request.user, settings.history_scan, saved)


def known_kind(kind: str | None) -> bool:
    return bool(kind) and kind in ruleform.REGISTRY.names()


@get("/rules/new")
async def new_rule_page(
        request: Request[User, Any, Any], r: NamedDependency[redis.Redis],
        kind: Annotated[str | None, QueryParameter(max_length=64)] = None,
        symbol: Annotated[str | None, QueryParameter(max_length=64)] = None) -> Template:
    values = {"kind": kind if known_kind(kind) else DEFAULT_KIND, "symbol": symbol or ""}
    return await sync_to_thread(_form_page, r, request.user, values)


@get("/rules/params")
async def params_fragment(
        kind: Annotated[str, QueryParameter(max_length=64)] = DEFAULT_KIND) -> Template:
    """The params inputs of one kind (htmx swaps them in when the kind changes)."""
    if not known_kind(kind):
        raise NotFoundException()
    return Template("rules_params.html", media_type=MediaType.HTML, context={
        "kind": kind, "kind_help": ruleform.kind_help(kind),
        "fields": ruleform.param_fields(kind), "values": {}, "errors": {}})


@post("/rules", status_code=HTTP_200_OK)
async def create_rule(request: Request[User, Any, Any], data: Form,
                      r: NamedDependency[redis.Redis]) -> Response[Any]:
    return await sync_to_thread(_submit, r, request.user, data, None)


def _edit_page(r: redis.Redis, user: User, rule_id: str) -> Template:
    rule = own_rule(r, user, rule_id)
    return _form_page(r, user, ruleform.form_values(rule), rule_id=rule.id)


@get("/rules/{rule_id:str}/edit")
async def edit_rule_page(request: Request[User, Any, Any], rule_id: FromPath[str],
                         r: NamedDependency[redis.Redis]) -> Template:
    return await sync_to_thread(_edit_page, r, request.user, rule_id)


def _update(r: redis.Redis, user: User, rule_id: str,
            data: dict[str, str | list[str]]) -> Response[Any]:
    own_rule(r, user, rule_id)
    return _submit(r, user, data, rule_id)


@post("/rules/{rule_id:str}", status_code=HTTP_200_OK)
async def update_rule(request: Request[User, Any, Any], rule_id: FromPath[str], data: Form,
                      r: NamedDependency[redis.Redis]) -> Response[Any]:
    return await sync_to_thread(_update, r, request.user, rule_id, data)


def _change(r: redis.Redis, user: User, rule_id: str, op: str, htmx: bool,
            scan: int) -> Response[Any]:
    """Pause, resume or delete; htmx gets the row (nothing for a deleted rule) to swap in,
    a plain form goes back to the list."""
    rule: Rule | None = None
    if op == "delete":
        delete_own_rule(r, user, rule_id)
    else:
        own_rule(r, user, rule_id)
        rule = store.set_rule_active(r, rule_id, op == "resume", user=user.name)
    if not htmx:
        return Redirect("/rules", status_code=HTTP_303_SEE_OTHER)
    if rule is None:
        return Response("", media_type=MediaType.HTML)
    last = last_fired(r, user.name, {rule.id}, scan).get(rule.id)
    return Template("rules_row.html", media_type=MediaType.HTML,
                    context={"row": row_of(rule, last)})


async def _changed(request: Request[User, Any, Any], r: redis.Redis, rule_id: str, op: str,
                   settings: WebSettings) -> Response[Any]:
    htmx = bool(request.headers.get("hx-request"))
    return await sync_to_thread(_change, r, request.user, rule_id, op, htmx,
                                settings.history_scan)


@post("/rules/{rule_id:str}/pause", status_code=HTTP_200_OK)
async def pause_rule(request: Request[User, Any, Any], rule_id: FromPath[str],
                     r: NamedDependency[redis.Redis],
                     settings: NamedDependency[WebSettings]) -> Response[Any]:
    return await _changed(request, r, rule_id, "pause", settings)


@post("/rules/{rule_id:str}/resume", status_code=HTTP_200_OK)
async def resume_rule(request: Request[User, Any, Any], rule_id: FromPath[str],
                      r: NamedDependency[redis.Redis],
                      settings: NamedDependency[WebSettings]) -> Response[Any]:
    return await _changed(request, r, rule_id, "resume", settings)


@post("/rules/{rule_id:str}/delete", status_code=HTTP_200_OK)
async def delete_rule(request: Request[User, Any, Any], rule_id: FromPath[str],
                      r: NamedDependency[redis.Redis],
                      settings: NamedDependency[WebSettings]) -> Response[Any]:
    return await _changed(request, r, rule_id, "delete", settings)


def _export(r: redis.Redis, user: User) -> Response[bytes]:
    return Response(export.rules_json(store.list_rules(r, user.name)),
                    media_type=MediaType.JSON,
                    headers=export.attachment(export.filename("rules", "json")))


@get("/rules/export")
async def export_rules(request: Request[User, Any, Any],
                       r: NamedDependency[redis.Redis]) -> Response[bytes]:
    """The user's rules as a JSON file, ``{"rules": [...]}`` as ``GET /api/rules`` has it."""
    return await sync_to_thread(_export, r, request.user)


async def _upload(value: Any) -> bytes:
    """The uploaded file's bytes (a form field of text is taken as the file's content)."""
    if isinstance(value, UploadFile):
        return await value.read(export.IMPORT_MAX_BYTES + 1)
    return value.encode() if isinstance(value, str) else b""


def _import(r: redis.Redis, user: User, scan: int, data: bytes, active: bool) -> Template:
    try:
        items = export.read_rules_file(data)
    except export.ImportFileError as exc:
        return _list_page(r, user, scan, None, import_error=str(exc),
                          status=HTTP_422_UNPROCESSABLE_ENTITY)
    report = export.import_rules(r, user, items, active=active)
    failed = report.rejected and not report.imported
    return _list_page(r, user, scan, None, report=report,
                      status=HTTP_422_UNPROCESSABLE_ENTITY if failed else HTTP_200_OK)


@post("/rules/import", status_code=HTTP_200_OK,
      request_max_body_size=export.IMPORT_MAX_BYTES + 64 * 1024)
async def import_rules(request: Request[User, Any, Any], r: NamedDependency[redis.Redis],
                       settings: NamedDependency[WebSettings]) -> Template:
    """Rules from an uploaded JSON file (``file``), each stored paused unless ``active``."""
    form = await request.form()
    data = await _upload(form.get("file"))
    active = form.get("active") in ("1", "on", "true")
    return await sync_to_thread(_import, r, request.user, settings.history_scan, data, active)


ROUTES = [rules_page, new_rule_page, params_fragment, create_rule, edit_rule_page,
          update_rule, pause_rule, resume_rule, delete_rule, export_rules, import_rules]
