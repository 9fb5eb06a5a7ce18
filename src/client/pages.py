"""Lists the API hands out in pages (limit and marker): every page fetched and joined."""
from __future__ import annotations

import json
from typing import Any

from src.client.http import Answer
from src.client.session import Session


def every_page(s: Session, path: str, key: str, **query: Any) -> Answer:
    """The whole list at path as one answer `{key: [...]}` (so -o json prints all of it, in the
    API's shape): pages are followed by their next_marker until one comes without it.

    Raises: Refused, Unreachable.
    """
    items: list[Any] = []
    markers: set[str] = set()
    marker: str | None = None
    while True:
        answer = s.get(path, **query, marker=marker)
        body = answer.json()
        items.extend(body[key])
        marker = body.get("next_marker")
        if not marker or marker in markers:  # a server that repeats itself ends the walk
            break
        markers.add(marker)
    return Answer(answer.status, answer.headers, json.dumps({key: items}).encode())
