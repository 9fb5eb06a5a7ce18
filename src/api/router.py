"""Routes as a table of (method, path pattern, handler); 404 for unknown paths, 405 with Allow."""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from src import errors
from src.api.http import Request, Response

Handler = Callable[..., Response]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str
    handler: Handler
    access: str = "member"  # public (no token), member (any valid token) or admin


def _compile(pattern: str) -> re.Pattern[str]:
    # "/v1/vms/{vm}" -> named group matching one path segment
    return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")


class Router:
    def __init__(self, routes: list[Route]) -> None:
        self._routes = [(route, _compile(route.pattern)) for route in routes]

    def is_public(self, path: str) -> bool:
        """Whether path is served without a token (health, the contract)."""
        return any(route.access == "public" and regex.match(path)
                   for route, regex in self._routes)

    def label(self, request: Request) -> None:
        """Name the request by its route's pattern (for metrics and logs), even if it is refused."""
        for route, regex in self._routes:
            if route.method == request.method and regex.match(request.path):
                request.route = route.pattern
                return

    @property
    def routes(self) -> list[Route]:
        return [route for route, _ in self._routes]

    def dispatch(self, request: Request) -> Response:
        """Call the matching handler with the path's parameters.

        Raises: NotFound, MethodNotAllowed (with the allowed methods in details).
        """
        allowed = []
        for route, regex in self._routes:
            match = regex.match(request.path)
            if match is None:
                continue
            if route.method == request.method:
                if route.access == "admin" and not (request.principal and request.principal.is_admin):
                    raise errors.Forbidden()
                return route.handler(request, **match.groupdict())
            allowed.append(route.method)
        if allowed:
            raise errors.MethodNotAllowed(method=request.method, path=request.path,
                                          allow=sorted(set(allowed)))
        raise errors.NotFound(path=request.path)
