"""A headless Debian chromium driven over the DevTools protocol: just enough to load a
page with a session cookie, read the DOM and catch script errors. (``playwright install``
cannot download a browser here; PITFALLS.md.)"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


class Browser:
    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self.errors: list[str] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=10))
            if message.get("method") == "Runtime.exceptionThrown":
                self.errors.append(json.dumps(message["params"]["exceptionDetails"])[:500])
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def open(self, url: str, cookies: dict[str, str]) -> None:
        for name, value in cookies.items():
            self.call("Network.setCookie", name=name, value=value, url=url)
        self.call("Page.navigate", url=url)


def _page_socket(port: int) -> str:
    deadline = time.monotonic() + 15
    while True:
        try:
            targets = httpx.get(f"http://127.0.0.1:{port}/json", timeout=1).json()
            return str(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])
        except (httpx.TransportError, StopIteration, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@contextmanager
def chromium(profile_dir: Path, port: int) -> Iterator[Browser]:
    proc = subprocess.Popen(
        [CHROMIUM, *FLAGS, f"--remote-debugging-port={port}", f"--user-data-dir={profile_dir}",
         "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with connect(_page_socket(port), max_size=None) as ws:
            browser = Browser(ws)
            browser.call("Runtime.enable")
            browser.call("Network.enable")
            yield browser
    finally:
        proc.kill()
        proc.wait(5)
