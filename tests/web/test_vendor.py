"""The vendored front-end libraries: the committed files are the pinned ones, served from
this origin, and the offline check notices a file changed by hand."""

from __future__ import annotations

import base64
import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from web import vendor


def test_committed_files_match_the_lock() -> None:
    assert vendor.check() == []


def test_pins_are_the_versions_the_pages_are_written_for() -> None:
    lock = vendor.load_lock()
    # htmx 4 renamed attributes the pages use (PITFALLS.md); charts use the v5 series API.
    assert lock["htmx.org"]["version"].startswith("2.")
    assert lock["lightweight-charts"]["version"].startswith("5.")
    for name, pin in lock.items():
        assert pin["integrity"].startswith("sha512-"), name
        assert "LICENSE" in pin["files"], f"{name} ships without its licence"


def test_check_notices_a_changed_or_missing_file(tmp_path: Path) -> None:
    copy = tmp_path / "vendor"
    shutil.copytree(vendor.VENDOR_DIR, copy)
    lock_path = copy / vendor.LOCK.name
    assert vendor.check(lock_path) == []
    htmx = copy / "htmx" / "htmx.min.js"
    htmx.write_bytes(htmx.read_bytes() + b"\n")
    (copy / "lightweight-charts" / "NOTICE").unlink()
    problems = vendor.check(lock_path)
    assert problems == ["htmx.org: htmx/htmx.min.js does not match the lock",
                        "lightweight-charts: NOTICE is missing (run make vendor)"]


def test_sri_form_matches_npm() -> None:
    # npm's integrity is base64 of the raw digest, prefixed with the algorithm.
    digest = hashlib.sha512(b"abc").digest()
    assert vendor.sri_sha512(b"abc") == "sha512-" + base64.b64encode(digest).decode()
    assert vendor.sri_sha512(b"abc").startswith("sha512-3a81oZNherrMQXNJriBBMRLm")


@pytest.mark.parametrize(("path", "marker"), [
    ("/static/vendor/htmx/htmx.min.js", b"htmx"),
    ("/static/vendor/lightweight-charts/lightweight-charts.standalone.production.js",
     b"LightweightCharts"),
])
def test_vendored_scripts_are_served_publicly(client: TestClient[Any], path: str,
                                              marker: bytes) -> None:
    response = client.get(path)
    assert response.status_code == 200 and marker in response.content
    assert response.headers["content-type"].startswith(
        ("application/javascript", "text/javascript"))
