"""The rules JSON API for scripts, mirroring the rules pages: list, create, read, replace,
delete, pause and resume the caller's rules.

Bodies and answers are typed (dataclasses) so the OpenAPI schema describes them. A rule is
checked and stored by the same code as the form and ``stormalert rule add``
(``web.rules.save_rule``); a rejected rule is a 400 whose ``errors`` maps each bad field
(``symbol``, ``params.pct``, ...) to its reason, and so is a body of the wrong shape. Another
user's rule id is a 404, as if it did not exist.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import redis
from litestar import Request, Response, delete, get, post, put
from litestar.concurrency import sync_to_thread
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody, KwargDefinition
from litestar.status_codes import HTTP_200_OK, HTTP_400_BAD_REQUEST, HTTP_404_NOT_FOUND
from litestar.types import ExceptionHandlersMap

from proto import store
from proto.rules import Rule, RuleError
from web.ruleform import errors_detail, errors_of
from web.rules import delete_own_rule, own_rule, save_rule
from web.views import User

Frequency = Literal["once", "every", "once_per_bar"]


@dataclass
class RuleIn:
    """A rule to create, or the whole new content of one (PUT). Semantics of each kind and
    option: README "Rules" and docs/RULES.md."""

    symbol: Annotated[str, KwargDefinition(description="EXCHANGE:TRADINGSYMBOL, e.g. NSE:INFY")]
    kind: Annotated[str, KwargDefinition(description=(
        "cross_above, cross_below, change_pct, trailing_pct, window_pct, above, below, "
        "channel, volume_spike, sma_cross, ema_cross, rsi, orb, or a plug-in kind"))]
    params: Annotated[dict[str, Any], KwargDefinition(description=(
        'The kind\'s parameters, e.g. {"pct": 1.5, "window_s": 300} for window_pct'))] = \
        field(default_factory=dict)
    frequency: Frequency = "every"
    cooldown_s: Annotated[float, KwargDefinition(description=(
        "Seconds after a firing during which the rule does not fire again"))] = 0.0
    market_hours_only: Annotated[bool, KwargDefinition(description=(
        "See only ticks of the NSE session (09:15-15:30 IST, Monday to Friday)"))] = False
    expires_at: Annotated[int | str | None, KwargDefinition(description=(
        "When the rule ends: epoch ms, or ISO-8601 with an offset"))] = None
    channels: Annotated[list[str], KwargDefinition(description=(
        "Tags of the user's channels to notify"))] = field(default_factory=lambda: ["default"])
    active: Annotated[bool | None, KwargDefinition(description=(
        "false stores the rule paused; left out, a new rule is active and a replaced one "
        "keeps its state"))] = None


@dataclass
class RuleOut:
    id: str
    symbol: str
    kind: str
    params: dict[str, Any]
    frequency: Frequency
    cooldown_s: float
    market_hours_only: bool
    expires_at: int | None
    channels: list[str]
    active: bool


@dataclass
class RuleList:
    rules: list[RuleOut]


@dataclass
class RuleErrors:
    """A rule that was not stored: ``errors`` maps each bad field to its reason (``""`` for
    the rule as a whole); ``detail`` says it all in one line."""

    status: int
    detail: str
    errors: dict[str, str]


@dataclass
class NotFound:
    status: int
    detail: str


def rule_out(rule: Rule) -> RuleOut:
    return RuleOut(id=rule.id, symbol=rule.symbol, kind=rule.kind, params=dict(rule.params),
                   frequency=rule.frequency, cooldown_s=rule.cooldown_s,
                   market_hours_only=rule.market_hours_only, expires_at=rule.expires_at,
                   channels=list(rule.channels), active=rule.active)


def _rejected(errors: dict[str, str]) -> Response[RuleErrors]:
    return Response(RuleErrors(status=HTTP_400_BAD_REQUEST, detail=errors_detail(errors),
                               errors=errors),
                    status_code=HTTP_400_BAD_REQUEST)


def on_rejected(_request: Request[Any, Any, Any],
                exc: RuleError | store.StoreError) -> Response[RuleErrors]:
    return _rejected(errors_of(exc))


def on_bad_body(_request: Request[Any, Any, Any],
                exc: ValidationException) -> Response[RuleErrors]:
    """A body that does not fit ``RuleIn`` (a number where a list goes, ...): 400 with the
    same per-field ``errors`` as a rule the rules reject."""
    errors: dict[str, list[str]] = {}
    extra = exc.extra if isinstance(exc.extra, list) else []
    for item in extra:
        if isinstance(item, dict):
            key = str(item.get("key", ""))
            where = "" if key == "data" else key  # "data": the body as a whole
            errors.setdefault(where, []).append(str(item.get("message", "")))
    if not errors:
        errors[""] = [str(exc.detail)]
    return _rejected({k: "; ".join(v) for k, v in errors.items()})


REJECTED: ExceptionHandlersMap = {
    ValidationException: on_bad_body, RuleError: on_rejected, store.StoreError: on_rejected,
}
RESPONSES = {
    HTTP_400_BAD_REQUEST: ResponseSpec(RuleErrors, description="The rule was not stored"),
    HTTP_404_NOT_FOUND: ResponseSpec(NotFound, description="No such rule of the caller's"),
}


def _save(r: redis.Redis, user: User, data: RuleIn, rule_id: str | None = None) -> RuleOut:
    body = {k: v for k, v in dataclasses.asdict(data).items() if k != "active"}
    return rule_out(save_rule(r, user, body, rule_id=rule_id, active=data.active))


# Async handlers that hand the store's blocking calls to a thread themselves (see web.rules).


def _list(r: redis.Redis, user: User) -> RuleList:
    return RuleList(rules=[rule_out(rule) for rule in store.list_rules(r, user.name)])


@get("/api/rules")
async def api_list_rules(request: Request[User, Any, Any],
                         r: NamedDependency[redis.Redis]) -> RuleList:
    """The caller's rules, by id."""
    return await sync_to_thread(_list, r, request.user)


@post("/api/rules", exception_handlers=REJECTED, responses=RESPONSES)
async def api_create_rule(request: Request[User, Any, Any], data: JSONBody[RuleIn],
                          r: NamedDependency[redis.Redis]) -> RuleOut:
    """Create a rule; the engine arms it within a second. The id is chosen by the server."""
    return await sync_to_thread(_save, r, request.user, data)


def _get(r: redis.Redis, user: User, rule_id: str) -> RuleOut:
    return rule_out(own_rule(r, user, rule_id))


@get("/api/rules/{rule_id:str}", responses=RESPONSES)
async def api_get_rule(request: Request[User, Any, Any], rule_id: FromPath[str],
                       r: NamedDependency[redis.Redis]) -> RuleOut:
    return await sync_to_thread(_get, r, request.user, rule_id)


@put("/api/rules/{rule_id:str}", exception_handlers=REJECTED, responses=RESPONSES)
async def api_replace_rule(request: Request[User, Any, Any], rule_id: FromPath[str],
                           data: JSONBody[RuleIn],
                           r: NamedDependency[redis.Redis]) -> RuleOut:
    """Replace a rule's content (its id stays); the engine re-arms it from scratch."""
    return await sync_to_thread(_save, r, request.user, data, rule_id)


def _delete(r: redis.Redis, user: User, rule_id: str) -> None:
    delete_own_rule(r, user, rule_id)


@delete("/api/rules/{rule_id:str}", responses=RESPONSES)
async def api_delete_rule(request: Request[User, Any, Any], rule_id: FromPath[str],
                          r: NamedDependency[redis.Redis]) -> None:
    await sync_to_thread(_delete, r, request.user, rule_id)


def _set_active(r: redis.Redis, user: User, rule_id: str, active: bool) -> RuleOut:
    own_rule(r, user, rule_id)
    return rule_out(store.set_rule_active(r, rule_id, active, user=user.name))


@post("/api/rules/{rule_id:str}/pause", status_code=HTTP_200_OK, responses=RESPONSES)
async def api_pause_rule(request: Request[User, Any, Any], rule_id: FromPath[str],
                         r: NamedDependency[redis.Redis]) -> RuleOut:
    """Pause a rule: it stays stored and stops firing until resumed."""
    return await sync_to_thread(_set_active, r, request.user, rule_id, False)


@post("/api/rules/{rule_id:str}/resume", status_code=HTTP_200_OK, responses=RESPONSES)
async def api_resume_rule(request: Request[User, Any, Any], rule_id: FromPath[str],
                          r: NamedDependency[redis.Redis]) -> RuleOut:
    """Resume a paused rule; it starts over as if newly armed."""
    return await sync_to_thread(_set_active, r, request.user, rule_id, True)


ROUTES = [api_list_rules, api_create_rule, api_get_rule, api_replace_rule, api_delete_rule,
          api_pause_rule, api_resume_rule]
