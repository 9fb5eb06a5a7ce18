"""DAO for hosts: the libvirt hosts VMs are placed on, and how to reach and use each."""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass

LOCAL = "local"  # the host db-init registers from IAAS_LIBVIRT_URI


@dataclass(frozen=True)
class HostRow:
    name: str
    uri: str
    storage: str  # shared (the host sees our images and instances dirs) or pool (its own)
    storage_pool: str
    network: str
    domain_type: str
    cpu_allocation_ratio: float
    ram_allocation_ratio: float
    enabled: bool
    created_at: str


_COLUMNS = ("name, uri, storage, storage_pool, network, domain_type, cpu_allocation_ratio, "
            "ram_allocation_ratio, enabled, created_at")


def _row(row: sqlite3.Row) -> HostRow:
    values = dict(row)
    values["enabled"] = bool(values["enabled"])
    return HostRow(**values)


def insert(conn: sqlite3.Connection, host: HostRow) -> None:
    """Raises: sqlite3.IntegrityError when the name is taken."""
    conn.execute(f"INSERT INTO hosts ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 (host.name, host.uri, host.storage, host.storage_pool, host.network,
                  host.domain_type, host.cpu_allocation_ratio, host.ram_allocation_ratio,
                  int(host.enabled), host.created_at))


def get(conn: sqlite3.Connection, name: str) -> HostRow | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM hosts WHERE name = ?", (name,)).fetchone()
    return _row(row) if row else None


def list_all(conn: sqlite3.Connection) -> list[HostRow]:
    return [_row(row) for row in conn.execute(f"SELECT {_COLUMNS} FROM hosts ORDER BY name")]


def update(conn: sqlite3.Connection, name: str, changes: dict[str, object]) -> None:
    for column, value in changes.items():
        assert column in ("uri", "network", "domain_type", "cpu_allocation_ratio",
                          "ram_allocation_ratio", "enabled")
        conn.execute(f"UPDATE hosts SET {column} = ? WHERE name = ?", (value, name))


def delete(conn: sqlite3.Connection, name: str) -> None:
    conn.execute("DELETE FROM gpus WHERE host = ?", (name,))
    conn.execute("DELETE FROM image_copies WHERE host = ?", (name,))
    conn.execute("DELETE FROM hosts WHERE name = ?", (name,))


def vm_counts(conn: sqlite3.Connection) -> dict[str, int]:
    return {host: count for host, count in
            conn.execute("SELECT host, count(*) FROM vms GROUP BY host")}
