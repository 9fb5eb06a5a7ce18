"""DAO for the images table."""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class ImageRow:
    id: str
    name: str
    file: str
    format: str
    size_bytes: int | None
    virtual_size_bytes: int | None
    created_at: str
    sha256: str | None = None  # of the file, hex; None until the file was first read


_COLUMNS = "id, name, file, format, size_bytes, virtual_size_bytes, created_at, sha256"


def insert(conn: sqlite3.Connection, image: ImageRow) -> None:
    """Raises: sqlite3.IntegrityError when the name is taken."""
    conn.execute(f"INSERT INTO images ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (image.id, image.name, image.file, image.format, image.size_bytes,
                  image.virtual_size_bytes, image.created_at, image.sha256))


def get(conn: sqlite3.Connection, id_or_name: str) -> ImageRow | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM images WHERE id = ? OR name = ?",
                       (id_or_name, id_or_name)).fetchone()
    return ImageRow(**row) if row else None


def list_all(conn: sqlite3.Connection) -> list[ImageRow]:
    return [ImageRow(**row) for row in
            conn.execute(f"SELECT {_COLUMNS} FROM images ORDER BY created_at, id")]


def count_users(conn: sqlite3.Connection, image_id: str) -> int:
    return int(conn.execute("SELECT count(*) FROM vms WHERE image_id = ?", (image_id,)).fetchone()[0])


def set_facts(conn: sqlite3.Connection, image_id: str, size: int, virtual_size: int,
              sha256: str) -> None:
    conn.execute("UPDATE images SET size_bytes = ?, virtual_size_bytes = ?, sha256 = ? "
                 "WHERE id = ?", (size, virtual_size, sha256, image_id))


def copies(conn: sqlite3.Connection, image_id: str) -> list[str]:
    """The hosts whose storage pool holds a checked copy of the image."""
    return [row[0] for row in conn.execute(
        "SELECT host FROM image_copies WHERE image_id = ? ORDER BY host", (image_id,))]


def copy_volume(conn: sqlite3.Connection, image_id: str, host: str) -> str | None:
    row = conn.execute("SELECT volume FROM image_copies WHERE image_id = ? AND host = ?",
                       (image_id, host)).fetchone()
    return str(row[0]) if row else None


def record_copy(conn: sqlite3.Connection, image_id: str, host: str, volume: str,
                now: str) -> None:
    conn.execute("INSERT OR REPLACE INTO image_copies (image_id, host, volume, copied_at) "
                 "VALUES (?, ?, ?, ?)", (image_id, host, volume, now))


def forget_copy(conn: sqlite3.Connection, image_id: str, host: str) -> None:
    conn.execute("DELETE FROM image_copies WHERE image_id = ? AND host = ?", (image_id, host))


def delete(conn: sqlite3.Connection, image_id: str) -> None:
    """Raises: sqlite3.IntegrityError while a VM still references the image."""
    conn.execute("DELETE FROM images WHERE id = ?", (image_id,))
