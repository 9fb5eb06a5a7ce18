"""Hosts as admins manage them: add (connect first), show with capacity and use, drain, remove."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from src.config import Config
from src.database import gpus as gpu_dao
from src.database import host_drains as drain_dao
from src.database import host_evacuations as host_evac_dao
from src.database import hosts as host_dao
from src.database import vm_evacuations as evac_dao
from src.database import vm_migrations as move_dao
from src.database import vms as vm_dao
from src.database.db import Database
from src.database.hosts import HostRow
from src.hypervisor.errors import HypervisorError
from src.services.hosts.capacity import Capacity
from src.services.hosts.gpus import GpuInventory
from src.services.hosts.registry import Host, HostRegistry
from src.utils.clock import utc_now

TEST_DRIVER = "test"


class HostService:
    def __init__(self, db: Database, hosts: HostRegistry, capacity: Capacity,
                 gpus: GpuInventory, config: Config,
                 on_room: Callable[[], object] = lambda: None) -> None:
        """on_room: a host was added or changed, so VMs waiting for capacity may fit now."""
        self._on_room = on_room
        self._db = db
        self._hosts = hosts
        self._capacity = capacity
        self._gpus = gpus
        self._config = config

    def add(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Register a host after connecting to it; its GPUs are read at once.

        Raises: InsecureUri, NameConflict, HostUnreachable.
        """
        config, uri = self._config, fields["uri"]
        row = HostRow(
            name=fields["name"], uri=uri, storage=fields.get("storage", "shared"),
            storage_pool=fields.get("storage_pool", "iaas"),
            network=fields.get("network", config.network),
            domain_type=fields.get("domain_type", TEST_DRIVER if uri.startswith("test:")
                                   else config.domain_type),
            cpu_allocation_ratio=fields.get("cpu_allocation_ratio", config.cpu_allocation_ratio),
            ram_allocation_ratio=fields.get("ram_allocation_ratio", config.ram_allocation_ratio),
            enabled=True, created_at=utc_now())
        host = self._hosts.add(row)
        self._gpus.refresh_host(host)
        self._on_room()
        return self.show(host.name)

    def list(self) -> list[dict[str, Any]]:
        return [self._view(host) for host in self._hosts.all()]

    def show(self, name: str) -> dict[str, Any]:
        """Raises: HostNotFound."""
        return self._view(self._hosts.get(name))

    def update(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Drain (enabled: false) or re-enable a host, or change its ratios.

        Raises: HostNotFound.
        """
        stored = {key: int(value) if isinstance(value, bool) else value
                  for key, value in changes.items()}
        self._hosts.update(name, stored)
        self._capacity.forget(name)
        self._on_room()
        return self.show(name)

    def remove(self, name: str) -> None:
        """Raises: HostNotFound, HostNotEmpty."""
        self._hosts.remove(name)
        self._capacity.forget(name)

    def _view(self, host: Host) -> dict[str, Any]:
        state = self._hosts.state(host.name)
        up = self._hosts.is_up(host.name)
        with self._db.read() as conn:
            held = evac_dao.with_evacuations(conn, move_dao.with_moves(
                conn, vm_dao.allocated(conn))).get(host.name)
            gpus = gpu_dao.list_all(conn, host.name)
            vm_count = host_dao.vm_counts(conn).get(host.name, 0)
            drain = drain_dao.progress(conn, host.name)
            evacuation = host_evac_dao.progress(conn, host.name)
        capacity = allocated = free = None
        numa_nodes = None
        try:
            known = self._capacity.of(host) if up else None
        except HypervisorError:
            known = None
        usable = [gpu for gpu in gpus if gpu.unavailable_reason is None]
        used = {"vcpus": held.vcpus if held else 0, "ram": held.ram_mib if held else 0,
                "disk_gb": held.disk_gb if held else 0,
                "gpus": sum(1 for gpu in gpus if gpu.vm_id is not None)}
        allocated = used
        if known is not None:
            capacity = {"vcpus": known.vcpus, "ram": known.ram_mib, "disk_gb": known.disk_gb,
                        "gpus": len(usable)}
            free = {key: capacity[key] - used[key] for key in capacity}
            numa_nodes = len(known.cells)
        row = host.row
        return {
            "name": row.name, "uri": row.uri,
            "state": "disabled" if not row.enabled else ("up" if up else "down"),
            "enabled": row.enabled, "reason": None if up else state.reason,
            "storage": row.storage, "storage_pool": row.storage_pool, "network": row.network,
            "domain_type": row.domain_type, "cpu_allocation_ratio": row.cpu_allocation_ratio,
            "ram_allocation_ratio": row.ram_allocation_ratio,
            "libvirt_version": state.libvirt_version, "capacity": capacity,
            "allocated": allocated, "free": free, "numa_nodes": numa_nodes, "vms": vm_count,
            "last_seen": state.last_seen, "created_at": row.created_at, "drain": drain,
            "evacuation": evacuation}
