"""Request and response schemas of networks (merged into the OpenAPI components by
src/api/schemas.py)."""
from __future__ import annotations

from typing import Any

NETWORK_NAME = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # the names IAAS_NETWORK takes
BRIDGE_NAME = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$"  # Linux: 15 characters at most
CIDR = "^([0-9]{1,3}[.]){3}[0-9]{1,3}/[0-9]{1,2}$"
NETWORK_MODES = ("nat", "isolated", "bridge", "route", "open")
DEFINED_MODES = ("isolated", "nat", "bridge")
HOST = {"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", "maxLength": 63}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": properties,
            "required": list(properties) if required is None else required}


NETWORK_SCHEMAS: dict[str, Any] = {
    "NetworkCreate": _object({
        "name": {"type": "string", "pattern": NETWORK_NAME, "maxLength": 64},
        "host": {**HOST, "description": "The host to define it on"},
        "mode": {"type": "string", "enum": list(DEFINED_MODES),
                 "description": "isolated: no <forward> (guests reach each other and the host "
                                "only); nat: out through the host; bridge: onto an existing "
                                "host bridge"},
        "subnet": {"type": "string", "pattern": CIDR, "maxLength": 18,
                   "description": "isolated and nat: an IPv4 subnet (/8 to /30); the gateway "
                                  "is its first address and DHCP leases the rest"},
        "bridge": {"type": "string", "pattern": BRIDGE_NAME, "maxLength": 15,
                   "description": "bridge: the host bridge (e.g. br0), which must exist"},
    }, required=["name", "host", "mode"]) | {
        "description": "isolated and nat take a subnet; bridge takes a bridge and no subnet."},
    "Network": _object({
        "name": {"type": "string"},
        "host": {"type": ["string", "null"], "description": "Its host (admins; null for others)"},
        "mode": {"type": "string", "enum": list(NETWORK_MODES)},
        "subnet": {"type": ["string", "null"], "description": "Its IPv4 subnet (CIDR)"},
        "bridge": {"type": ["string", "null"]},
        "active": {"type": "boolean"},
        "managed": {"type": "boolean",
                    "description": "Defined through this API (only those may be deleted "
                                   "through it)"},
    }),
    "NetworkList": _object({"networks": {"type": "array", "items": {
        "$ref": "#/components/schemas/Network"}}}),
}
