"""Response schemas of the capacity queue (merged into the OpenAPI components by
src/api/schemas.py)."""
from __future__ import annotations

from typing import Any

from src.vocabulary import QUEUE_REASONS

TIME = {"type": "string", "format": "date-time"}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
UUID = {"type": "string", "format": "uuid"}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": properties,
            "required": list(properties) if required is None else required}


QUEUE_PLACE = _object({
    "position": {"type": ["integer", "null"], "minimum": 1,
                 "description": "1: the next to be placed when room frees, in the fair order "
                                "of every waiting VM (null until the queue's next look)"},
    "since": {**TIME, "description": "When it was asked for"},
    "reason": {"type": "string", "enum": list(QUEUE_REASONS),
               "description": "What it waits for (host: no host that could take it answers)"},
    "estimated_start_at": {**NULLABLE_TIME,
                           "description": "When it is expected to be placed, when that can be "
                                          "known (a reservation's end frees what it needs)"},
    "expires_at": {**TIME, "description": "Then it ends error capacity_wait_expired"},
})

QUEUE_SCHEMAS: dict[str, Any] = {
    "QueuePlace": QUEUE_PLACE,
    "QueueEntry": _object({
        "vm_id": UUID, "name": {"type": "string"}, "project": {"type": "string"},
        "flavor": {"type": ["string", "null"]}, "cpu": {"type": "integer"},
        "ram": {"type": "integer"}, "gpus": {"type": "integer", "minimum": 0},
        **QUEUE_PLACE["properties"]}),
    "Queue": _object({"queue": {"type": "array", "items": {
        "$ref": "#/components/schemas/QueueEntry"}}}),
}
