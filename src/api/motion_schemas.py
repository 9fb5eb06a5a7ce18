"""Request and response schemas of hosts in motion: migrations (merged into the OpenAPI
components by src/api/schemas.py)."""
from __future__ import annotations

from typing import Any

DNS_LABEL = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
BYTES = {"type": "integer", "minimum": 0}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": properties,
            "required": list(properties) if required is None else required}


MOTION_SCHEMAS: dict[str, Any] = {
    "VmMigrate": _object({
        "host": {"type": "string", "pattern": DNS_LABEL, "maxLength": 63,
                 "description": "The target host (default: the scheduler's pick among the "
                                "others, with the filters of a create)."},
        "live": {"type": "boolean", "description": (
            "Default true: a running VM keeps running while it moves. false: it is stopped, "
            "moved and started again (the only way for a VM with GPUs). A stopped VM always "
            "moves stopped.")},
    }, required=[]),
    "HostDrain": _object({
        "status": {"type": "string", "enum": ["draining", "done"]},
        "started_at": {"type": "string", "format": "date-time"},
        "vms": {**BYTES, "description": "VMs on the host when the drain began"},
        "moved": BYTES, "moving": BYTES,
        "waiting": {**BYTES, "description": "Moves waiting their turn (IAAS_DRAIN_PARALLEL)"},
        "tasks": {"type": "array", "description": "Its migrate tasks, one a VM",
                  "items": _object({"task_id": {"type": "string"}, "vm_id": {"type": "string"},
                                    "vm": {"type": "string"}, "status": {"type": "string"}})},
        "unmovable": {"type": "array", "description": "VMs that stay: no host could take "
                                                      "them, or their move failed",
                      "items": _object({"vm_id": {"type": "string"}, "vm": {"type": "string"},
                                        "reason": {"type": "string"},
                                        "task_id": {"type": "string"}},
                                       required=["vm_id", "vm", "reason"])},
    }),
    "HostEvacuate": _object({
        "rebuild_lost_disks": {"type": "boolean", "description": (
            "Default false: a VM whose root disk or volumes lived only on the dead host stays, "
            "skipped with reason disks_on_down_host. true: it is rebuilt with a fresh root "
            "disk from its base image, and its lost volumes are detached (they stay on the "
            "dead host).")},
        "host": {"type": "string", "pattern": DNS_LABEL, "maxLength": 63,
                 "description": "Rebuild every VM on this host (default: the scheduler's "
                                "pick for each, with the filters of a create)."},
    }, required=[]),
    "Evacuation": _object({
        "host": {"type": "string"},
        "started_at": {"type": "string", "format": "date-time"},
        "rebuild_lost_disks": {"type": "boolean"},
        "tasks": {"type": "array", "description": "Its evacuate tasks, one a VM",
                  "items": _object({"task_id": {"type": "string"}, "vm_id": {"type": "string"},
                                    "vm": {"type": "string"}, "target": {"type": "string"}})},
        "skipped": {"type": "array", "description": "VMs that stay on the dead host, with why "
                                                    "(reason: disks_on_down_host, no_host, "
                                                    "insufficient_capacity, vm_busy, ...)",
                    "items": _object({"vm_id": {"type": "string"}, "vm": {"type": "string"},
                                      "reason": {"type": "string"},
                                      "message": {"type": "string"}})},
    }),
    "HostEvacuation": _object({
        "status": {"type": "string", "enum": ["evacuating", "done"]},
        "started_at": {"type": "string", "format": "date-time"},
        "rebuild_lost_disks": {"type": "boolean"},
        "tasks": {"type": "array", "items": _object({
            "task_id": {"type": "string"}, "vm_id": {"type": "string"},
            "vm": {"type": "string"}, "target": {"type": "string"},
            "status": {"type": "string"}})},
        "skipped": {"type": "array", "items": _object({
            "vm_id": {"type": "string"}, "vm": {"type": "string"},
            "reason": {"type": "string"}, "message": {"type": "string"}})},
        "stale_copies": {"type": "array", "description": "VMs rebuilt elsewhere whose old "
                                                         "copy this host still holds; the "
                                                         "reconciler removes them once it "
                                                         "answers",
                         "items": _object({"vm_id": {"type": "string"},
                                           "vm": {"type": "string"}})},
    }),
    "TaskProgress": {
        "type": "object", "additionalProperties": True, "required": ["phase"],
        "description": "A migration: `phase` (live: transferring, done; cold: stopping, "
                       "copying, starting, done), while it transfers the bytes of memory and "
                       "disks, and once a live one is done libvirt's figures of the completed "
                       "job (bytes_total, elapsed_s, downtime_ms).",
        "properties": {
            "phase": {"type": "string"},
            "bytes_total": BYTES, "bytes_remaining": BYTES, "bytes_processed": BYTES,
            "bytes_per_second": BYTES,
            "elapsed_s": {"type": "number", "description": "Seconds the copy has taken"},
            "downtime_ms": {"type": "integer", "description": "How long the guest was "
                                                            "paused at the switch"},
        },
    },
}
