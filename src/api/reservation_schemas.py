"""Request and response schemas of reservations (merged into the OpenAPI components by
src/api/schemas.py)."""
from __future__ import annotations

from typing import Any

from src.vocabulary import RESERVATION_STATUSES

NAME = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
WHEN = {"type": "string", "maxLength": 40,
        "description": "RFC 3339 with its offset, second precision (e.g. 2026-12-24T09:00:00Z)"}
TIME = {"type": "string", "format": "date-time"}
UUID = {"type": "string", "format": "uuid"}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": properties,
            "required": list(properties) if required is None else required}


RESERVATION_SCHEMAS: dict[str, Any] = {
    "ReservationCreate": _object({
        "flavor": {"type": "string", "pattern": NAME, "maxLength": 64,
                   "description": "A GPU flavor's name or id"},
        "count": {"type": "integer", "minimum": 1, "maximum": 1024,
                  "description": "How many VMs of the flavor"},
        "start": {**WHEN, "description": "\"now\", or an RFC 3339 time (not in the past)"},
        "end": {**WHEN, "description": "After start, within IAAS_RESERVATION_HORIZON_DAYS"},
        "project": {"type": "string", "pattern": NAME, "maxLength": 64,
                    "description": "Admins: book for another project (default: your own)"},
    }, required=["flavor", "count", "start", "end"]),
    "Reservation": _object({
        "id": UUID, "project": {"type": "string"}, "flavor": {"type": "string"},
        "count": {"type": "integer"}, "gpus_per_vm": {"type": "integer"},
        "start": TIME, "end": TIME,
        "status": {"type": "string", "enum": list(RESERVATION_STATUSES),
                   "description": "pending before its window, active in it, then ended; or "
                                  "cancelled"},
        "vms": {"type": "integer", "minimum": 0,
                "description": "VMs created in it (up to count)"},
        "hosts": {"type": "array", "description": "The GPUs it claims, by host",
                  "items": _object({"host": {"type": "string"}, "gpus": {
                      "type": "array", "items": {"type": "string",
                                                 "description": "PCI address"}}})},
        "created_at": TIME,
    }),
    "ReservationList": _object({"reservations": {"type": "array", "items": {
        "$ref": "#/components/schemas/Reservation"}}}),
}
