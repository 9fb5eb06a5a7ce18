"""DAO for the flavors table."""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class FlavorRow:
    id: str
    name: str
    cpu: int
    ram: int
    disk_gb: int
    gpu_count: int
    gpu_model: str | None
    hugepages: bool
    cpu_pinning: bool
    numa_aligned: bool
    description: str
    created_at: str
    gpu_profile: str | None = None  # one GPU partition (an mdev type, or sriov_vf), not whole GPUs


_COLUMNS = ("id, name, cpu, ram, disk_gb, gpu_count, gpu_model, hugepages, cpu_pinning, "
            "numa_aligned, description, created_at, gpu_profile")
_FLAGS = ("hugepages", "cpu_pinning", "numa_aligned")


def _row(row: sqlite3.Row) -> FlavorRow:
    values = dict(row)
    for flag in _FLAGS:
        values[flag] = bool(values[flag])
    return FlavorRow(**values)


def insert(conn: sqlite3.Connection, flavor: FlavorRow) -> None:
    """Raises: sqlite3.IntegrityError when the name is taken."""
    conn.execute(f"INSERT INTO flavors ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 (flavor.id, flavor.name, flavor.cpu, flavor.ram, flavor.disk_gb,
                  flavor.gpu_count, flavor.gpu_model, int(flavor.hugepages),
                  int(flavor.cpu_pinning), int(flavor.numa_aligned), flavor.description,
                  flavor.created_at, flavor.gpu_profile))


def get(conn: sqlite3.Connection, id_or_name: str) -> FlavorRow | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM flavors WHERE id = ? OR name = ?",
                       (id_or_name, id_or_name)).fetchone()
    return _row(row) if row else None


def list_all(conn: sqlite3.Connection) -> list[FlavorRow]:
    return [_row(row) for row in conn.execute(f"SELECT {_COLUMNS} FROM flavors ORDER BY cpu, ram, name")]


def delete(conn: sqlite3.Connection, flavor_id: str) -> None:
    conn.execute("DELETE FROM flavors WHERE id = ?", (flavor_id,))
