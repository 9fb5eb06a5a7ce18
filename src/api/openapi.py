"""The OpenAPI 3.1 document: the API's contract, and the source of every request schema."""
from __future__ import annotations

from typing import Any

DNS_LABEL = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
IMAGE_NAME = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
IMAGE_FILE = "^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$"
VM_STATUSES = ["building", "running", "stopped", "paused", "error", "deleting"]
TASK_STATUSES = ["queued", "running", "succeeded", "failed"]
POWER_ACTIONS = ["start", "shutdown", "stop", "reboot", "pause", "resume"]
TASK_ACTIONS = ["create", "delete", *POWER_ACTIONS]
COUNTER = {"type": "integer", "minimum": 0}
NULLABLE_MIB = {"type": ["integer", "null"]}
TIME = {"type": "string", "format": "date-time"}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
UUID = {"type": "string", "format": "uuid"}
QUOTA_RESOURCES = ["instances", "vcpus", "ram", "gpus"]
LIMIT = {"type": ["integer", "null"], "minimum": 0, "maximum": 1000000000}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": properties,
            "required": list(properties) if required is None else required}


SCHEMAS: dict[str, Any] = {
    "VmCreate": _object({
        "name": {"type": "string", "pattern": DNS_LABEL, "format": "dns-label", "maxLength": 63,
                 "description": "DNS label; becomes the domain name and guest hostname."},
        "cpu": {"type": "integer", "minimum": 1, "maximum": 128},
        "ram": {"type": "integer", "minimum": 128, "maximum": 1048576, "description": "MiB"},
        "image_name": {"type": "string", "pattern": IMAGE_NAME, "maxLength": 64},
        "disk_gb": {"type": "integer", "minimum": 1, "maximum": 16384},
        "flavor": {"type": "string", "pattern": IMAGE_NAME, "maxLength": 64,
                   "description": "A flavor's name or id; give either flavor or cpu and ram."},
        "ssh_keys": {"type": "array", "maxItems": 32, "items": {
            "type": "string", "minLength": 1, "maxLength": 8192},
            "description": "OpenSSH public keys, put in the guest by cloud-init."},
        "user_data": {"type": "string", "maxLength": 16384,
                      "description": "cloud-init user-data, delivered unchanged (16 KiB max)."},
    }, required=["name", "image_name"]),
    "FlavorCreate": _object({
        "name": {"type": "string", "pattern": IMAGE_NAME, "maxLength": 64},
        "cpu": {"type": "integer", "minimum": 1, "maximum": 128},
        "ram": {"type": "integer", "minimum": 128, "maximum": 1048576, "description": "MiB"},
        "disk_gb": {"type": "integer", "minimum": 1, "maximum": 16384},
        "gpu_count": {"type": "integer", "minimum": 0, "maximum": 16, "default": 0},
        "gpu_model": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$",
                      "description": "Product name match, e.g. H100"},
        "hugepages": {"type": "boolean", "default": False},
        "cpu_pinning": {"type": "boolean", "default": False},
        "numa_aligned": {"type": "boolean", "default": False},
        "description": {"type": "string", "maxLength": 255},
    }, required=["name", "cpu", "ram", "disk_gb"]),
    "ImageCreate": _object({
        "name": {"type": "string", "pattern": IMAGE_NAME, "maxLength": 64},
        "file": {"type": "string", "pattern": IMAGE_FILE, "maxLength": 255,
                 "description": "Bare file name inside IAAS_IMAGES_DIR."},
        "format": {"type": "string", "enum": ["qcow2", "raw"]},
    }),
    "ShutdownOptions": _object({
        "timeout": {"type": "integer", "minimum": 1, "maximum": 3600, "default": 60,
                    "description": "Seconds to wait for the guest; ACPI is re-sent every 10 s."},
        "force": {"type": "boolean", "default": False,
                  "description": "Power off once the timeout passes instead of failing."},
    }, required=[]),
    "RebootOptions": _object({
        "hard": {"type": "boolean", "default": False, "description": "Reset instead of ACPI."},
    }, required=[]),
    "NoOptions": _object({}, required=[]),
    "Error": _object({"error": _object({
        "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
        "message": {"type": "string"},
        "details": {"type": "object"},
    })}),
    "Task": _object({
        "id": UUID, "vm_id": UUID,
        "action": {"type": "string", "enum": TASK_ACTIONS},
        "status": {"type": "string", "enum": TASK_STATUSES},
        "error": {"oneOf": [{"type": "null"}, _ref("ErrorInfo")]},
        "created_at": TIME, "started_at": NULLABLE_TIME, "finished_at": NULLABLE_TIME,
    }),
    "Flavor": _object({
        "id": UUID, "name": {"type": "string"}, "cpu": {"type": "integer"},
        "ram": {"type": "integer"}, "disk_gb": {"type": "integer"},
        "gpu_count": {"type": "integer"}, "gpu_model": {"type": ["string", "null"]},
        "hugepages": {"type": "boolean"}, "cpu_pinning": {"type": "boolean"},
        "numa_aligned": {"type": "boolean"}, "description": {"type": "string"},
        "created_at": TIME,
    }),
    "FlavorList": _object({"flavors": {"type": "array", "items": _ref("Flavor")}}),
    "QuotaUpdate": {**_object({resource: {**LIMIT, "description": "null: unlimited"}
                               for resource in QUOTA_RESOURCES}, required=[]), "minProperties": 1},
    "Quota": _object({
        "project": {"type": "string"},
        "limits": _object({resource: {"type": ["integer", "null"]} for resource in QUOTA_RESOURCES}),
        "in_use": _object({resource: COUNTER for resource in QUOTA_RESOURCES}),
    }),
    "ProjectList": _object({"projects": {"type": "array", "items": _ref("Quota")}}),
    "AuditEvent": _object({
        "id": COUNTER, "at": TIME, "project": {"type": ["string", "null"]},
        "token_id": {"type": ["string", "null"]}, "method": {"type": "string"},
        "path": {"type": "string"}, "status": {"type": "integer"},
        "request_id": {"type": "string"}, "resource_id": {"type": ["string", "null"]},
    }),
    "AuditEventList": _object({"events": {"type": "array", "items": _ref("AuditEvent")},
                               "next_marker": COUNTER}, required=["events"]),
    "Availability": _object({
        "flavor": {"type": "string"}, "available": COUNTER,
        "limited_by": {"type": "string", "enum": ["gpu", "pcpu", "vcpu", "ram"],
                       "description": "The resource that runs out first"},
    }),
    "Gpu": _object({
        "id": {"type": "string", "description": "PCI address"},
        "vendor": _object({"id": {"type": "string"}, "name": {"type": ["string", "null"]}}),
        "product": _object({"id": {"type": "string"}, "name": {"type": ["string", "null"]}}),
        "iommu_group": {"type": ["integer", "null"]},
        "iommu_group_devices": {"type": "array", "items": _object({
            "address": {"type": "string"}, "class": {"type": "string"},
            "role": {"type": "string", "enum": ["companion", "bridge", "foreign"]}})},
        "passthrough_functions": {"type": "array", "items": {"type": "string"}},
        "numa_node": {"type": ["integer", "null"]},
        "driver": {"type": ["string", "null"]},
        "status": {"type": "string", "enum": ["free", "allocated", "unavailable"]},
        "reason": {"type": ["string", "null"],
                   "enum": [None, "iommu_group_shared", "no_iommu_group", "not_present"]},
        "vm_id": {"type": ["string", "null"]},
        "refreshed_at": TIME,
    }),
    "GpuList": _object({"gpus": {"type": "array", "items": _ref("Gpu")}}),
    "ErrorInfo": _object({"code": {"type": "string"}, "message": {"type": "string"}}),
    "Image": _object({
        "id": UUID, "name": {"type": "string"}, "file": {"type": "string"},
        "format": {"type": "string", "enum": ["qcow2", "raw"]},
        "size_bytes": {"type": ["integer", "null"]},
        "virtual_size_bytes": {"type": ["integer", "null"]},
        "created_at": TIME,
    }),
    "Vm": _object({
        "id": UUID, "name": {"type": "string"},
        "cpu": {"type": "integer"}, "ram": {"type": "integer"}, "disk_gb": {"type": "integer"},
        "image": _object({"id": UUID, "name": {"type": "string"}}),
        "project": {"type": "string"},
        "flavor": {"type": ["string", "null"]},
        "gpus": {"type": "array", "items": {"type": "string"},
                 "description": "PCI addresses of the GPUs reserved for this VM"},
        "numa_node": {"type": ["integer", "null"]},
        "pinned_cpus": {"type": "array", "items": COUNTER,
                        "description": "Host CPU of each vCPU, when pinned"},
        "status": {"type": "string", "enum": VM_STATUSES},
        "power_state": {"type": "string"},
        "task": {"oneOf": [{"type": "null"}, _ref("Task")]},
        "actions": {"type": "array", "items": {"type": "string", "enum": [*POWER_ACTIONS, "delete"]},
                    "description": "What may be asked of the VM right now."},
        "ip_addresses": {"type": "array", "items": _object({
            "address": {"type": "string"}, "family": {"type": "string", "enum": ["ipv4", "ipv6", "unknown"]},
            "source": {"type": "string", "enum": ["dhcp", "agent", "arp"]}})},
        "console": _object({"vnc": {"type": ["string", "null"],
                                    "description": "host:port while the VM runs"}}),
        "error": {"oneOf": [{"type": "null"}, _ref("ErrorInfo")]},
        "created_at": TIME, "updated_at": TIME,
    }),
    "Event": _object({
        "task_id": UUID, "action": {"type": "string", "enum": TASK_ACTIONS},
        "request_id": {"type": ["string", "null"]},
        "result": {"type": "string", "enum": TASK_STATUSES},
        "error": {"oneOf": [{"type": "null"}, _ref("ErrorInfo")]},
        "created_at": TIME, "started_at": NULLABLE_TIME, "finished_at": NULLABLE_TIME,
    }),
    "EventList": _object({"events": {"type": "array", "items": _ref("Event")}}),
    "VmStats": _object({
        "vm_id": UUID, "window_s": {"type": "number"},
        "cpu": _object({"time_ns": COUNTER, "percent": {"type": "number"}, "vcpus": COUNTER}),
        "memory": _object({"current_mib": NULLABLE_MIB, "available_mib": NULLABLE_MIB,
                           "unused_mib": NULLABLE_MIB, "rss_mib": NULLABLE_MIB}),
        "disks": {"type": "array", "items": _object({
            "name": {"type": "string"}, "read_bytes": COUNTER, "write_bytes": COUNTER,
            "read_ops": COUNTER, "write_ops": COUNTER})},
        "nics": {"type": "array", "items": _object({
            "name": {"type": "string"}, "rx_bytes": COUNTER, "tx_bytes": COUNTER,
            "rx_packets": COUNTER, "tx_packets": COUNTER})},
    }),
    "Orphans": _object({
        "domains": {"type": "array", "items": _object({"uuid": {"type": "string"},
                                                      "name": {"type": "string"}})},
        "folders": {"type": "array", "items": {"type": "string"}},
    }),
    "VmList": _object({"vms": {"type": "array", "items": _ref("Vm")},
                       "next_marker": UUID}, required=["vms"]),
    "ImageList": _object({"images": {"type": "array", "items": _ref("Image")}}),
    "Health": _object({"status": {"type": "string", "enum": ["ok", "degraded"]},
                       "db": {"type": "string"}, "libvirt": {"type": "string"}}),
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _responses(ok: int, schema: dict[str, Any] | None, *errors: int,
               content: dict[str, Any] | None = None) -> dict[str, Any]:
    body = {"content": content} if content is not None else (_json(schema) if schema else {})
    responses: dict[str, Any] = {str(ok): {"description": "Success", **body}}
    for status in (*errors, 401, 403, 500, 503):
        responses[str(status)] = {"description": "Error", **_json(_ref("Error"))}
    responses["401"]["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    responses["503"]["headers"] = {"Retry-After": {"schema": {"type": "integer"},
                                                   "description": "Seconds before retrying"}}
    return responses


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string"}}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


VM_PARAM = _path_param("vm", "VM id or name")
IMAGE_PARAM = _path_param("image", "Image id or name")

PATHS: dict[str, Any] = {
    "/healthz": {"get": {"operationId": "health", "security": [], "responses": {
        "200": {"description": "DB and libvirt answer", **_json(_ref("Health"))},
        "503": {"description": "A part does not answer", **_json(_ref("Health"))}}}},
    "/metrics": {"get": {"operationId": "metrics", "security": [],
                         "description": "Prometheus text exposition", "responses": _responses(
                             200, None, content={"text/plain": {"schema": {"type": "string"}}})}},
    "/v1/openapi.json": {"get": {"operationId": "openapi", "security": [], "responses": _responses(
        200, {"type": "object"})}},
    "/v1/images": {
        "get": {"operationId": "listImages", "responses": _responses(200, _ref("ImageList"))},
        "post": {"operationId": "createImage", "requestBody": {"required": True, **_json(
            _ref("ImageCreate"))}, "responses": _responses(201, _ref("Image"), 400, 409, 413, 415)},
    },
    "/v1/images/{image}": {
        "parameters": [IMAGE_PARAM],
        "get": {"operationId": "showImage", "responses": _responses(200, _ref("Image"), 404)},
        "delete": {"operationId": "deleteImage", "responses": _responses(204, None, 404, 409)},
    },
    "/v1/flavors": {
        "get": {"operationId": "listFlavors", "responses": _responses(200, _ref("FlavorList"))},
        "post": {"operationId": "createFlavor", "requestBody": {"required": True, **_json(
            _ref("FlavorCreate"))}, "responses": _responses(201, _ref("Flavor"), 400, 409, 413, 415)},
    },
    "/v1/flavors/{flavor}": {
        "parameters": [_path_param("flavor", "Flavor id or name")],
        "get": {"operationId": "showFlavor", "responses": _responses(200, _ref("Flavor"), 404)},
        "delete": {"operationId": "deleteFlavor", "responses": _responses(204, None, 404)},
    },
    "/v1/flavors/{flavor}/availability": {
        "parameters": [_path_param("flavor", "Flavor id or name")],
        "get": {"operationId": "showFlavorAvailability",
                "description": "How many VMs of this flavor could be created now.",
                "responses": _responses(200, _ref("Availability"), 404)},
    },
    "/v1/gpus": {
        "get": {"operationId": "listGpus", "responses": _responses(200, _ref("GpuList"))},
    },
    "/v1/gpus/refresh": {
        "post": {"operationId": "refreshGpus", "description":
                 "Re-read the host's PCI devices; allocations are kept.",
                 "responses": _responses(200, _ref("GpuList"))},
    },
    "/v1/vms": {
        "get": {"operationId": "listVms", "parameters": [
            _query("status", {"type": "string", "enum": VM_STATUSES}),
            _query("name", {"type": "string"}),
            _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
            _query("marker", UUID),
        ], "responses": _responses(200, _ref("VmList"), 400)},
        "post": {"operationId": "createVm", "requestBody": {"required": True, **_json(
            _ref("VmCreate"))}, "responses": _responses(202, _ref("Vm"), 400, 409, 413, 415)},
    },
    "/v1/vms/{vm}": {
        "parameters": [VM_PARAM],
        "get": {"operationId": "showVm", "responses": _responses(200, _ref("Vm"), 404)},
        "delete": {"operationId": "deleteVm", "responses": _responses(202, _ref("Task"), 404, 409)},
    },
    "/v1/vms/{vm}/events": {
        "parameters": [VM_PARAM],
        "get": {"operationId": "listVmEvents", "parameters": [
            _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000})],
            "responses": _responses(200, _ref("EventList"), 400, 404)},
    },
    "/v1/vms/{vm}/console": {
        "parameters": [VM_PARAM],
        "get": {"operationId": "showVmConsole", "description": "Tail of the serial console log.",
                "parameters": [_query("tail", {"type": "integer", "minimum": 1, "maximum": 10000})],
                "responses": _responses(200, None, 400, 404, content={
                    "text/plain": {"schema": {"type": "string"}}})},
    },
    "/v1/vms/{vm}/stats": {
        "parameters": [VM_PARAM],
        "get": {"operationId": "showVmStats", "responses": _responses(200, _ref("VmStats"), 404, 409)},
    },
    **{f"/v1/vms/{{vm}}/{action}": {
        "parameters": [VM_PARAM],
        "post": {"operationId": f"{action}Vm",
                 "requestBody": {"required": False, **_json(_ref(
                     {"shutdown": "ShutdownOptions", "reboot": "RebootOptions"}.get(action, "NoOptions")))},
                 "responses": _responses(202, _ref("Task"), 400, 404, 409, 413, 415)},
    } for action in POWER_ACTIONS},
    "/v1/admin/orphans": {
        "get": {"operationId": "listOrphans", "description":
                "Domains and instance folders of this installation that have no VM record.",
                "responses": _responses(200, _ref("Orphans"))},
    },
    "/v1/projects": {
        "get": {"operationId": "listProjects", "responses": _responses(200, _ref("ProjectList"))},
    },
    "/v1/projects/{project}/quota": {
        "parameters": [_path_param("project", "Project name")],
        "get": {"operationId": "showQuota", "description": "Limits (null: unlimited) and usage.",
                "responses": _responses(200, _ref("Quota"), 404)},
        "put": {"operationId": "updateQuota", "requestBody": {"required": True, **_json(
            _ref("QuotaUpdate"))}, "responses": _responses(200, _ref("Quota"), 400, 404, 413, 415)},
    },
    "/v1/events": {
        "get": {"operationId": "listAuditEvents", "description":
                "The audit trail of mutating requests, newest first (members: their project).",
                "parameters": [
                    _query("project", {"type": "string"}),
                    _query("method", {"type": "string", "enum": ["POST", "PUT", "DELETE"]}),
                    _query("status", {"type": "integer", "minimum": 100, "maximum": 599}),
                    _query("resource_id", {"type": "string"}),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                    _query("marker", {"type": "integer", "minimum": 1}),
                ], "responses": _responses(200, _ref("AuditEventList"), 400)},
    },
    "/v1/tasks/{task}": {
        "parameters": [_path_param("task", "Task id")],
        "get": {"operationId": "showTask", "parameters": [
            _query("wait", {"type": "integer", "minimum": 0, "maximum": 60})],
            "responses": _responses(200, _ref("Task"), 400, 404)},
    },
}

def _links(response: dict[str, Any], source: str, targets: dict[str, str]) -> None:
    """OpenAPI links: what a client (and Schemathesis's stateful runs) may call next."""
    response["links"] = {operation: {"operationId": operation, "parameters": {param: source}}
                         for operation, param in targets.items()}


_links(PATHS["/v1/vms"]["post"]["responses"]["202"], "$response.body#/id", {
    "showVm": "vm", "deleteVm": "vm", "stopVm": "vm", "startVm": "vm", "listVmEvents": "vm",
    "showVmConsole": "vm"})
_links(PATHS["/v1/vms/{vm}"]["delete"]["responses"]["202"], "$response.body#/id",
       {"showTask": "task"})
_links(PATHS["/v1/images"]["post"]["responses"]["201"], "$response.body#/id",
       {"showImage": "image", "deleteImage": "image"})
_links(PATHS["/v1/flavors"]["post"]["responses"]["201"], "$response.body#/id",
       {"showFlavor": "flavor", "deleteFlavor": "flavor", "showFlavorAvailability": "flavor"})

for _item in PATHS.values():  # any POST may carry an Idempotency-Key
    if "post" in _item:
        _item["post"].setdefault("parameters", []).append({
            "name": "Idempotency-Key", "in": "header", "required": False,
            "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"},
            "description": "Same key and body within 24 h: the first answer again, nothing new."})
        for _status, _why in (("400", "Malformed key or request"),
                              ("409", "The key's first request is still being answered"),
                              ("422", "Key reused with another body")):
            _item["post"]["responses"].setdefault(_status, {"description": _why,
                                                            **_json(_ref("Error"))})

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "IaaS control plane for AI workloads", "version": "1.0.0"},
    "paths": PATHS,
    "components": {"schemas": SCHEMAS, "securitySchemes": {"bearer": {
        "type": "http", "scheme": "bearer",
        "description": "An API token: `python -m src.cli token create`, or IAAS_ADMIN_TOKEN from db-init"}}},
    "security": [{"bearer": []}],
}
