"""DAO for volumes and their attachments to VMs."""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class VolumeRow:
    id: str
    name: str
    project: str
    size_gb: int
    status: str  # vocabulary.VOLUME_STATUSES, less in-use (shown when it has attachments)
    multiattach: bool
    host: str
    created_at: str
    updated_at: str
    source_image_id: str | None = None
    source_image_name: str | None = None
    top_layer: str | None = None  # the pool volume that takes the writes; None until made
    error_code: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class AttachmentRow:
    volume_id: str
    vm_id: str
    read_only: bool
    device: str  # the target dev in the VM's domain: vdc, vdd, ...
    status: str  # vocabulary.ATTACHMENT_STATUSES
    created_at: str
    vm_name: str = ""
    volume_name: str = ""


_COLUMNS = ("id, name, project, size_gb, status, multiattach, host, created_at, updated_at, "
            "source_image_id, source_image_name, top_layer, error_code, error_message")
_FIELDS = [name.strip() for name in _COLUMNS.split(",")]
_ATTACHMENT = ("a.volume_id, a.vm_id, a.read_only, a.device, a.status, a.created_at, "
               "v.name AS vm_name, o.name AS volume_name")
_ATTACHMENT_FROM = ("FROM volume_attachments a JOIN vms v ON v.id = a.vm_id "
                    "JOIN volumes o ON o.id = a.volume_id")


def _volume(row: sqlite3.Row) -> VolumeRow:
    return VolumeRow(**{**dict(row), "multiattach": bool(row["multiattach"])})


def _attachment(row: sqlite3.Row) -> AttachmentRow:
    return AttachmentRow(**{**dict(row), "read_only": bool(row["read_only"])})


def count_held(conn: sqlite3.Connection, volume_id: str, sign: int) -> None:
    """Add (1) or take back (-1) the volume's size in its host's counters (migration 017), in
    the transaction that changes it (or moves it: take back before, add after)."""
    conn.execute("INSERT INTO host_usage (host, volumes_gb) SELECT host, ? * size_gb FROM volumes "
                 "WHERE id = ? ON CONFLICT (host) DO UPDATE SET "
                 "volumes_gb = volumes_gb + excluded.volumes_gb", (sign, volume_id))


def insert(conn: sqlite3.Connection, volume: VolumeRow) -> None:
    """Raises: sqlite3.IntegrityError when the name is taken in the project."""
    conn.execute(f"INSERT INTO volumes ({_COLUMNS}) VALUES ({', '.join('?' * len(_FIELDS))})",
                 tuple(getattr(volume, name) for name in _FIELDS))
    count_held(conn, volume.id, 1)


def get(conn: sqlite3.Connection, volume_id: str) -> VolumeRow | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM volumes WHERE id = ?", (volume_id,)).fetchone()
    return _volume(row) if row else None


def find(conn: sqlite3.Connection, id_or_name: str, project: str | None) -> list[VolumeRow]:
    """Volumes id_or_name means in project (None: every project): by id, else by name (several
    when an admin names a volume that more than one project has)."""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM volumes WHERE id = ? AND (? IS NULL OR "
                        "project = ?)", (id_or_name, project, project)).fetchall()
    if not rows:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM volumes WHERE name = ? AND (? IS NULL OR "
                            "project = ?) ORDER BY project", (id_or_name, project, project)
                            ).fetchall()
    return [_volume(row) for row in rows]


def list_page(conn: sqlite3.Connection, project: str | None, limit: int,
              marker: str | None) -> list[VolumeRow]:
    """Volumes by (created_at, id), after the marker volume's position."""
    after = ""
    params: list[object] = [project, project]
    if marker is not None:
        after = ("AND (created_at, id) > (SELECT created_at, id FROM volumes WHERE id = ?)")
        params.append(marker)
    return [_volume(row) for row in conn.execute(
        f"SELECT {_COLUMNS} FROM volumes WHERE (? IS NULL OR project = ?) {after} "
        "ORDER BY created_at, id LIMIT ?", (*params, limit))]


def list_all(conn: sqlite3.Connection) -> list[VolumeRow]:
    return [_volume(row) for row in conn.execute(f"SELECT {_COLUMNS} FROM volumes")]


def list_on(conn: sqlite3.Connection, host: str) -> list[VolumeRow]:
    return [_volume(row) for row in conn.execute(
        f"SELECT {_COLUMNS} FROM volumes WHERE host = ? ORDER BY created_at, id", (host,))]


def set_status(conn: sqlite3.Connection, volume_id: str, status: str, now: str,
               error: tuple[str, str] | None = None, only_from: tuple[str, ...] = ()) -> bool:
    """Whether the status changed (only_from: only from one of these)."""
    guard = f" AND status IN ({', '.join('?' * len(only_from))})" if only_from else ""
    code, message = error or (None, None)
    return conn.execute(
        f"UPDATE volumes SET status = ?, error_code = ?, error_message = ?, updated_at = ? "
        f"WHERE id = ?{guard}", (status, code, message, now, volume_id, *only_from)
    ).rowcount == 1


def set_top(conn: sqlite3.Connection, volume_id: str, layer: str, size_gb: int,
            now: str) -> None:
    count_held(conn, volume_id, -1)
    conn.execute("UPDATE volumes SET top_layer = ?, size_gb = ?, updated_at = ? WHERE id = ?",
                 (layer, size_gb, now, volume_id))
    count_held(conn, volume_id, 1)


def set_size(conn: sqlite3.Connection, volume_id: str, size_gb: int, now: str) -> None:
    count_held(conn, volume_id, -1)
    conn.execute("UPDATE volumes SET size_gb = ?, updated_at = ? WHERE id = ?",
                 (size_gb, now, volume_id))
    count_held(conn, volume_id, 1)


def delete_all(conn: sqlite3.Connection) -> list[str]:
    """Remove every volume row (with its attachments and snapshots); their ids."""
    ids = [row[0] for row in conn.execute("SELECT id FROM volumes")]
    conn.execute("DELETE FROM snapshots WHERE owner_kind = 'volume'")
    conn.execute("DELETE FROM disk_layers WHERE owner IN (SELECT id FROM volumes)")
    conn.execute("DELETE FROM volumes")
    conn.execute("UPDATE host_usage SET volumes_gb = 0")
    return ids


def delete(conn: sqlite3.Connection, volume_id: str) -> None:
    count_held(conn, volume_id, -1)
    conn.execute("DELETE FROM volumes WHERE id = ?", (volume_id,))


def usage(conn: sqlite3.Connection, project: str) -> tuple[int, int]:
    """(volumes, their size_gb summed) of the project."""
    count, total = conn.execute("SELECT count(*), coalesce(sum(size_gb), 0) FROM volumes "
                                "WHERE project = ?", (project,)).fetchone()
    return int(count), int(total)


def held_gb(conn: sqlite3.Connection) -> dict[str, int]:
    """Per host, the GiB its volumes hold (their snapshots' layers come on top), counted from
    the rows: host_dao.usage reads the counters kept of it."""
    return {row[0]: int(row[1]) for row in conn.execute(
        "SELECT host, sum(size_gb) FROM volumes GROUP BY host")}


def attach(conn: sqlite3.Connection, attachment: AttachmentRow) -> None:
    """Raises: sqlite3.IntegrityError when the VM already has this volume or this device."""
    conn.execute("INSERT INTO volume_attachments (volume_id, vm_id, read_only, device, status, "
                 "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                 (attachment.volume_id, attachment.vm_id, int(attachment.read_only),
                  attachment.device, attachment.status, attachment.created_at))


def set_attachment_status(conn: sqlite3.Connection, volume_id: str, vm_id: str,
                          status: str) -> None:
    conn.execute("UPDATE volume_attachments SET status = ? WHERE volume_id = ? AND vm_id = ?",
                 (status, volume_id, vm_id))


def detach(conn: sqlite3.Connection, volume_id: str, vm_id: str) -> None:
    conn.execute("DELETE FROM volume_attachments WHERE volume_id = ? AND vm_id = ?",
                 (volume_id, vm_id))


def attachments_of(conn: sqlite3.Connection, volume_ids: list[str]) -> dict[str, list[AttachmentRow]]:
    """The attachments of each volume, oldest first."""
    found: dict[str, list[AttachmentRow]] = {volume_id: [] for volume_id in volume_ids}
    if not volume_ids:
        return found
    marks = ", ".join("?" * len(volume_ids))
    for row in conn.execute(f"SELECT {_ATTACHMENT} {_ATTACHMENT_FROM} WHERE a.volume_id IN "
                            f"({marks}) ORDER BY a.created_at, a.device", volume_ids):
        found[row["volume_id"]].append(_attachment(row))
    return found


def attachments_for_vms(conn: sqlite3.Connection,
                        vm_ids: list[str] | None = None) -> dict[str, list[AttachmentRow]]:
    """The attachments of each VM (None: of every VM), by device."""
    found: dict[str, list[AttachmentRow]] = {}
    where, params = "", tuple[str, ...]()
    if vm_ids is not None:
        if not vm_ids:
            return found
        where, params = f"WHERE a.vm_id IN ({', '.join('?' * len(vm_ids))})", tuple(vm_ids)
    for row in conn.execute(f"SELECT {_ATTACHMENT} {_ATTACHMENT_FROM} {where} "
                            "ORDER BY a.device", params):
        found.setdefault(row["vm_id"], []).append(_attachment(row))
    return found


def attachment(conn: sqlite3.Connection, volume_id: str, vm_id: str) -> AttachmentRow | None:
    row = conn.execute(f"SELECT {_ATTACHMENT} {_ATTACHMENT_FROM} WHERE a.volume_id = ? AND "
                       "a.vm_id = ?", (volume_id, vm_id)).fetchone()
    return _attachment(row) if row else None


def confirm_pending(conn: sqlite3.Connection, vm_id: str) -> None:
    """The VM was built with its volumes: their attachments are made."""
    conn.execute("UPDATE volume_attachments SET status = 'attached' WHERE vm_id = ? AND "
                 "status = 'attaching'", (vm_id,))


def drop_pending(conn: sqlite3.Connection, vm_id: str) -> None:
    """The VM's build failed with nothing left on the host: its volumes were never attached."""
    conn.execute("DELETE FROM volume_attachments WHERE vm_id = ? AND status = 'attaching'",
                 (vm_id,))
