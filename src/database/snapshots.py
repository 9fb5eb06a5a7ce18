"""DAO for snapshots and the disk layers (qcow2 files in a host's pool) they freeze."""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class SnapshotRow:
    id: str
    name: str
    owner: str  # the volume's id, or the VM's (its root disk)
    owner_kind: str  # volume or vm
    project: str
    layer: str | None  # the frozen layer; None until the snapshot is made
    size_gb: int
    status: str  # vocabulary.SNAPSHOT_STATUSES
    created_at: str
    error_code: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class LayerRow:
    host: str
    name: str  # the pool volume's name (or the file's, in a VM's folder)
    owner: str
    parent: str | None  # the layer it is backed by; None: the bottom of its chain
    size_gb: int
    created_at: str


_COLUMNS = ("id, name, owner, owner_kind, project, layer, size_gb, status, created_at, "
            "error_code, error_message")
_FIELDS = [name.strip() for name in _COLUMNS.split(",")]
_LAYER = "host, name, owner, parent, size_gb, created_at"


def insert(conn: sqlite3.Connection, snapshot: SnapshotRow) -> None:
    """Raises: sqlite3.IntegrityError when the owner already has a snapshot of that name."""
    conn.execute(f"INSERT INTO snapshots ({_COLUMNS}) VALUES ({', '.join('?' * len(_FIELDS))})",
                 tuple(getattr(snapshot, name) for name in _FIELDS))


def find(conn: sqlite3.Connection, owner: str, id_or_name: str) -> SnapshotRow | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM snapshots WHERE owner = ? AND (id = ? OR "
                       "name = ?) ORDER BY id = ? DESC LIMIT 1",
                       (owner, id_or_name, id_or_name, id_or_name)).fetchone()
    return SnapshotRow(**row) if row else None


def get(conn: sqlite3.Connection, snapshot_id: str) -> SnapshotRow | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM snapshots WHERE id = ?",
                       (snapshot_id,)).fetchone()
    return SnapshotRow(**row) if row else None


def list_of(conn: sqlite3.Connection, owner: str) -> list[SnapshotRow]:
    return [SnapshotRow(**row) for row in conn.execute(
        f"SELECT {_COLUMNS} FROM snapshots WHERE owner = ? ORDER BY created_at, id", (owner,))]


def count_of(conn: sqlite3.Connection, owner: str) -> int:
    return int(conn.execute("SELECT count(*) FROM snapshots WHERE owner = ?",
                            (owner,)).fetchone()[0])


def made(conn: sqlite3.Connection, snapshot_id: str, layer: str) -> None:
    conn.execute("UPDATE snapshots SET layer = ?, status = 'available' WHERE id = ?",
                 (layer, snapshot_id))


def set_status(conn: sqlite3.Connection, snapshot_id: str, status: str,
               error: tuple[str, str] | None = None) -> None:
    code, message = error or (None, None)
    conn.execute("UPDATE snapshots SET status = ?, error_code = ?, error_message = ? "
                 "WHERE id = ?", (status, code, message, snapshot_id))


def delete(conn: sqlite3.Connection, snapshot_id: str) -> None:
    conn.execute("DELETE FROM snapshots WHERE id = ?", (snapshot_id,))


def delete_of(conn: sqlite3.Connection, owner: str) -> None:
    conn.execute("DELETE FROM snapshots WHERE owner = ?", (owner,))


def add_layer(conn: sqlite3.Connection, layer: LayerRow) -> None:
    conn.execute(f"INSERT OR REPLACE INTO disk_layers ({_LAYER}) VALUES (?, ?, ?, ?, ?, ?)",
                 (layer.host, layer.name, layer.owner, layer.parent, layer.size_gb,
                  layer.created_at))


def layers_of(conn: sqlite3.Connection, owner: str) -> list[LayerRow]:
    return [LayerRow(**row) for row in conn.execute(
        f"SELECT {_LAYER} FROM disk_layers WHERE owner = ? ORDER BY created_at, name", (owner,))]


def remove_layer(conn: sqlite3.Connection, owner: str, name: str) -> None:
    conn.execute("DELETE FROM disk_layers WHERE owner = ? AND name = ?", (owner, name))


def remove_layers_of(conn: sqlite3.Connection, owner: str) -> None:
    conn.execute("DELETE FROM disk_layers WHERE owner = ?", (owner,))


def unused_layers(conn: sqlite3.Connection, owner: str, top: str | None) -> list[LayerRow]:
    """The owner's layers nothing needs: not its top, no snapshot's, no other layer's parent.
    Removing them never touches a layer another one is backed by."""
    return [LayerRow(**row) for row in conn.execute(
        f"SELECT {_LAYER} FROM disk_layers l WHERE owner = ? AND name IS NOT ? "
        "AND NOT EXISTS (SELECT 1 FROM snapshots s WHERE s.owner = l.owner AND s.layer = l.name) "
        "AND NOT EXISTS (SELECT 1 FROM disk_layers c WHERE c.owner = l.owner AND c.parent = l.name)",
        (owner, top))]



def root_top(conn: sqlite3.Connection, vm_id: str) -> str | None:
    """The layer a VM's root disk is now (None: the disk it was built with)."""
    row = conn.execute("SELECT layer FROM root_disk_tops WHERE vm_id = ?", (vm_id,)).fetchone()
    return str(row[0]) if row else None


def set_root_top(conn: sqlite3.Connection, vm_id: str, layer: str) -> None:
    conn.execute("INSERT INTO root_disk_tops (vm_id, layer) VALUES (?, ?) ON CONFLICT (vm_id) "
                 "DO UPDATE SET layer = excluded.layer", (vm_id, layer))
