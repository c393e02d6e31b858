"""Test on history: run a rule over recorded prices before arming it.

The web process never evaluates a rule (nor imports engine): it checks the request (the rule
with ``proto.rules``, an uploaded file with ``proto.backtest.read_csv``, the reader the
worker uses), stores the job in ``keys.backtest(user, id)`` and appends it to
``keys.BACKTEST_JOBS``; the engine's backtest worker (``python -m engine.backtest``) writes
progress and the result into that hash. The job's page reloads itself while it waits (htmx
polling with scripts, a meta refresh without) and says so when no worker picks the job up.
A user sees only their own jobs and rules: anything else is a 404.

Routes: ``GET/POST /rules/{id}/test`` (a stored rule), ``GET /backtests/new`` and
``POST /backtests`` (a draft: the rule form's fields), ``GET /backtests/{job}``; JSON:
``POST /api/rules/{id}/test``, ``POST /api/backtests``, ``GET /api/backtests/{job}``.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any, Literal, cast

import anyio.to_thread
import orjson
import redis.asyncio as aredis
from litestar import MediaType, Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, JSONBody
from litestar.response import Redirect, Template
from litestar.status_codes import (
    HTTP_202_ACCEPTED,
    HTTP_303_SEE_OTHER,
    HTTP_400_BAD_REQUEST,
    HTTP_429_TOO_MANY_REQUESTS,
)
from pydantic import BaseModel, ConfigDict, ValidationError

from proto import keys
from proto.backtest import (
    CSV_MAX_BYTES,
    MAX_DAYS,
    MAX_QUEUED_S,
    CsvError,
    Job,
    read_csv,
)
from proto.rules import RULE_ID_RE, Rule, RuleError, describe_validation_error, parse_rule
from web.backtest_view import job_view, result_view
from web.settings import WebSettings
from web.views import User

JOB_ID_RE = re.compile(r"[A-Za-z0-9_-]{16}")
REFRESH_S = 1
UPLOAD_LIMIT = CSV_MAX_BYTES + 256 * 1024  # the file and the form's other fields
DRAFT_FIELDS = ("symbol", "kind", "params", "frequency", "cooldown_s", "market_hours_only",
                "expires_at")
HTML = MediaType.HTML


class FormError(Exception):
    """A request that cannot become a job: each bad field and why, and the file's bad lines."""

    def __init__(self, fields: dict[str, str], problems: list[str] | None = None) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields
        self.problems = problems or []

    def as_json(self) -> dict[str, Any]:
        return {"status": 400, "detail": str(self), "fields": self.fields,
                "problems": self.problems}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# The request --------------------------------------------------------------------------------


def make_job(rule: Rule, source: str, days: Any, csv_format: Any,
             csv_text: str | None) -> Job:
    """The job, checked as the worker will read it; FormError names each bad field."""
    if source not in ("days", "csv"):
        raise FormError({"source": "choose the last days or a CSV file"})
    fields: dict[str, Any] = {"rule": rule, "source": source}
    if source == "days":
        fields["days"] = days
    else:
        fields["csv_format"] = csv_format or None
        if not csv_text:
            raise FormError({"csv": "choose a CSV file"})
    try:
        return Job.model_validate(fields)
    except ValidationError as exc:
        raise FormError(job_errors(exc)) from None


FRIENDLY = {"days": f"give a whole number of days, 1 to {MAX_DAYS}",
            "csv_format": "say whether the file holds ticks or bars"}


def job_errors(exc: ValidationError) -> dict[str, str]:
    errors: dict[str, str] = {}
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        field = str(err["loc"][0]) if err["loc"] else msg.partition(": ")[0]
        errors[field] = FRIENDLY.get(field, msg)
    return errors or {"source": describe_validation_error(exc)}


async def check_csv(job: Job, csv_text: str | None) -> None:
    """The file's bad lines, read off the event loop (a large file takes a while)."""
    if job.source != "csv":
        return
    try:
        await anyio.to_thread.run_sync(read_csv, csv_text or "", job.csv_format or "",
                                       job.rule.symbol)
    except CsvError as exc:
        raise FormError({"csv": "the file cannot be used"}, exc.problems) from None


async def upload_text(value: Any) -> str | None:
    """The uploaded file as text: UTF-8 (a BOM allowed), at most ``CSV_MAX_BYTES``."""
    if isinstance(value, UploadFile):
        data = await value.read(CSV_MAX_BYTES + 1)
    elif isinstance(value, str):
        data = value.encode()
    else:
        return None
    if not data:
        return None
    if len(data) > CSV_MAX_BYTES:
        raise FormError({"csv": f"the file is larger than {CSV_MAX_BYTES // (1024 * 1024)} MiB"})
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise FormError({"csv": "the file is not UTF-8 text"}) from None


def draft_rule(form: dict[str, Any], user: User) -> Rule:
    """A rule from the rule form's fields: ``params`` as a JSON object and/or ``params.NAME``
    fields (text; the kind's model converts numbers)."""
    data: dict[str, Any] = {k: form[k] for k in DRAFT_FIELDS
                            if isinstance(form.get(k), str) and form[k].strip() != ""}
    params: Any = {}
    if "params" in data:
        try:
            params = orjson.loads(data["params"])
        except orjson.JSONDecodeError:
            raise FormError({"params": "params must be a JSON object"}) from None
        if not isinstance(params, dict):
            raise FormError({"params": "params must be a JSON object"})
    for name, value in form.items():
        if name.startswith("params.") and isinstance(value, str) and value.strip():
            params[name.removeprefix("params.")] = value.strip()
    data["params"] = params
    data["market_hours_only"] = str(data.get("market_hours_only", "")).lower() in (
        "on", "true", "1", "yes")
    try:
        return parse_rule(data, user=user.name)
    except RuleError as exc:
        raise FormError(exc.fields or {"rule": str(exc)}) from None


async def own_rule(ar: aredis.Redis, user: User, rule_id: str) -> Rule:
    """One of this user's stored rules; NotFoundException for anybody else's or none."""
    if not RULE_ID_RE.match(rule_id):
        raise NotFoundException()
    body = await ar.hget(keys.RULES, rule_id)
    if not body:
        raise NotFoundException()
    try:
        rule = Rule.model_validate_json(body)
    except ValidationError:
        raise NotFoundException() from None  # e.g. its kind's plug-in is not installed here
    if rule.user != user.name:
        raise NotFoundException()
    return rule


async def queue(ar: aredis.Redis, user: User, job: Job, csv_text: str | None, *,
                draft: bool) -> str:
    """Store the job's hash, then append it to the stream; returns the job id."""
    job_id = secrets.token_urlsafe(12)  # 16 characters of JOB_ID_RE
    key = keys.backtest(user.name, job_id)
    at_ms = now_ms()
    mapping: dict[str, str | int] = {"requested_ms": at_ms, "status": "queued",
                               "job": job.model_dump_json(), "draft": int(draft)}
    if job.source == "csv" and csv_text:
        mapping["csv"] = csv_text
    # Not a transaction: the two keys live in different hash slots of a cluster. The hash
    # goes first, since the worker skips jobs whose hash is gone.
    async with ar.pipeline(transaction=False) as pipe:
        pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
        # Until a worker takes it: an upload not run soon does not stay in Redis for long.
        pipe.expire(key, int(MAX_QUEUED_S) + 300)
        pipe.xadd(keys.BACKTEST_JOBS, {"id": job_id, "user": user.name, "at_ms": at_ms},
                  maxlen=keys.BACKTEST_JOBS_MAXLEN, approximate=True)
        await pipe.execute()
    return job_id


async def within_rate(ar: aredis.Redis, user: User, per_minute: int) -> bool:
    """Counts this request; False past ``per_minute`` backtests in the current minute."""
    key = keys.backtest_rate(user.name, now_ms() // 60_000)
    async with ar.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, 120)
        count, _ = await pipe.execute()
    return int(count) <= per_minute


def too_many(per_minute: int) -> FormError:
    return FormError({"source": f"at most {per_minute} backtests a minute: try again shortly"})





async def load_view(ar: aredis.Redis, user: User, job_id: str,
                    settings: WebSettings) -> dict[str, Any]:
    """One of this user's jobs; NotFoundException for any other id."""
    if not JOB_ID_RE.fullmatch(job_id):
        raise NotFoundException()
    raw = cast(dict[str, str], await ar.hgetall(keys.backtest(user.name, job_id)))
    if not raw:
        raise NotFoundException()
    raw.pop("csv", None)
    return job_view(job_id, raw, now_ms(), settings.backtest_wait_s)


# Pages ------------------------------------------------------------------------------------


def form_page(user: User, action: str, rule: Rule | None, form: dict[str, Any],
              error: FormError | None = None,
              status: int = HTTP_400_BAD_REQUEST) -> Template:
    return Template("backtest_form.html", media_type=HTML,
                    status_code=status if error else 200,
                    context={"user": user, "action": action, "rule": rule, "form": form,
                             "draft": {k: v for k, v in form.items()
                                       if k in DRAFT_FIELDS or k.startswith("params.")},
                             "errors": error.fields if error else {},
                             "problems": error.problems if error else [],
                             "max_days": MAX_DAYS,
                             "max_mib": CSV_MAX_BYTES // (1024 * 1024)})


async def form_fields(request: Request[User, Any, Any]) -> dict[str, Any]:
    form = await request.form()
    return {k: v for k, v in form.items() if k != "_csrf_token"}


async def job_from_form(form: dict[str, Any], rule: Rule) -> tuple[Job, str | None]:
    source = str(form.get("source") or "days")
    csv_text = await upload_text(form.get("csv")) if source == "csv" else None
    job = make_job(rule, source, form.get("days"), form.get("csv_format"), csv_text)
    await check_csv(job, csv_text)
    return job, csv_text


def to_job_page(job_id: str) -> Redirect:
    return Redirect(f"/backtests/{job_id}", status_code=HTTP_303_SEE_OTHER)


@get("/rules/{rule_id:str}/test")
async def rule_test_page(request: Request[User, Any, Any], rule_id: FromPath[str],
                         ar: NamedDependency[aredis.Redis]) -> Template:
    rule = await own_rule(ar, request.user, rule_id)
    return form_page(request.user, f"/rules/{rule_id}/test", rule, {"source": "days",
                                                                    "days": "1"})


@post("/rules/{rule_id:str}/test", request_max_body_size=UPLOAD_LIMIT)
async def rule_test(request: Request[User, Any, Any], rule_id: FromPath[str],
                    ar: NamedDependency[aredis.Redis],
                    settings: NamedDependency[WebSettings]) -> Response[Any]:
    rule = await own_rule(ar, request.user, rule_id)
    form = await form_fields(request)
    per_minute = settings.backtest_jobs_per_minute
    if not await within_rate(ar, request.user, per_minute):
        return form_page(request.user, f"/rules/{rule_id}/test", rule, form,
                         too_many(per_minute), HTTP_429_TOO_MANY_REQUESTS)
    try:
        job, csv_text = await job_from_form(form, rule)
    except FormError as exc:
        return form_page(request.user, f"/rules/{rule_id}/test", rule, form, exc)
    return to_job_page(await queue(ar, request.user, job, csv_text, draft=False))


@get("/backtests/new")
async def draft_test_page(request: Request[User, Any, Any]) -> Template:
    """The test form for a rule being drafted; its fields come in the query string."""
    form = {k: v for k, v in request.query_params.items()
            if k in DRAFT_FIELDS or k.startswith("params.")}
    return form_page(request.user, "/backtests", None, {"source": "days", "days": "1", **form})


@post("/backtests", request_max_body_size=UPLOAD_LIMIT)
async def draft_test(request: Request[User, Any, Any], ar: NamedDependency[aredis.Redis],
                     settings: NamedDependency[WebSettings]) -> Response[Any]:
    form = await form_fields(request)
    per_minute = settings.backtest_jobs_per_minute
    if not await within_rate(ar, request.user, per_minute):
        return form_page(request.user, "/backtests", None, form, too_many(per_minute),
                         HTTP_429_TOO_MANY_REQUESTS)
    try:
        rule = draft_rule(form, request.user)
        job, csv_text = await job_from_form(form, rule)
    except FormError as exc:
        return form_page(request.user, "/backtests", None, form, exc)
    return to_job_page(await queue(ar, request.user, job, csv_text, draft=True))


@get("/backtests/{job_id:str}")
async def job_page(request: Request[User, Any, Any], job_id: FromPath[str],
                   ar: NamedDependency[aredis.Redis],
                   settings: NamedDependency[WebSettings]) -> Template:
    view = await load_view(ar, request.user, job_id, settings)
    shown = result_view(view["result"]) if view["result"] is not None else None
    template = "backtest_job.html"
    if request.headers.get("hx-request"):
        template = "backtest_status.html"  # the part htmx swaps in
    return Template(template, media_type=HTML,
                    context={"user": request.user, "b": view, "r": shown,
                             "refresh_s": REFRESH_S})


# JSON -------------------------------------------------------------------------------------


class TestRequest(BaseModel):
    """A backtest of a stored rule: the last ``days`` days, or a CSV file's text."""

    __test__ = False  # not a pytest class, whatever its name
    model_config = ConfigDict(extra="forbid")

    days: int | None = None
    csv: str | None = None
    csv_format: Literal["ticks", "bars"] | None = None


class DraftTestRequest(TestRequest):
    """A backtest of a rule not stored: the rule as ``POST /api/rules`` takes it."""

    rule: dict[str, Any]


def _bad(exc: FormError) -> Response[Any]:
    return Response(exc.as_json(), status_code=HTTP_400_BAD_REQUEST)


async def _api_queue(ar: aredis.Redis, user: User, rule: Rule, body: TestRequest,
                     settings: WebSettings, *, draft: bool) -> Response[Any]:
    per_minute = settings.backtest_jobs_per_minute
    if not await within_rate(ar, user, per_minute):
        return Response(too_many(per_minute).as_json() | {"status": 429},
                        status_code=HTTP_429_TOO_MANY_REQUESTS)
    source = "csv" if body.csv is not None else "days"
    try:
        csv_text = await upload_text(body.csv) if source == "csv" else None
        job = make_job(rule, source, 1 if body.days is None else body.days, body.csv_format,
                       csv_text)
        await check_csv(job, csv_text)
    except FormError as exc:
        return _bad(exc)
    job_id = await queue(ar, user, job, csv_text, draft=draft)
    return Response({"id": job_id, "href": f"/backtests/{job_id}",
                     "api": f"/api/backtests/{job_id}"}, status_code=HTTP_202_ACCEPTED)


@post("/api/rules/{rule_id:str}/test", request_max_body_size=UPLOAD_LIMIT,
      status_code=HTTP_202_ACCEPTED)
async def api_rule_test(request: Request[User, Any, Any], rule_id: FromPath[str],
                        data: JSONBody[TestRequest], ar: NamedDependency[aredis.Redis],
                        settings: NamedDependency[WebSettings]) -> Response[Any]:
    """Queue a backtest of one of your rules; 202 with the job's id and addresses."""
    rule = await own_rule(ar, request.user, rule_id)
    return await _api_queue(ar, request.user, rule, data, settings, draft=False)


@post("/api/backtests", request_max_body_size=UPLOAD_LIMIT,
      status_code=HTTP_202_ACCEPTED)
async def api_draft_test(request: Request[User, Any, Any], data: JSONBody[DraftTestRequest],
                         ar: NamedDependency[aredis.Redis],
                         settings: NamedDependency[WebSettings]) -> Response[Any]:
    """Queue a backtest of a rule given in the body (not stored)."""
    try:
        rule = parse_rule({k: v for k, v in data.rule.items() if k != "id"},
                          user=request.user.name)
    except RuleError as exc:
        return _bad(FormError(exc.fields or {"rule": str(exc)}))
    return await _api_queue(ar, request.user, rule, data, settings, draft=True)


@get("/api/backtests/{job_id:str}")
async def api_job(request: Request[User, Any, Any], job_id: FromPath[str],
                  ar: NamedDependency[aredis.Redis],
                  settings: NamedDependency[WebSettings]) -> dict[str, Any]:
    """A job's state, progress and (when done) result; 404 for anybody else's."""
    return await load_view(ar, request.user, job_id, settings)


ROUTES = [rule_test_page, rule_test, draft_test_page, draft_test, job_page, api_rule_test,
          api_draft_test, api_job]
