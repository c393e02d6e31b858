"""Our webhook requests are the ones apprise's own plugins make: one message sent through the
plugin (``send_blocking``) and through ``notify.webhook`` to one local server, compared."""

from __future__ import annotations

import asyncio

import pytest

from notify.render import Message, render
from notify.send import Channel, send_blocking
from notify.webhook import WebhookSender, handles
from tests.notify.apiserver import ApiServer, Request
from tests.notify.conftest import make_alert

# Headers whose values the two senders must agree on; the rest (Accept-Encoding,
# Connection) differ by client and mean nothing to a webhook.
HEADERS = ("User-Agent", "Content-Type", "Content-Length", "Authorization", "X-Token",
           "X-Env")



def ours(url: str, message: Message) -> bool:
    async def main() -> bool:
        sender = WebhookSender(4)
        try:
            return (await sender.send(Channel("c", url, "t"), message, 2.0)).ok
        finally:
            await sender.aclose()

    return asyncio.run(main())


def both(api: ApiServer, url: str, message: Message) -> tuple[Request, Request]:
    """``url`` with HOST standing for the server's address; apprise's request first."""
    url = url.replace("HOST", f"127.0.0.1:{api.port}")
    assert handles(url)
    assert send_blocking(Channel("c", url, "t"), message, 2.0).ok
    assert ours(url, message)
    first, second = api.requests
    return first, second


@pytest.mark.parametrize("url", [
    "json://HOST/hook",
    "json://bob:S3cret!x@HOST/v1/hooks/ünï code?+X-Token=abc%20def&-sig=1&-b=two%20words",
    "json://HOST/hook?:message=text&:type=&:source=stormalert&method=PUT",
    "json://onlyuser@HOST/hook?+X-Env=prod",
    "form://HOST/hook",
    "form://bob:pw@HOST/f/orm?+X-Token=t&-q=1&:message=msg&:version=&:extra=yes",
    "form://HOST/get?method=GET&-k=v&:title=subject",
], ids=["json", "json-auth-headers-params", "json-remap-drop-extra-put", "json-user-only",
        "form", "form-auth-remap", "form-get"])
@pytest.mark.filterwarnings("ignore:Non-string passwords:DeprecationWarning")
def test_webhook_request_is_what_apprise_sends(api: ApiServer, url: str) -> None:
    message = render(make_alert("asha", msg="price & volume: 1 < 2 \"quoted\" ₹ ✓"),
                     "https://dash.example")
    theirs, mine = both(api, url, message)
    assert (mine.method, mine.path, mine.query) == (theirs.method, theirs.path, theirs.query)
    for name in HEADERS:
        assert mine.headers.get(name) == theirs.headers.get(name), name
    assert mine.body == theirs.body
    if theirs.headers.get("Content-Type") == "application/json":
        assert message.body in mine.json().values()
    elif mine.method != "GET":
        assert mine.form()


def test_long_messages_are_fitted_as_apprise_fits_them(api: ApiServer) -> None:
    message = Message("t" * 400, "line\n" * 10_000 + "https://dash.example/alerts/x")
    theirs, mine = both(api, "json://HOST/hook", message)
    assert mine.body == theirs.body
    assert len(mine.json()["title"]) == 250
    assert mine.json()["message"].endswith("\nhttps://dash.example/alerts/x")
