"""The dashboard's page and files: a strict Content-Security-Policy, no cookies, an allow-list
that no path can escape, content types and validators, and nothing inserted as HTML."""
from __future__ import annotations

import re
import socket
from pathlib import Path

from src.api.web import ASSETS
from tests.support import LiveServer, fetch

STATIC = Path(__file__).resolve().parents[2] / "src" / "api" / "web" / "static"


def _headers(reply: object) -> dict[str, str]:
    """Header names in lower case (waitress and wsgiref spell some differently)."""
    return {name.lower(): value for name, value in reply.headers.items()}  # type: ignore[attr-defined]


def _raw_get(server: LiveServer, target: str) -> str:
    """The status line of a GET sent byte for byte (no client normalises the path)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return sock.recv(200).decode(errors="replace").splitlines()[0]


def test_the_page_is_public_strict_and_sets_no_cookie(server: LiveServer) -> None:
    page = fetch(server.url, "GET", "/", headers={"Authorization": ""})
    headers = _headers(page)
    assert page.status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert "set-cookie" not in headers
    html = page.body
    assert "<script>" not in html and " style=" not in html and "<style" not in html
    assert re.search(r'<script type="module" src="/static/app.js"></script>', html)


def test_static_files_come_from_an_allow_list_with_types_and_validators(
        server: LiveServer) -> None:
    assert sorted(ASSETS) == sorted(path.name for path in STATIC.iterdir())
    script = fetch(server.url, "GET", "/static/app.js", headers={"Authorization": ""})
    headers = _headers(script)
    assert script.status == 200 and headers["content-type"].startswith("text/javascript")
    assert headers["cache-control"] == "no-cache" and headers["etag"]
    again = fetch(server.url, "GET", "/static/app.js", headers={"If-None-Match": headers["etag"]})
    assert again.status == 304 and not again.body
    style = fetch(server.url, "GET", "/static/style.css")
    assert _headers(style)["content-type"] == "text/css; charset=utf-8"
    assert fetch(server.url, "GET", "/static/nope.js").status == 404
    assert fetch(server.url, "POST", "/static/app.js", {}).status == 405
    for target in ("/static/../app.py", "/static/..%2f..%2fapp.py", "/static/%2e%2e/errors.py",
                   "/static/./app.js/../../app.py", "/static/__init__.py",
                   "/static/..%5capp.py"):
        status = _raw_get(server, target)
        assert " 404 " in status or " 400 " in status, (target, status)


def test_scripts_insert_api_strings_as_text_never_html() -> None:
    for path in STATIC.glob("*.js"):
        code = path.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                     "new Function", "setAttribute(\"style\"", ".style."):
            assert sink not in code, f"{path.name} uses {sink}"
