"""Turn service results into the JSON objects the API returns."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from src.services.actions.orphans import Orphans
from src.services.hosts.gpus import PartitionOffer
from src.services.rules.quotas import ProjectQuota
from src.services.rules.redaction import redact
from src.services.rules.windows import shown
from src.services.vms.reads import VmView
from src.services.volumes.layers import serial_of
from src.vocabulary import QUEUE_EXECUTOR, WAITING_FOR_CAPACITY

if TYPE_CHECKING:  # the rows services return; views only read their fields
    from src.database.audit import AuditRow
    from src.database.capacity_waits import WaitRow
    from src.database.flavors import FlavorRow
    from src.database.gpus import GpuRow
    from src.database.images import ImageRow
    from src.database.keypairs import KeypairRow
    from src.database.tasks import TaskRow
    from src.database.tokens import TokenRow
    from src.database.volumes import AttachmentRow

VNC_HOST = "127.0.0.1"


def error(code: str | None, message: str | None, reveal: bool) -> dict[str, str] | None:
    """A task's or VM's error; host detail (paths, URIs) only for those who may read it."""
    if not code:
        return None
    return {"code": code, "message": (message or "") if reveal else redact(message or "")}


def task(row: TaskRow, reveal: bool) -> dict[str, Any]:
    waits = row.status == "queued" and row.executor == QUEUE_EXECUTOR
    return {"id": row.id, "vm_id": row.vm_id, "image_id": row.image_id,
            "volume_id": row.volume_id, "action": row.action,
            "status": row.status,
            "details": ({"reason": WAITING_FOR_CAPACITY} if waits
                        else {"reason": row.reason} if row.reason else None),
            "error": error(row.error_code, row.error_message, reveal),
            "created_at": row.created_at,
            "started_at": row.started_at, "finished_at": row.finished_at,
            "progress": json.loads(row.progress) if row.progress else None}


def event(row: TaskRow, reveal: bool) -> dict[str, Any]:
    return {"task_id": row.id, "action": row.action, "request_id": row.request_id,
            "result": row.status, "reason": row.reason, "error": error(row.error_code, row.error_message, reveal),
            "host": row.host if reveal else None,
            "created_at": row.created_at, "started_at": row.started_at,
            "finished_at": row.finished_at}


def audit(row: AuditRow) -> dict[str, Any]:
    return {"id": row.id, "at": row.at, "project": row.project, "token_id": row.token_id,
            "method": row.method, "path": row.path, "status": row.status,
            "request_id": row.request_id, "resource_id": row.resource_id}


def flavor(row: FlavorRow) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "cpu": row.cpu, "ram": row.ram,
            "disk_gb": row.disk_gb, "gpu_count": row.gpu_count, "gpu_model": row.gpu_model,
            "gpu_profile": row.gpu_profile,
            "hugepages": row.hugepages, "cpu_pinning": row.cpu_pinning,
            "numa_aligned": row.numa_aligned, "description": row.description,
            "created_at": row.created_at}


def gpu(row: GpuRow) -> dict[str, Any]:
    return {"id": row.id, "vendor": {"id": row.vendor_id, "name": row.vendor_name},
            "product": {"id": row.product_id, "name": row.product_name},
            "iommu_group": row.iommu_group, "iommu_group_devices": row.group_devices,
            "passthrough_functions": row.functions, "numa_node": row.numa_node,
            "driver": row.driver, "status": row.status, "reason": row.unavailable_reason,
            "vm_id": row.vm_id, "refreshed_at": row.refreshed_at, "host": row.host}


def partition(offer: PartitionOffer) -> dict[str, Any]:
    """A mediated device type a GPU offers, as {parent, profile, total, available} (so that
    SR-IOV virtual functions fit the same shape), with libvirt's words beside."""
    row, available = offer.row, offer.available
    return {"host": row.host, "parent": row.parent, "kind": row.kind, "type": row.type_id,
            "profile": row.type_id,
            "name": row.name, "total": row.total, "available": available,
            "available_instances": available}


def image(row: ImageRow, reveal: bool) -> dict[str, Any]:
    progress = ({"bytes_done": row.bytes_done, "bytes_total": row.bytes_total}
                if row.status in ("pending", "importing") and row.bytes_done is not None else None)
    return {"id": row.id, "name": row.name, "file": row.file, "format": row.format,
            "project": row.project, "visibility": row.visibility, "status": row.status,
            "size_bytes": row.size_bytes, "virtual_size_bytes": row.virtual_size_bytes,
            "sha256": row.sha256, "progress": progress,
            "error": error(row.error_code, row.error_message, reveal), "task_id": row.task_id,
            "created_at": row.created_at}


def keypair(row: KeypairRow) -> dict[str, Any]:
    return {"name": row.name, "project": row.project, "public_key": row.public_key,
            "fingerprint": row.fingerprint, "created_at": row.created_at}


def vm(view: VmView, reveal: bool) -> dict[str, Any]:
    """Built once per VM listed (1,000 a page): what most VMs lack (a task, an error, volumes,
    a queue place) is tested before any call is made for it."""
    row = view.row
    vnc = (f"{VNC_HOST}:{row.vnc_port}" if row.vnc_port
           and view.power_state in ("running", "paused", "blocked") else None)
    return {"id": row.id, "name": row.name, "cpu": row.cpu, "ram": row.ram,
            "disk_gb": row.disk_gb, "image": {"id": row.image_id, "name": row.image_name},
            "project": row.project, "flavor": row.flavor_name, "gpus": row.gpus, "numa_node": row.numa_node,
            "pinned_cpus": row.pinned_cpus,
            "status": row.status, "power_state": view.power_state,
            "task": task(view.task, reveal) if view.task else None, "actions": view.actions,
            "ip_addresses": row.ip_addresses, "console": {"vnc": vnc},
            "nics": [{"network": nic.network, "mac": nic.mac, "addresses": nic.addresses}
                     for nic in view.nics],
            "volumes": [attachment(entry) for entry in view.volumes] if view.volumes else [],
            "error": error(row.error_code, row.error_message, reveal) if row.error_code else None,
            "host": (row.host or None) if reveal else None,
            "queue": queue_place(view.queue) if view.queue else None,
            "reservation": view.reservation, "preemptible": view.preemptible,
            "preempt_at": shown(view.preempt_at) if view.preempt_at else None,
            "max_runtime_s": view.max_runtime_s,
            "stop_at": shown(view.stop_at) if view.stop_at else None,
            "security_groups": list(view.security_groups),
            "created_at": row.created_at, "updated_at": row.updated_at}


def queue_place(wait: WaitRow) -> dict[str, Any]:
    """A waiting VM's place in the capacity queue: why and how long."""
    return {"position": wait.position, "since": wait.since, "reason": wait.reason,
            "estimated_start_at": shown(wait.estimated_start_at)
            if wait.estimated_start_at else None, "expires_at": wait.expires_at}


def attachment(row: AttachmentRow) -> dict[str, Any]:
    """A volume's attachment to a VM (shown on both)."""
    return {"vm_id": row.vm_id, "vm_name": row.vm_name, "volume_id": row.volume_id,
            "volume_name": row.volume_name, "read_only": row.read_only, "device": row.device,
            "serial": serial_of(row.volume_id), "status": row.status}


def token(row: TokenRow, caller_token_id: str) -> dict[str, Any]:
    """A token without its secret (only its hash exists)."""
    return {"id": row.id, "project": row.project, "role": row.role,
            "description": row.description, "created_at": row.created_at,
            "expires_at": row.expires_at, "revoked_at": row.revoked_at,
            "created_by": row.created_by, "current": row.id == caller_token_id}


def token_created(row: TokenRow, secret: str) -> dict[str, Any]:
    return {"id": row.id, "token": secret, "project": row.project, "role": row.role,
            "expires_at": row.expires_at, "description": row.description,
            "created_at": row.created_at}


def quota(found: ProjectQuota) -> dict[str, Any]:
    return {"project": found.project, "limits": found.limits, "in_use": found.in_use}


def orphans(found: Orphans) -> dict[str, Any]:
    return {"domains": [{"uuid": domain.uuid, "name": domain.name, "host": domain.host}
                        for domain in found.domains],
            "folders": [str(folder) for folder in found.folders],
            "volumes": [{"host": volume.host, "file": volume.file} for volume in found.volumes]}
