"""Small pieces every handler module shapes answers with: pages, 202s, what a caller sees."""
from __future__ import annotations

from typing import Any

from src.api import views
from src.api.http import Request, Response
from src.services.rules import access


def page(items: list[Any], limit: int, marker: Any, key: str) -> dict[str, Any]:
    """A list answer; a full page says where the next one starts."""
    body: dict[str, Any] = {key: items}
    if len(items) == limit and items:
        body["next_marker"] = marker
    return body


def reveal(request: Request) -> bool:
    """Whether the caller may read host detail in errors (access decides: admins)."""
    return access.sees_internals(request.principal)


def project(request: Request) -> str | None:
    """The ?project= a route was given: which project's VM or volume a name means."""
    named: str | None = request.params.get("project")
    return named


def accepted(request: Request, task: Any) -> Response:
    return Response(202, views.task(task, reveal(request)), [("Location", f"/v1/tasks/{task.id}")],
                    touched=task)
