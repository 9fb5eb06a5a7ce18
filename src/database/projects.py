"""DAO for projects: their quotas and what they use."""
from __future__ import annotations

import sqlite3

from src.database import images, keypairs, security_groups, tokens
from src.database.reservations import gpus_reserved_now
from src.database.volumes import usage as volume_usage
from src.utils.clock import utc_now
from src.vocabulary import QUOTA_RESOURCES as RESOURCES

GIB = 1024 ** 3

Limits = dict[str, int | None]
_COUNTED = "(holds_resources = 1 OR status = 'queued')"  # a VM's sizes count against quota


def exists(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM projects WHERE name = ?", (name,)).fetchone() is not None


def create(conn: sqlite3.Connection, name: str, limits: Limits, now: str) -> None:
    """Add the project with limits unless it exists (its limits are then left as they are)."""
    columns = ", ".join(f"quota_{resource}" for resource in RESOURCES)
    conn.execute(f"INSERT OR IGNORE INTO projects (name, created_at, {columns}) "
                 f"VALUES (?, ?{', ?' * len(RESOURCES)})",
                 (name, now, *(limits.get(resource) for resource in RESOURCES)))


def limits(conn: sqlite3.Connection, name: str) -> Limits | None:
    columns = ", ".join(f"quota_{resource}" for resource in RESOURCES)
    row = conn.execute(f"SELECT {columns} FROM projects WHERE name = ?", (name,)).fetchone()
    return dict(zip(RESOURCES, tuple(row), strict=True)) if row else None


def set_limits(conn: sqlite3.Connection, name: str, changes: Limits) -> None:
    for resource, value in changes.items():
        assert resource in RESOURCES
        conn.execute(f"UPDATE projects SET quota_{resource} = ? WHERE name = ?", (value, name))


def usage(conn: sqlite3.Connection, name: str) -> dict[str, int]:
    """Instances are every VM row; vCPUs, RAM, disk and GPUs (a partition counts as one) only
    of VMs that still hold them or wait for capacity (a queued VM's quota is taken when it is accepted);
    images_gb the project's stored image bytes, in whole GiB rounded up; images, keypairs and
    tokens are counts (tokens: the live ones its members made)."""
    instances, vcpus, ram, disk = conn.execute(
        f"SELECT count(*), coalesce(sum(CASE WHEN {_COUNTED} THEN cpu END), 0), "
        f"coalesce(sum(CASE WHEN {_COUNTED} THEN ram END), 0), "
        f"coalesce(sum(CASE WHEN {_COUNTED} THEN disk_gb END), 0) "
        "FROM vms WHERE project = ?", (name,)).fetchone()
    gpus = conn.execute("SELECT count(*) FROM gpu_allocations a JOIN vms v ON v.id = a.vm_id "
                        "WHERE v.project = ?", (name,)).fetchone()[0]
    gpus += conn.execute("SELECT count(*) FROM partition_allocations a JOIN vms v "
                         "ON v.id = a.vm_id WHERE v.project = ?", (name,)).fetchone()[0]
    gpus += conn.execute("SELECT coalesce(sum(json_extract(demand, '$.gpu_count') + "
                         "(json_extract(demand, '$.gpu_profile') IS NOT NULL)), 0) "
                         "FROM capacity_waits WHERE project = ?", (name,)).fetchone()[0]
    gpus += gpus_reserved_now(conn, name, utc_now())  # a reservation's GPUs, in its window
    images_gb = -(-images.stored_bytes(conn, name) // GIB)
    volumes, volumes_gb = volume_usage(conn, name)
    return {"instances": instances, "vcpus": vcpus, "ram": ram, "gpus": gpus, "disk_gb": disk,
            "images_gb": images_gb, "images": images.count(conn, name),
            "keypairs": keypairs.count(conn, name),
            "tokens": tokens.live_made_by_members(conn, name, utc_now()),
            "volumes": volumes, "volumes_gb": volumes_gb,
            "security_groups": security_groups.count(conn, name)}


def names(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT name FROM projects ORDER BY name")]
