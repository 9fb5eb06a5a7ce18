"""Request and response schemas of security groups (merged into the OpenAPI components by
src/api/schemas.py)."""
from __future__ import annotations

from typing import Any

NAME = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
TIME = {"type": "string", "format": "date-time"}
UUID = {"type": "string", "format": "uuid"}
GROUP_NAME = {"type": "string", "pattern": NAME, "maxLength": 64}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": properties,
            "required": list(properties) if required is None else required}


RULE_CREATE = _object({
    "direction": {"type": "string", "enum": ["ingress"],
                  "description": "Only inbound traffic is filtered; the VM may open anything"},
    "protocol": {"type": "string", "enum": ["tcp", "udp", "icmp", "all"],
                 "description": "all: every IP protocol (no ports)"},
    "port_min": {**PORT, "description": "tcp and udp; without it, every port"},
    "port_max": {**PORT, "description": "Default port_min"},
    "cidr": {"type": "string", "maxLength": 18, "pattern": "^[0-9./]+$",
             "description": "IPv4 source network, e.g. 0.0.0.0/0 (give cidr or group)"},
    "group": {**GROUP_NAME, "description": "Let in the members of this group of the project "
                                           "(their addresses; it may be the group itself)"},
}, required=["direction", "protocol"]) | {"oneOf": [{"required": ["cidr"]},
                                                    {"required": ["group"]}]}
RULES = {"type": "array", "maxItems": 100, "items": RULE_CREATE}

SECURITY_SCHEMAS: dict[str, Any] = {
    "SecurityGroupCreate": _object({
        "name": GROUP_NAME,
        "description": {"type": "string", "maxLength": 255},
        "rules": RULES,
    }, required=["name"]),
    "SecurityGroupRuleCreate": RULE_CREATE,
    "SecurityGroupRules": _object({"rules": RULES}),
    "SecurityGroupAttach": _object({"name": GROUP_NAME}),
    "SecurityGroupRule": _object({
        "id": UUID, "direction": {"type": "string"}, "protocol": {"type": "string"},
        "port_min": {"type": ["integer", "null"]}, "port_max": {"type": ["integer", "null"]},
        "cidr": {"type": ["string", "null"]}, "group": {"type": ["string", "null"]}}),
    "SecurityGroup": _object({
        "id": UUID, "name": {"type": "string"}, "project": {"type": "string"},
        "description": {"type": "string"},
        "rules": {"type": "array", "items": {"$ref": "#/components/schemas/SecurityGroupRule"}},
        "vms": {"type": "array", "items": UUID, "description": "The VMs it is attached to"},
        "tasks": {"type": "array", "items": {"$ref": "#/components/schemas/Task"},
                  "description": "After a rule change: the `firewall` task of each of its VMs "
                                 "that brings its filter up to date (a busy VM's comes when "
                                 "its task ends)"},
        "created_at": TIME, "updated_at": TIME,
    }),
    "SecurityGroupList": _object({"security_groups": {"type": "array", "items": {
        "$ref": "#/components/schemas/SecurityGroup"}}}),
}
