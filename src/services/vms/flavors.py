"""Flavors: named sizes a VM can be created from (CPU-only or with GPUs)."""
from __future__ import annotations

import sqlite3
import uuid
from typing import Any

from src import errors
from src.database import flavors as flavor_dao
from src.database.db import Database
from src.services.hosts.capacity import Capacity
from src.services.rules import access, windows
from src.services.rules.access import Principal
from src.services.rules.placement import Demand
from src.utils.clock import utc_now

# What `make db-init` seeds: CPU-only sizes, and GPU sizes that ask for NUMA-local placement.
SEED_FLAVORS: list[dict[str, Any]] = [
    {"name": "cpu.small", "cpu": 1, "ram": 1024, "disk_gb": 10,
     "description": "1 vCPU, 1 GiB: services, notebooks without a GPU"},
    {"name": "cpu.medium", "cpu": 2, "ram": 4096, "disk_gb": 20,
     "description": "2 vCPUs, 4 GiB: data preparation"},
    {"name": "cpu.large", "cpu": 8, "ram": 32768, "disk_gb": 80,
     "description": "8 vCPUs, 32 GiB: CPU training and inference"},
    {"name": "gpu.1x", "cpu": 8, "ram": 65536, "disk_gb": 100, "gpu_count": 1,
     "hugepages": True, "cpu_pinning": True, "numa_aligned": True,
     "description": "1 GPU of any model, 8 pinned vCPUs, 64 GiB on hugepages"},
    {"name": "gpu.h100x2", "cpu": 32, "ram": 262144, "disk_gb": 200, "gpu_count": 2,
     "gpu_model": "H100", "hugepages": True, "cpu_pinning": True, "numa_aligned": True,
     "description": "2 H100s, 32 pinned vCPUs, 256 GiB on hugepages"},
]


def demand_of(flavor: flavor_dao.FlavorRow) -> Demand:
    """What a VM of this flavor asks of a host."""
    return Demand(cpu=flavor.cpu, ram=flavor.ram, gpu_count=flavor.gpu_count,
                  gpu_model=flavor.gpu_model, gpu_profile=flavor.gpu_profile,
                  numa_aligned=flavor.numa_aligned,
                  cpu_pinning=flavor.cpu_pinning, disk_gb=flavor.disk_gb)


class FlavorService:
    def __init__(self, db: Database, capacity: Capacity | None = None) -> None:
        self._db = db
        self._capacity = capacity

    def list(self) -> list[flavor_dao.FlavorRow]:
        with self._db.read() as conn:
            return flavor_dao.list_all(conn)

    def get(self, id_or_name: str) -> flavor_dao.FlavorRow:
        """Raises: FlavorNotFound."""
        with self._db.read() as conn:
            flavor = flavor_dao.get(conn, id_or_name)
        if flavor is None:
            raise errors.FlavorNotFound(flavor=id_or_name)
        return flavor

    def availability(self, id_or_name: str, caller: Principal,
                     at: str | None = None) -> dict[str, Any]:
        """How many VMs of the flavor fit now (or at a later moment: GPUs reservations claim
        then are counted out, what VMs hold now is taken as still held) on all hosts, and what
        limits them; admins also see the count per host.

        Raises: FlavorNotFound, ReservationBadTime (at).
        """
        flavor = self.get(id_or_name)
        now = utc_now()
        moment = windows.at(at, now)
        assert self._capacity is not None, "availability needs the hosts' capacity"
        total, limited_by, per_host = self._capacity.availability(demand_of(flavor), moment)
        body: dict[str, Any] = {"flavor": flavor.name, "available": total,
                                "limited_by": limited_by, "at": windows.shown(moment)}
        if access.sees_internals(caller):
            body["hosts"] = [{"host": entry.host, "available": entry.available,
                              "limited_by": entry.limited_by} for entry in per_host]
        return body

    def create(self, fields: dict[str, Any]) -> flavor_dao.FlavorRow:
        """Raises: NameConflict."""
        flavor = flavor_dao.FlavorRow(
            id=str(uuid.uuid4()), name=fields["name"], cpu=fields["cpu"], ram=fields["ram"],
            disk_gb=fields["disk_gb"], gpu_count=fields.get("gpu_count", 0),
            gpu_model=fields.get("gpu_model"), hugepages=fields.get("hugepages", False),
            cpu_pinning=fields.get("cpu_pinning", False),
            numa_aligned=fields.get("numa_aligned", False),
            description=fields.get("description", ""), created_at=utc_now(),
            gpu_profile=fields.get("gpu_profile"))
        try:
            with self._db.write() as conn:
                flavor_dao.insert(conn, flavor)
        except sqlite3.IntegrityError:
            raise errors.NameConflict(kind="flavor", name=flavor.name) from None
        return flavor

    def seed(self) -> int:
        """Add the seed flavors that are missing; return how many were added."""
        added = 0
        for fields in SEED_FLAVORS:
            try:
                self.create(fields)
                added += 1
            except errors.NameConflict:
                continue
        return added

    def delete(self, id_or_name: str) -> None:
        """VMs keep the sizes they were made with, so a flavor in use may go. Raises: FlavorNotFound."""
        flavor = self.get(id_or_name)
        with self._db.write() as conn:
            flavor_dao.delete(conn, flavor.id)
