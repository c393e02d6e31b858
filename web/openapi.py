"""The OpenAPI document at ``/schema``: the JSON API (``/api/...``) and ``/healthz`` only.

Pages are not part of the API, so ``documented`` puts every other route in a router left out
of the schema, whatever module it comes from. The document is served as JSON only: the
interactive viewers load scripts from other sites, which the pages' CSP forbids.

Every error is answered by ``web.errors`` as ``{"status", "detail"}``; the served document
says so for the errors any operation can give (401 and 429 where a token is needed, 403 for
CSRF on writes, 400 where there is input, 404 where the path names something, 503 when
Redis is down), replacing Litestar's own 400 shape, which the app never sends, and adding
the app's shape to a handler's own 400 (a malformed body never reaches the handler).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Sequence
from importlib import metadata
from typing import Any

from litestar import Request, Router
from litestar.handlers import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.routes import HTTPRoute
from litestar.types import ControllerRouterHandler
from litestar.types.internal_types import PathParameterDefinition

SCHEMA_PATH = "/schema"
DOCUMENTED_PREFIXES = ("/api/",)
DOCUMENTED_PATHS = ("/healthz",)
UNSAFE = {"post", "put", "patch", "delete"}
ERROR_SCHEMA = {
    "type": "object",
    "required": ["status", "detail"],
    "properties": {"status": {"type": "integer"}, "detail": {"type": "string"}},
}
ERRORS = {
    400: "The request is malformed or a value is refused; detail says which.",
    401: "No valid API token or session.",
    403: "Forbidden (a form post without its CSRF token, or not yours to change).",
    404: "Nothing of yours at this address.",
    429: "Too many invalid API tokens from this address; try again in a minute.",
    503: "Redis is not answering.",
}


def is_documented(path: str) -> bool:
    return path.startswith(DOCUMENTED_PREFIXES) or path in DOCUMENTED_PATHS


def documented(handlers: Iterable[ControllerRouterHandler]) -> list[ControllerRouterHandler]:
    """The same handlers, with every route outside the JSON API left out of the schema."""
    api: list[ControllerRouterHandler] = []
    pages: list[ControllerRouterHandler] = []
    for handler in handlers:
        paths = handler.paths if isinstance(handler, BaseRouteHandler) else {"/"}
        is_api = isinstance(handler, BaseRouteHandler) and all(is_documented(p) for p in paths)
        (api if is_api else pages).append(handler)
    return [*api, Router(path="/", route_handlers=pages, include_in_schema=False)]


def _error_response(status: int) -> dict[str, Any]:
    return {"description": ERRORS[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _public_operations(request: Request[Any, Any, Any]) -> set[tuple[str, str]]:
    """(path, method) of the operations that need no authentication."""
    public = set()
    for route in request.app.routes:
        if isinstance(route, HTTPRoute):
            for method, (handler, _) in route.route_handler_map.items():
                if handler.opt.get("exclude_from_auth"):
                    public.add((route.path_format or "/", method.lower()))
    return public


def with_errors(schema: dict[str, Any], public: set[tuple[str, str]]) -> dict[str, Any]:
    """A copy of ``schema`` that documents the app's error answers (see the module doc)."""
    doc = copy.deepcopy(schema)
    doc.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            params = op.get("parameters", [])
            statuses = [503]
            if (path, method) in public:
                op["security"] = []
            else:
                statuses += [401, 429]
            if method in UNSAFE:
                statuses.append(403)
            if params or "requestBody" in op:
                statuses.append(400)
            if any(p.get("in") == "path" for p in params):
                statuses.append(404)
            responses = op["responses"]
            for status in statuses:
                existing = responses.get(str(status))
                if existing is None or "status_code" in str(existing):  # Litestar's own 400
                    responses[str(status)] = _error_response(status)
                elif status == 400:
                    _or_error(existing)
    return doc


def _or_error(response: dict[str, Any]) -> None:
    """A handler's own 400 body, or the app's: a body that is not even JSON of the declared
    shape is refused by Litestar before the handler runs, and answered by ``web.errors``."""
    media = response.get("content", {}).get("application/json")
    if isinstance(media, dict) and "schema" in media:
        error = {"$ref": "#/components/schemas/Error"}
        if error not in media["schema"].get("anyOf", []):
            media["schema"] = {"anyOf": [media["schema"], error]}


class ApiSchemaPlugin(JsonRenderPlugin):
    """The OpenAPI document as JSON, with the app's error answers documented."""

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return self.render_json(request, with_errors(openapi_schema, _public_operations(request)))


def operation_id(_handler: object, method: str,
                 path_components: Sequence[str | PathParameterDefinition]) -> str:
    """``GetApiRulesRuleId``: method and path, unique per operation (Litestar's default uses
    the handler's name, which is the same for every sync_to_thread handler)."""
    parts = [c.name if isinstance(c, PathParameterDefinition) else c for c in path_components]
    words = (w for part in parts for w in re.split(r"[^A-Za-z0-9]+", part) if w)
    verb = str(getattr(method, "value", method)).title()
    return verb + "".join(w[:1].upper() + w[1:] for w in words)


def openapi_config(paths: Sequence[str] = ("/", "/openapi.json")) -> OpenAPIConfig:
    return OpenAPIConfig(
        title="StormAlert API",
        version=metadata.version("stormalert"),
        description="Alerts, quotes, rules and settings for scripts. Authenticate with "
                    "`Authorization: Bearer <token>`, a token made on /settings (the pages' "
                    "session cookie works too, with the CSRF header on writes).",
        path=SCHEMA_PATH,
        render_plugins=[ApiSchemaPlugin(path=list(paths))],
        # The API's description is public: a script fetches it before it has a token.
        openapi_router=Router(SCHEMA_PATH, route_handlers=[], include_in_schema=False,
                              opt={"exclude_from_auth": True}),
        operation_id_creator=operation_id,
    )
