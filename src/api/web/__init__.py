"""The dashboard's page and static files: an allow-list read once from this package, served with
their content types, validators and a strict Content-Security-Policy.

The page holds no data: its scripts call the JSON API with the bearer token the user typed, so
it needs no cookie and no request can be forged from another site.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import jinja2

from src import errors

# name -> content type: nothing outside this list is ever served, whatever the path says.
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "dom.js": "text/javascript; charset=utf-8",
    "vms.js": "text/javascript; charset=utf-8",
    "detail.js": "text/javascript; charset=utf-8",
    "images.js": "text/javascript; charset=utf-8",
    "volumes.js": "text/javascript; charset=utf-8",
    "admin.js": "text/javascript; charset=utf-8",
    "host.js": "text/javascript; charset=utf-8",
    "scarcity.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = (("Content-Security-Policy", CSP), ("X-Content-Type-Options", "nosniff"),
                    ("Referrer-Policy", "no-referrer"), ("X-Frame-Options", "DENY"),
                    ("Cross-Origin-Opener-Policy", "same-origin"))
# Revalidated on every load (a 304 when unchanged): a new release never meets an old script.
CACHING = ("Cache-Control", "no-cache")


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str

    def headers(self) -> list[tuple[str, str]]:
        return [("ETag", self.etag), CACHING, *SECURITY_HEADERS]


def _asset(body: bytes, content_type: str) -> Asset:
    return Asset(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


class Dashboard:
    """The page (rendered once from its Jinja2 template) and the allowed static files."""

    def __init__(self) -> None:
        package = resources.files(__name__)
        self._assets = {name: _asset((package / "static" / name).read_bytes(), kind)
                        for name, kind in ASSETS.items()}
        template = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined
                                      ).from_string((package / "templates" / "index.html")
                                                    .read_text())
        self.page = _asset(template.render(assets=ASSETS).encode(), "text/html; charset=utf-8")

    def asset(self, name: str) -> Asset:
        """Raises: NotFound for any name not on the allow-list."""
        found = self._assets.get(name)
        if found is None:
            raise errors.NotFound(path=f"/static/{name}")
        return found
