"""Match a request to its row of the route table: 404 for unknown paths, 405 with Allow."""
from __future__ import annotations

import re
from collections.abc import Sequence

from src import errors
from src.api.http import Request
from src.api.routes import Route


def _compile(pattern: str) -> re.Pattern[str]:
    # "/v1/vms/{vm}" -> named group matching one path segment
    return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")


class Router:
    def __init__(self, routes: Sequence[Route]) -> None:
        self._table = [(route, _compile(route.pattern)) for route in routes]

    @property
    def routes(self) -> list[Route]:
        return [route for route, _ in self._table]

    def is_public(self, path: str) -> bool:
        """Whether path is served without a token (health, metrics, the contract)."""
        return any(route.access == "public" and regex.match(path) for route, regex in self._table)

    def label(self, request: Request) -> str:
        """The request's route pattern (for metrics and logs), even if it will be refused."""
        for route, regex in self._table:
            if route.method == request.method and regex.match(request.path):
                return route.pattern
        return "unmatched"

    def file_route(self, method: str, path: str) -> dict[str, str] | None:
        """The path parameters when method and path name a route whose body is a file (an
        upload), else None: a server asks before it reads a body."""
        for route, regex in self._table:
            found = regex.match(path) if route.file_body and route.method == method else None
            if found is not None:
                return found.groupdict()
        return None

    def replayable(self, request: Request) -> bool:
        """Whether the request's route may keep its answer for an Idempotency-Key replay."""
        for route, regex in self._table:
            if route.method == request.method and regex.match(request.path):
                return route.replayable
        return True

    def match(self, request: Request) -> tuple[Route, dict[str, str]]:
        """The route and its path parameters.

        Raises: NotFound, MethodNotAllowed (with the allowed methods in details).
        """
        allowed = []
        for route, regex in self._table:
            found = regex.match(request.path)
            if found is None:
                continue
            if route.method == request.method:
                return route, found.groupdict()
            allowed.append(route.method)
        if allowed:
            raise errors.MethodNotAllowed(method=request.method, path=request.path,
                                          allow=sorted(set(allowed)))
        raise errors.NotFound(path=request.path)
