"""Email through apprise's mailto:// plugin to a real SMTP server (aiosmtpd) on loopback,
with SMTP AUTH, driven by the notifier subprocess: HTML with a plain-text alternative."""

from __future__ import annotations

import email
import threading
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

import pytest
import redis
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from notify.render import render
from proto import keys
from tests.notify.conftest import (
    NotifierProc,
    free_port,
    make_alert,
    make_user,
    pending_count,
    publish,
    wait_until,
)

SMTP_USER, SMTP_PASSWORD = "alerts", "Sm7pPassw0rdZ"


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[bool, str, list[str], EmailMessage]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, _server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.original_content, policy=default_policy)
        with self.lock:
            self.messages.append((bool(session.authenticated), envelope.mail_from,
                                  list(envelope.rcpt_tos), parsed))  # type: ignore[arg-type]
        return "250 OK"


def _authenticate(_server: Any, _session: Any, _envelope: Any, _mechanism: str,
                  auth_data: Any) -> AuthResult:
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login == SMTP_USER.encode()
          and auth_data.password == SMTP_PASSWORD.encode())
    return AuthResult(success=ok)


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port,
                            authenticator=_authenticate, auth_require_tls=False)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_email_is_sent_once_as_html_with_a_plain_text_part(
        r: redis.Redis, smtp: tuple[Inbox, int], notifier: Callable[..., NotifierProc]) -> None:
    inbox, port = smtp
    url = (f"mailto://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{port}"
           "?from=alerts@example.com&to=priya@example.com&name=StormAlert")
    [cid] = make_user(r, "priya", {url: "mail"}).values()
    first = make_alert("priya", channels=["mail"], sym="NSE:NIFTY 50", ltp=24350.15,
                       msg="crossed above 24,300 <b>& held</b>")
    second = make_alert("priya", channels=["mail"], kind="cross_below")
    proc = notifier()
    publish(r, first)
    publish(r, second)
    publish(r, first)  # a redelivery: no second email
    wait_until(lambda: len(inbox.messages) == 2 and pending_count(r) == 0, what="two emails")

    by_subject = {m[3]["Subject"]: m for m in inbox.messages}
    expected = render(first, "http://dash.example")
    authenticated, mail_from, rcpt_tos, message = by_subject[expected.title]
    assert authenticated
    assert mail_from == "alerts@example.com"
    assert rcpt_tos == ["priya@example.com"]
    assert message["To"] == "priya@example.com"
    assert message["From"] == "StormAlert <alerts@example.com>"
    assert message["Subject"] == "NSE:NIFTY 50 crossed above at 24350.15"
    assert message["Date"] and message["Message-ID"]
    assert message.get_content_type() == "multipart/alternative"
    plain, html = message.iter_parts()  # type: ignore[misc]
    assert plain.get_content_type() == "text/plain"
    assert plain.get_content().replace("\r\n", "\n").strip() == expected.body
    assert html.get_content_type() == "text/html"
    markup = html.get_content()
    assert "Why: crossed above 24,300 &lt;b&gt;&amp; held&lt;/b&gt;" in markup
    assert "<b>& held" not in markup
    link = f"http://dash.example/alerts/{first.id}"
    assert f'<a href="{link}">{link}</a>' in markup
    assert render(second, "http://dash.example").title in by_subject

    assert proc.stop() == 0
    stats = proc.final_stats()
    assert (stats["sent"], stats["skipped_duplicate"]) == (2, 1)
    assert '"status":"sent"' in str(r.hget(keys.delivery(first.id), cid))
    assert SMTP_PASSWORD not in proc.log()
