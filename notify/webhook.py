"""Webhooks (``json://``, ``jsons://``, ``form://``, ``forms://``) sent by us over pooled
keep-alive connections, with apprise used only to read the URL.

Apprise's JSON and form plugins call ``requests.request`` for every send: a new TCP (and
TLS) connection each time, about 545 sends/s at best on a 2-core machine, from blocking
threads. Here one ``notify.http11.Client`` keeps connections open per host and the send runs
on the event loop. ``build_request`` reproduces the plugin's request from the plugin
instance's own attributes (method, fullpath, params, headers, payload extras, user and
password), so a URL means what apprise documents; tests/notify/test_webhook_parity.py sends
one message both ways to one server and compares them.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import apprise

from notify import http11
from notify.render import Message, fit
from notify.send import Answer, Channel, SendOutcome, retry_after_s, scrub

SCHEMES = frozenset({"json", "jsons", "form", "forms"})
# Parsed plugins kept per URL: parsing a URL through apprise costs ~100 µs.
PLUGIN_CACHE_MAX = 4096
# Apprise's type field for our messages (apprise.NotifyType.INFO).
NOTIFY_TYPE = apprise.NotifyType.INFO.value


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    method: str
    url: str
    params: dict[str, str]
    headers: dict[str, str]
    auth: tuple[str, str] | None
    verify: bool
    follow_redirects: bool
    content: bytes | None = None  # JSON body
    form: dict[str, str] = field(default_factory=dict)  # form body (or query for GET)


def handles(url: str) -> bool:
    return url.partition("://")[0].lower() in SCHEMES


def _base_url(plugin: Any) -> str:
    url = f"{'https' if plugin.secure else 'http'}://{plugin.host}"
    if isinstance(plugin.port, int):
        url += f":{plugin.port}"
    return url + str(plugin.fullpath)


def _common_headers(plugin: Any) -> dict[str, str]:
    return {"User-Agent": str(plugin.app_id)}


def _json_request(plugin: Any, message: Message) -> WebhookRequest:
    """As ``NotifyJSON.send`` without attachments (apprise/plugins/custom_json.py)."""
    payload: dict[str, Any] = {
        "version": plugin.json_version, "title": message.title, "message": message.body,
        "attachments": [], "type": NOTIFY_TYPE,
    }
    for key, value in plugin.payload_extras.items():
        if key in payload:
            if value:
                payload[value] = payload.pop(key)  # a remapped field
            else:
                del payload[key]  # a dropped field
        else:
            payload[key] = value
    headers = {**_common_headers(plugin), "Content-Type": "application/json",
               **plugin.headers}
    # json.dumps with its default separators and ASCII escapes: the bytes apprise sends.
    return WebhookRequest(plugin.method, _base_url(plugin), dict(plugin.params), headers,
                          _auth(plugin), bool(plugin.verify_certificate),
                          bool(plugin.redirects), content=json.dumps(payload).encode())


def _form_request(plugin: Any, message: Message) -> WebhookRequest:
    """As ``NotifyForm.send`` without attachments (apprise/plugins/custom_form.py)."""
    payload: dict[str, str] = {}
    for key, value in (("version", plugin.form_version), ("title", message.title),
                       ("message", message.body), ("type", NOTIFY_TYPE)):
        if plugin.payload_map[key]:
            payload[plugin.payload_map[key]] = value
    payload.update(plugin.payload_extras)
    headers = {**_common_headers(plugin), **plugin.headers}
    if plugin.method == "GET":
        params = {**payload, **plugin.params}
        return WebhookRequest("GET", _base_url(plugin), params, headers, _auth(plugin),
                              bool(plugin.verify_certificate), bool(plugin.redirects))
    return WebhookRequest(plugin.method, _base_url(plugin), dict(plugin.params), headers,
                          _auth(plugin), bool(plugin.verify_certificate),
                          bool(plugin.redirects), form=payload)


def _auth(plugin: Any) -> tuple[str, str] | None:
    # A user without a password goes out as "user:None": apprise hands requests a None
    # password, which requests turns into that string. Kept so a receiver set up against
    # apprise's requests keeps accepting ours.
    return (str(plugin.user), str(plugin.password)) if plugin.user else None


def build_request(plugin: Any, message: Message) -> WebhookRequest:
    """The request apprise's plugin would make for ``message`` (fitted to its limits)."""
    fitted = fit(message, int(plugin.body_maxlen), int(plugin.title_maxlen))
    if plugin.protocol == "form":
        return _form_request(plugin, fitted)
    return _json_request(plugin, fitted)


class PluginCache:
    """Apprise plugin instances by URL, least recently used dropped first. A URL apprise
    rejects is cached as None too."""

    def __init__(self, max_size: int = PLUGIN_CACHE_MAX) -> None:
        self._max = max_size
        self._plugins: OrderedDict[str, Any] = OrderedDict()

    def get(self, url: str) -> Any:
        if url in self._plugins:
            self._plugins.move_to_end(url)
            return self._plugins[url]
        plugin = apprise.Apprise.instantiate(url)
        self._plugins[url] = plugin
        if len(self._plugins) > self._max:
            self._plugins.popitem(last=False)
        return plugin


async def send(client: http11.Client, request: WebhookRequest,
               timeout_s: float) -> http11.Response:
    body = request.content if request.content is not None else b""
    headers = dict(request.headers)
    if request.form:
        body = urlencode(request.form).encode()
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
    return await client.request(request.method, request.url, params=request.params,
                                headers=headers, body=body, auth=request.auth,
                                verify=request.verify,
                                follow_redirects=request.follow_redirects, timeout_s=timeout_s)


class WebhookSender:
    """One try of a webhook channel on the event loop; failures come back as outcomes."""

    def __init__(self, max_connections: int, plugins: PluginCache | None = None) -> None:
        self.plugins = plugins or PluginCache()
        self._client = http11.Client(max_connections)

    async def send(self, channel: Channel, message: Message, timeout_s: float) -> SendOutcome:
        plugin = self.plugins.get(channel.url)
        if plugin is None:
            return SendOutcome(False, f"apprise does not accept this {channel.scheme}:// URL",
                               permanent=True)
        request = build_request(plugin, message)
        try:
            response = await send(self._client, request, timeout_s)
        except TimeoutError:
            return SendOutcome(False, f"no answer within {timeout_s:g}s")
        except http11.HTTPError as exc:
            return SendOutcome(False, scrub(str(exc), channel.url))
        if 200 <= response.status < 300:
            return SendOutcome(True)
        answer = Answer(response.status, response.headers.get("retry-after", ""))
        return SendOutcome(False, f"HTTP {response.status} {response.reason}",
                           retry_after_s=retry_after_s([answer]))

    async def aclose(self) -> None:
        await self._client.aclose()
