"""Request and response schemas of volumes, their attachments and snapshots (merged into the
OpenAPI components by src/api/schemas.py)."""
from __future__ import annotations

from typing import Any

from src.vocabulary import SNAPSHOT_STATUSES, VOLUME_STATUSES

DNS_LABEL = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
IMAGE_NAME = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
TIME = {"type": "string", "format": "date-time"}
UUID = {"type": "string", "format": "uuid"}
SIZE_GB = {"type": "integer", "minimum": 1, "maximum": 65536, "description": "GiB"}
NAME = {"type": "string", "pattern": DNS_LABEL, "format": "dns-label", "maxLength": 63,
        "description": "Follows the VM name rules; unique in its project."}
REFERENCE = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", "maxLength": 64,
             "description": "An id or a name."}
ERROR = {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/ErrorInfo"}]}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": properties,
            "required": list(properties) if required is None else required}


ATTACHMENT = _object({
    "vm_id": UUID, "vm_name": {"type": "string"}, "volume_id": UUID,
    "volume_name": {"type": "string"}, "read_only": {"type": "boolean"},
    "device": {"type": "string", "description": "The target in the VM (vdc, vdd, ...); the "
                                                  "guest finds it as /dev/disk/by-id/virtio-<serial>."},
    "serial": {"type": "string"},
    "status": {"type": "string", "enum": ["attaching", "attached", "detaching"]},
})

VOLUME_SCHEMAS: dict[str, Any] = {
    "VolumeCreate": _object({
        "name": NAME, "size_gb": SIZE_GB,
        "image_name": {"type": "string", "pattern": IMAGE_NAME, "maxLength": 64,
                       "description": "Start as a full copy of this image's content."},
        "multiattach": {"type": "boolean",
                        "description": "May be attached read-only to several VMs at once."},
        "host": {"type": "string", "pattern": DNS_LABEL, "maxLength": 63,
                 "description": "Admins only: the host to make it on."},
    }, required=["name", "size_gb"]),
    "VolumeResize": _object({"size_gb": SIZE_GB}),
    "Volume": _object({
        "id": UUID, "name": {"type": "string"}, "project": {"type": "string"},
        "size_gb": {"type": "integer"},
        "status": {"type": "string", "enum": list(VOLUME_STATUSES)},
        "multiattach": {"type": "boolean"},
        "host": {"type": "string"},
        "source_image": {"oneOf": [{"type": "null"}, _object({
            "id": UUID, "name": {"type": "string"}})]},
        "attachments": {"type": "array", "items": ATTACHMENT},
        "task": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/Task"}]},
        "error": ERROR,
        "created_at": TIME, "updated_at": TIME,
    }),
    "VolumeList": _object({"volumes": {"type": "array", "items": {
        "$ref": "#/components/schemas/Volume"}}, "next_marker": UUID}, required=["volumes"]),
    "AttachmentCreate": _object({
        "volume": REFERENCE,
        "read_only": {"type": "boolean", "description": "Default false. A multiattach volume "
                                                        "attaches read-only only."},
    }, required=["volume"]),
    "Attachment": ATTACHMENT,
    "SnapshotCreate": _object({"name": NAME}),
    "Snapshot": _object({
        "id": UUID, "name": {"type": "string"}, "size_gb": {"type": "integer"},
        "status": {"type": "string", "enum": list(SNAPSHOT_STATUSES)},
        "task": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/Task"}],
                 "description": "The task that makes it (in the answer to its create)"},
        "created_at": TIME}, required=["id", "name", "size_gb", "status", "created_at"]),
    "SnapshotList": _object({"snapshots": {"type": "array", "items": {
        "$ref": "#/components/schemas/Snapshot"}}}),
    "Revert": _object({"snapshot": REFERENCE}),
    "ImageFromVm": _object({"name": {"type": "string", "pattern": IMAGE_NAME, "maxLength": 64,
                                     "description": "The new image's name in the VM's project."}}),
}
