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
    # By position (_COLUMNS' order): a dict per row cost a create at 1,000 hosts some 3 ms.
    return HostRow(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7],
                   bool(row[8]), row[9])


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


def generation(conn: sqlite3.Connection) -> int:
    """A number that moves with every change to the hosts table (migration 018's triggers)."""
    return int(conn.execute("SELECT generation FROM host_changes").fetchone()[0])


def update(conn: sqlite3.Connection, name: str, changes: dict[str, object]) -> None:
    for column, value in changes.items():
        assert column in ("uri", "network", "domain_type", "cpu_allocation_ratio",
                          "ram_allocation_ratio", "enabled")
        conn.execute(f"UPDATE hosts SET {column} = ? WHERE name = ?", (value, name))


def delete(conn: sqlite3.Connection, name: str) -> None:
    conn.execute("DELETE FROM gpus WHERE host = ?", (name,))
    conn.execute("DELETE FROM image_copies WHERE host = ?", (name,))
    conn.execute("DELETE FROM host_usage WHERE host = ?", (name,))
    conn.execute("DELETE FROM hosts WHERE name = ?", (name,))


def vm_counts(conn: sqlite3.Connection) -> dict[str, int]:
    return {host: count for host, count in
            conn.execute("SELECT host, count(*) FROM vms GROUP BY host")}


@dataclass(frozen=True)
class Usage:
    """What a host holds: the VMs that still hold resources, and its volumes."""

    vcpus: int = 0
    ram_mib: int = 0
    disk_gb: int = 0  # VM disks
    volumes_gb: int = 0
    pinned_cpus: frozenset[int] = frozenset()


def usage(conn: sqlite3.Connection) -> dict[str, Usage]:
    """Every host's usage from the counters kept with each change (migration 017): one row per
    host, however many VMs. Hosts that hold nothing may be absent."""
    pinned: dict[str, set[int]] = {}
    for host, cpu in conn.execute("SELECT host, cpu FROM host_pinned_cpus"):
        pinned.setdefault(host, set()).add(int(cpu))
    return {host: Usage(int(vcpus), int(ram), int(disk), int(volumes),
                        frozenset(pinned.get(host, ())))
            for host, vcpus, ram, disk, volumes in conn.execute(
                "SELECT host, vcpus, ram_mib, disk_gb, volumes_gb FROM host_usage")}


def recount(conn: sqlite3.Connection) -> dict[str, Usage]:
    """Every host's usage counted from the VM and volume rows (what the counters must say);
    hosts that hold nothing are absent."""
    found: dict[str, dict[str, object]] = {}
    for host, vcpus, ram, disk in conn.execute(
            "SELECT host, sum(cpu), sum(ram), sum(disk_gb) FROM vms WHERE holds_resources = 1 "
            "GROUP BY host"):
        found[host] = {"vcpus": int(vcpus), "ram_mib": int(ram), "disk_gb": int(disk)}
    for host, volumes in conn.execute("SELECT host, sum(size_gb) FROM volumes GROUP BY host"):
        found.setdefault(host, {})["volumes_gb"] = int(volumes)
    pinned: dict[str, set[int]] = {}
    for host, cpu in conn.execute("SELECT v.host, p.value FROM vms v, json_each(v.pinned_cpus) p "
                                  "WHERE v.holds_resources = 1"):
        pinned.setdefault(host, set()).add(int(cpu))
    for host, cpus in pinned.items():
        found.setdefault(host, {})["pinned_cpus"] = frozenset(cpus)
    return {host: Usage(**values) for host, values in found.items()}  # type: ignore[arg-type]


def repair_usage(conn: sqlite3.Connection) -> list[str]:
    """Set the counters to a recount where they differ; the hosts that had drifted (a change
    made outside the triggers and DAO functions that keep them). Call inside a write
    transaction."""
    counted, kept = recount(conn), usage(conn)
    drifted = sorted(host for host in {*counted, *kept}
                     if counted.get(host, Usage()) != kept.get(host, Usage()))
    if drifted:
        conn.execute("DELETE FROM host_usage")
        conn.execute("DELETE FROM host_pinned_cpus")
        conn.execute("INSERT INTO host_usage (host, vcpus, ram_mib, disk_gb) "
                     "SELECT host, sum(cpu), sum(ram), sum(disk_gb) FROM vms "
                     "WHERE holds_resources = 1 GROUP BY host")
        conn.execute("INSERT INTO host_usage (host, volumes_gb) "
                     "SELECT host, sum(size_gb) FROM volumes WHERE true GROUP BY host "
                     "ON CONFLICT (host) DO UPDATE SET volumes_gb = excluded.volumes_gb")
        conn.execute("INSERT INTO host_pinned_cpus (host, cpu, vm_id) "
                     "SELECT v.host, p.value, v.id FROM vms v, json_each(v.pinned_cpus) p "
                     "WHERE v.holds_resources = 1")
    return drifted
