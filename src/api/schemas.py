"""The JSON Schemas of every request and response body: OpenAPI components, and validation's source."""
from __future__ import annotations

from typing import Any

from src.api.motion_schemas import MOTION_SCHEMAS
from src.api.network_schemas import NETWORK_SCHEMAS
from src.api.queue_schemas import QUEUE_SCHEMAS
from src.api.reservation_schemas import RESERVATION_SCHEMAS
from src.api.security_schemas import SECURITY_SCHEMAS
from src.api.volume_schemas import VOLUME_SCHEMAS
from src.config import DOMAIN_TYPES, MAX_RUNTIME_S, MAX_WAIT_S
from src.services.vms.power import PowerOptions
from src.vocabulary import (
    CAPACITY_RESOURCES,
    GPU_STATUSES,
    GPU_UNAVAILABLE_REASONS,
    IMAGE_FORMATS,
    IMAGE_STATUSES,
    IMAGE_VISIBILITIES,
    PARTITION_KINDS,
    PUBLIC_IMAGES_OWNER,
    QUOTA_RESOURCES,
    ROLES,
    TASK_ACTIONS,
    TASK_STATUSES,
    VM_ACTIONS,
    VM_STATUSES,
    WAITING_FOR_CAPACITY,
)

DNS_LABEL = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
IMAGE_NAME = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
IMAGE_FILE = "^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$"
COUNTER = {"type": "integer", "minimum": 0}
NULLABLE_MIB = {"type": ["integer", "null"]}
TIME = {"type": "string", "format": "date-time"}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
UUID = {"type": "string", "format": "uuid"}
HOST_NAME = {"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
             "maxLength": 63}
# The schemes a host may use; the server checks the rest (src/services/hosts/uris.py).
HOST_URI = "^(qemu|qemu\\+tls|qemu\\+ssh|qemu\\+tcp|test)://[A-Za-z0-9_.~:@/?=&\\[\\]+-]*$"
RATIO = {"type": "number", "minimum": 0.1, "maximum": 64}
PROJECT_NAME = "^[a-z0-9][a-z0-9_.-]{0,62}$"
LIMIT = {"type": ["integer", "null"], "minimum": 0, "maximum": 1000000000}
SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$",
          "description": "SHA-256 of the file, 64 lowercase hex digits"}
NULLABLE_UUID = {"type": ["string", "null"], "format": "uuid"}
# Text shown on terminals and pages: no control characters (C0, DEL, C1), line or paragraph
# separators, or the invisible format characters that reorder or hide text (bidi controls).
PRINTABLE = ("^[^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f"
             "\\u2028-\\u202e\\u2060-\\u206f\\ufeff\\ufff9-\\ufffb]*$")


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
        "key_names": {"type": "array", "maxItems": 32, "items": {
            "type": "string", "pattern": IMAGE_NAME, "maxLength": 64},
            "description": "Names of the project's keypairs, put in the guest beside ssh_keys."},
        "user_data": {"type": "string", "maxLength": 16384,
                      "description": "cloud-init user-data, delivered unchanged (16 KiB max)."},
        "host": {**HOST_NAME, "description": "Admins only: the host to run on (no scheduling)."},
        "volumes": {"type": "array", "maxItems": 24, "items": _ref("AttachmentCreate"),
                    "description": "Volumes attached from the first boot; the VM is placed on "
                                   "their host."},
        "wait_for_capacity": {"type": "boolean", "default": False,
                              "description": "When it fits nowhere now, wait (202, status "
                                             "queued) instead of 409 insufficient_capacity."},
        "preemptible": {"type": "boolean", "default": False,
                        "description": "A reservation may stop it (never delete it): its GPUs "
                                       "may be booked from under it, with a notice in its "
                                       "history and its preempt_at set beforehand."},
        "reservation": {"type": "string", "format": "uuid", "maxLength": 36,
                        "description": "Run in this reservation of your project, on the GPUs "
                                       "it claims (its flavor, during its window, up to its "
                                       "count: then 409 reservation_full)."},
        "networks": {"type": "array", "minItems": 1, "maxItems": 8, "uniqueItems": True,
                     "items": {"type": "string", "pattern": IMAGE_NAME, "maxLength": 64},
                     "description": "libvirt networks, one NIC each in order (the first is the "
                                    "guest's eth0, the one cloud-init configures); the VM goes "
                                    "to a host where all are active. Default: its host's "
                                    "network (IAAS_NETWORK)."},
        "security_groups": {"type": "array", "maxItems": 16, "uniqueItems": True, "items": {
            "type": "string", "pattern": IMAGE_NAME, "maxLength": 64},
            "description": "Names of the project's security groups (default [\"default\"], "
                           "made on first use); [] lets nothing in."},
        "max_wait_s": {"type": "integer", "minimum": 1, "maximum": MAX_WAIT_S,
                       "description": "With wait_for_capacity: how long it may wait (default "
                                      "IAAS_QUEUE_MAX_WAIT); then error capacity_wait_expired."},
        "max_runtime_s": {"type": "integer", "minimum": 1, "maximum": MAX_RUNTIME_S,
                          "description": "Each run's time limit (as Slurm's --time): seconds "
                                         "after each create or start it is stopped (never "
                                         "deleted; history: max_runtime_reached) and its GPUs "
                                         "go back. Shown as stop_at while it runs; the queue's "
                                         "estimated_start_at counts on it."},
    }, required=["name", "image_name"]) | {
        "dependentRequired": {"max_wait_s": ["wait_for_capacity"]},
        "description": "Sized by a flavor, or by cpu and ram (not both).",
        "oneOf": [
            {"required": ["flavor"], "not": {"anyOf": [{"required": ["cpu"]}, {"required": ["ram"]}]}},
            {"required": ["cpu", "ram"], "not": {"required": ["flavor"]}},
        ]},
    "FlavorCreate": _object({
        "name": {"type": "string", "pattern": IMAGE_NAME, "maxLength": 64},
        "cpu": {"type": "integer", "minimum": 1, "maximum": 128},
        "ram": {"type": "integer", "minimum": 128, "maximum": 1048576, "description": "MiB"},
        "disk_gb": {"type": "integer", "minimum": 1, "maximum": 16384},
        "gpu_count": {"type": "integer", "minimum": 0, "maximum": 16, "default": 0},
        "gpu_model": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$",
                      "description": "Product name match, e.g. H100"},
        "gpu_profile": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$",
                        "description": "One GPU partition of this mdev type (its id, e.g. "
                                       "nvidia-700, or name), or one SR-IOV virtual function "
                                       "(sriov_vf), instead of whole GPUs"},
        "hugepages": {"type": "boolean", "default": False},
        "cpu_pinning": {"type": "boolean", "default": False},
        "numa_aligned": {"type": "boolean", "default": False},
        "description": {"type": "string", "maxLength": 255},
    }, required=["name", "cpu", "ram", "disk_gb"]) | {
        "description": "gpu_profile asks for a partition instead of whole GPUs: not with "
                       "gpu_count above 0.",
        "not": {"required": ["gpu_profile", "gpu_count"],
                "properties": {"gpu_count": {"minimum": 1}}}},
    "ImageCreate": _object({
        "name": {"type": "string", "pattern": IMAGE_NAME, "maxLength": 64},
        "format": {"type": "string", "enum": list(IMAGE_FORMATS)},
        "file": {"type": "string", "pattern": IMAGE_FILE, "maxLength": 255,
                 "description": "Admins: register this bare file name inside IAAS_IMAGES_DIR."},
        "url": {"type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[!-~]+$",
                "maxLength": 2048, "description": "Import the image from this http(s) URL."},
        "sha256": SHA256,
        "visibility": {"type": "string", "enum": list(IMAGE_VISIBILITIES),
                       "description": "public (admins only; their default) or private"},
    }, required=["name", "format"]) | {
        "description": "With file: register a file already in the images dir (admins). With url: "
                       "import it (a task). With neither: an image waiting for PUT .../file.",
        "oneOf": [
            {"title": "register", "required": ["file"], "not": {"required": ["url"]}},
            {"title": "import", "required": ["url"], "not": {"required": ["file"]}},
            {"title": "upload", "not": {"anyOf": [{"required": ["file"]},
                                                   {"required": ["url"]}]}},
        ]},
    "KeypairCreate": _object({
        "name": {"type": "string", "pattern": IMAGE_NAME, "maxLength": 64},
        "public_key": {"type": "string", "minLength": 1, "maxLength": 8192,
                       "description": "One OpenSSH public key line"},
    }),
    "Keypair": _object({
        "name": {"type": "string"}, "project": {"type": "string"},
        "public_key": {"type": "string"},
        "fingerprint": {"type": "string", "pattern": "^SHA256:[A-Za-z0-9+/]{43}$",
                        "description": "As `ssh-keygen -lf` prints it"},
        "created_at": TIME,
    }),
    "KeypairList": _object({"keypairs": {"type": "array", "items": _ref("Keypair")},
                            "next_marker": {"type": "string"}}, required=["keypairs"]),
    "ShutdownOptions": _object({
        "timeout": {"type": "integer", "minimum": 1, "maximum": 3600, "default": PowerOptions.timeout,
                    "description": "Seconds to wait for the guest; ACPI is re-sent every 10 s."},
        "force": {"type": "boolean", "default": PowerOptions.force,
                  "description": "Power off once the timeout passes instead of failing."},
    }, required=[]),
    "RebootOptions": _object({
        "hard": {"type": "boolean", "default": PowerOptions.hard,
                 "description": "Reset instead of ACPI."},
    }, required=[]),
    "NoOptions": _object({}, required=[]),
    "Error": _object({"error": _object({
        "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
        "message": {"type": "string"},
        "details": {"type": "object"},
    })}),
    "Task": _object({
        "id": UUID, "vm_id": {**NULLABLE_UUID, "description": "null for an image's import"},
        "image_id": {**NULLABLE_UUID, "description": "The image an import fills"},
        "volume_id": {**NULLABLE_UUID, "description": "The volume a volume task works on"},
        "action": {"type": "string", "enum": list(TASK_ACTIONS)},
        "status": {"type": "string", "enum": list(TASK_STATUSES)},
        "details": {"oneOf": [{"type": "null"}, _object({"reason": {"type": "string"}})],
            "description": f"Why a queued task does not run yet ({WAITING_FOR_CAPACITY}: its "
                           "VM waits for capacity), or why the platform asked for it "
                           "(preempted: reservation <id>, reservation_ended)"},
        "error": {"oneOf": [{"type": "null"}, _ref("ErrorInfo")]},
        "created_at": TIME, "started_at": NULLABLE_TIME, "finished_at": NULLABLE_TIME,
        "progress": {"oneOf": [{"type": "null"}, _ref("TaskProgress")],
                     "description": "What a long task reports while it runs (a migration)"},
    }),
    "Flavor": _object({
        "id": UUID, "name": {"type": "string"}, "cpu": {"type": "integer"},
        "ram": {"type": "integer"}, "disk_gb": {"type": "integer"},
        "gpu_count": {"type": "integer"}, "gpu_model": {"type": ["string", "null"]},
        "gpu_profile": {"type": ["string", "null"],
                        "description": "The GPU partition (mdev type, or sriov_vf) it asks for"},
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
        "at": {"type": "string", "format": "date-time",
               "description": "The moment it answers for (now, or ?at=)"},
        "limited_by": {"type": "string", "enum": [*CAPACITY_RESOURCES, "host"],
                       "description": "The resource that runs out first (host: no host "
                                      "answers)"},
        "hosts": {"type": "array", "description": "Admins: the count on each host",
                  "items": _object({"host": {"type": "string"}, "available": COUNTER,
                                    "limited_by": {"type": "string",
                                                   "enum": [*CAPACITY_RESOURCES, "host"]}})},
    }, required=["flavor", "available", "limited_by", "at"]),
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
        "status": {"type": "string", "enum": list(GPU_STATUSES)},
        "reason": {"type": ["string", "null"],
                   "enum": [None, *GPU_UNAVAILABLE_REASONS]},
        "vm_id": {"type": ["string", "null"]},
        "refreshed_at": TIME,
        "host": {"type": "string"},
    }),
    "GpuList": _object({"gpus": {"type": "array", "items": _ref("Gpu")},
                        "partitions": {"type": "array", "items": _ref("GpuPartition"),
                                       "description": "Mediated device types the GPUs offer"}}),
    "GpuPartition": _object({
        "host": {"type": "string"},
        "parent": {"type": "string", "description": "The GPU's PCI address"},
        "kind": {"type": "string", "enum": list(PARTITION_KINDS),
                 "description": "mdev: a mediated device type; vf: the GPU's SR-IOV virtual "
                                "functions (a flavor with gpu_profile sriov_vf takes one)"},
        "type": {"type": "string", "description": "libvirt's mdev type id (nvidia-700), or "
                                                  "sriov_vf"},
        "profile": {"type": "string", "description": "What a flavor's gpu_profile names"},
        "name": {"type": ["string", "null"], "description": "e.g. NVIDIA H100-1-10C"},
        "total": COUNTER, "available": COUNTER,
        "available_instances": {**COUNTER, "description": "The same as available"}}),
    "ErrorInfo": _object({"code": {"type": "string"}, "message": {"type": "string"}}),
    "Image": _object({
        "id": UUID, "name": {"type": "string"}, "file": {"type": "string"},
        "format": {"type": "string", "enum": list(IMAGE_FORMATS)},
        "project": {"type": "string", "description": "The project that owns it; public images "
                                                     f"belong to no project: {PUBLIC_IMAGES_OWNER}"},
        "visibility": {"type": "string", "enum": list(IMAGE_VISIBILITIES)},
        "status": {"type": "string", "enum": list(IMAGE_STATUSES),
                   "description": "Only an active image boots VMs; missing_file: its file is "
                                  "not in the images directory (yet)"},
        "size_bytes": {"type": ["integer", "null"]},
        "virtual_size_bytes": {"type": ["integer", "null"]},
        "sha256": {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"},
        "progress": {"oneOf": [{"type": "null"}, _object({
            "bytes_done": COUNTER, "bytes_total": {"type": ["integer", "null"]}})],
            "description": "While an upload or import is under way"},
        "error": {"oneOf": [{"type": "null"}, _ref("ErrorInfo")]},
        "task_id": {**NULLABLE_UUID, "description": "An import's task"},
        "created_at": TIME,
        "hosts": {"type": "array", "items": {"type": "string"},
                  "description": "Admins: hosts whose storage pool holds a copy"},
    }, required=["id", "name", "file", "format", "project", "visibility", "status",
                 "size_bytes", "virtual_size_bytes", "sha256", "progress", "error", "task_id",
                 "created_at"]),
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
        "status": {"type": "string", "enum": list(VM_STATUSES)},
        "power_state": {"type": "string"},
        "task": {"oneOf": [{"type": "null"}, _ref("Task")]},
        "actions": {"type": "array", "items": {"type": "string", "enum": list(VM_ACTIONS)},
                    "description": "What may be asked of the VM right now."},
        "ip_addresses": {"type": "array", "items": _ref("IpAddress")},
        "console": _object({"vnc": {"type": ["string", "null"],
                                    "description": "host:port while the VM runs"}}),
        "nics": {"type": "array", "description": "Its NICs in order (the guest's eth0 first); "
                                                 "ip_addresses is their addresses together",
                 "items": _object({"network": {"type": "string"}, "mac": {"type": "string"},
                                   "addresses": {"type": "array", "items": _ref("IpAddress")}})},
        "volumes": {"type": "array", "items": _ref("Attachment")},
        "error": {"oneOf": [{"type": "null"}, _ref("ErrorInfo")]},
        "host": {"type": ["string", "null"], "description": "Its host (admins; null for others, "
                                                           "and while it is not placed)"},
        "queue": {"oneOf": [{"type": "null"}, _ref("QueuePlace")],
                  "description": "While it is queued: its place in the capacity queue"},
        "reservation": {"type": ["string", "null"], "description": "The reservation it runs in"},
        "security_groups": {"type": "array", "items": {"type": "string"},
                            "description": "The names of its security groups"},
        "preemptible": {"type": "boolean", "description": "It said preemptible: true at create "
                                                          "(a reservation may stop it)"},
        "preempt_at": {"type": ["string", "null"], "format": "date-time",
                       "description": "It runs on GPUs a reservation claims from then: it is "
                                      "stopped then (kept, not deleted)"},
        "max_runtime_s": {"type": ["integer", "null"],
                          "description": "Each run's time limit, as asked at create"},
        "stop_at": {"type": ["string", "null"], "format": "date-time",
                    "description": "When this run reaches max_runtime_s: it is stopped then "
                                   "(kept, not deleted; null while it does not run)"},
        "created_at": TIME, "updated_at": TIME,
    }),
    "Event": _object({
        "task_id": UUID, "action": {"type": "string", "enum": list(TASK_ACTIONS)},
        "request_id": {"type": ["string", "null"]},
        "result": {"type": "string", "enum": list(TASK_STATUSES)},
        "reason": {"type": ["string", "null"],
                   "description": "Why the platform asked for it: preempted: reservation <id> "
                                  "(its GPUs are claimed from now on), reservation_ended"},
        "error": {"oneOf": [{"type": "null"}, _ref("ErrorInfo")]},
        "host": {"type": ["string", "null"],
                 "description": "The VM's host at the time (admins; null for others)"},
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
                                                      "name": {"type": "string"},
                                                      "host": {"type": "string"}})},
        "folders": {"type": "array", "items": {"type": "string"}},
        "volumes": {"type": "array", "items": _object({"host": {"type": "string"},
                                                      "file": {"type": "string"}}),
                    "description": "Volume files of this installation without a volume"},
    }),
    "VmList": _object({"vms": {"type": "array", "items": _ref("Vm")},
                       "next_marker": UUID}, required=["vms"]),
    "ImageList": _object({"images": {"type": "array", "items": _ref("Image")},
                          "next_marker": UUID}, required=["images"]),
    "OpenApiDocument": {"type": "object", "description": "This document."},
    "HostCreate": _object({
        "name": HOST_NAME,
        "uri": {"type": "string", "maxLength": 1024, "pattern": HOST_URI,
                "description": "libvirt URI: qemu+tls://, qemu+ssh://, qemu:///, test:///"},
        "storage": {"type": "string", "enum": ["shared", "pool"], "default": "shared"},
        "storage_pool": {"type": "string", "pattern": IMAGE_NAME, "maxLength": 64},
        "network": {"type": "string", "pattern": IMAGE_NAME, "maxLength": 64},
        "domain_type": {"type": "string", "enum": sorted(DOMAIN_TYPES)},
        "cpu_allocation_ratio": RATIO, "ram_allocation_ratio": RATIO,
    }, required=["name", "uri"]),
    "HostUpdate": {**_object({
        "enabled": {"type": "boolean", "description": "false drains it: no new VMs"},
        "cpu_allocation_ratio": RATIO, "ram_allocation_ratio": RATIO,
    }, required=[]), "minProperties": 1},
    "Host": _object({
        "name": {"type": "string"}, "uri": {"type": "string"},
        "state": {"type": "string", "enum": ["up", "down", "disabled"]},
        "enabled": {"type": "boolean"}, "reason": {"type": ["string", "null"]},
        "storage": {"type": "string", "enum": ["shared", "pool"]},
        "storage_pool": {"type": "string"}, "network": {"type": "string"},
        "domain_type": {"type": "string"},
        "cpu_allocation_ratio": {"type": "number"}, "ram_allocation_ratio": {"type": "number"},
        "libvirt_version": {"type": ["string", "null"]},
        "capacity": {"oneOf": [{"type": "null"}, _ref("HostResources")]},
        "allocated": _ref("HostResources"),
        "free": {"oneOf": [{"type": "null"}, _ref("HostResources")]},
        "numa_nodes": {"type": ["integer", "null"]}, "vms": COUNTER,
        "last_seen": NULLABLE_TIME, "created_at": TIME,
        "drain": {"oneOf": [{"type": "null"}, _ref("HostDrain")],
                  "description": "Its last drain (POST /v1/hosts/{host}/drain), or null"},
        "evacuation": {"oneOf": [{"type": "null"}, _ref("HostEvacuation")],
                       "description": "Its last evacuation (POST /v1/hosts/{host}/evacuate), "
                                      "and the stale copies it still holds, or null"},
    }),
    "HostResources": _object({"vcpus": {"type": "integer"}, "ram": {"type": "integer"},
                              "disk_gb": {"type": "integer"}, "gpus": {"type": "integer"}}),
    "HostList": _object({"hosts": {"type": "array", "items": _ref("Host")}}),
    "TokenCreate": _object({
        "project": {"type": "string", "pattern": PROJECT_NAME, "maxLength": 63,
                    "description": "Members: their own project only."},
        "role": {"type": "string", "enum": list(ROLES),
                 "description": "Members: member only."},
        "expires_in_days": {"type": "number", "exclusiveMinimum": 0, "maximum": 36500,
                            "description": "Omitted: never expires."},
        "description": {"type": "string", "maxLength": 255, "pattern": PRINTABLE,
                        "description": "Printable text: no control characters or line breaks."},
    }, required=["project", "role"]),
    "TokenCreated": _object({
        "id": UUID, "token": {"type": "string", "description": "The secret, shown this once."},
        "project": {"type": "string"}, "role": {"type": "string", "enum": list(ROLES)},
        "expires_at": NULLABLE_TIME, "description": {"type": "string"}, "created_at": TIME,
    }),
    "Token": _object({
        "id": UUID, "project": {"type": "string"},
        "role": {"type": "string", "enum": list(ROLES)}, "description": {"type": "string"},
        "created_at": TIME, "expires_at": NULLABLE_TIME, "revoked_at": NULLABLE_TIME,
        "created_by": {"type": ["string", "null"],
                       "description": "The token that made it (null: made on the command line)"},
        "current": {"type": "boolean", "description": "Whether it is the token of this call."},
    }),
    "TokenList": _object({"tokens": {"type": "array", "items": _ref("Token")},
                          "next_marker": UUID}, required=["tokens"]),
    "IpAddress": _object({
        "address": {"type": "string"}, "family": {"type": "string", "enum": ["ipv4", "ipv6", "unknown"]},
        "source": {"type": "string", "enum": ["dhcp", "agent", "arp"]}}),
    "Health": _object({"status": {"type": "string", "enum": ["ok", "degraded"]},
                       "db": {"type": "string"}, "libvirt": {"type": "string"}}),
}
SCHEMAS.update(VOLUME_SCHEMAS)
SCHEMAS.update(QUEUE_SCHEMAS)
SCHEMAS.update(RESERVATION_SCHEMAS)
SCHEMAS.update(MOTION_SCHEMAS)
SCHEMAS.update(NETWORK_SCHEMAS)
SCHEMAS.update(SECURITY_SCHEMAS)
