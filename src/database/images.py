"""DAO for the images table and the copies of images in hosts' storage pools."""
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
    project: str = "default"  # whose image it is (public ones: vocabulary.PUBLIC_IMAGES_OWNER)
    visibility: str = "public"
    status: str = "active"  # vocabulary.IMAGE_STATUSES
    origin: str = "file"  # file (registered), upload or import: only the latter two own the file
    expected_sha256: str | None = None  # the checksum the creator gave, checked on arrival
    source_url: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    bytes_done: int | None = None  # while it uploads or imports
    bytes_total: int | None = None  # announced size (reserved against the images_gb quota)
    task_id: str | None = None  # the import's task


_COLUMNS = ("id, name, file, format, size_bytes, virtual_size_bytes, created_at, sha256, "
            "project, visibility, status, origin, expected_sha256, source_url, error_code, "
            "error_message, bytes_done, bytes_total, task_id")
_FIELDS = [name.strip() for name in _COLUMNS.split(",")]


def insert(conn: sqlite3.Connection, image: ImageRow) -> None:
    """Raises: sqlite3.IntegrityError when the name is taken (in its project, or publicly)."""
    conn.execute(f"INSERT INTO images ({_COLUMNS}) VALUES ({', '.join('?' * len(_FIELDS))})",
                 tuple(getattr(image, name) for name in _FIELDS))


def find(conn: sqlite3.Connection, id_or_name: str, project: str | None,
         own: str | None = None) -> ImageRow | None:
    """The image a caller means: by id among those project sees (None: every image); by name
    the image of its own project (own, default project) first, then the public one. An admin
    (project None) names its own project's private images and public ones, never another
    project's: a private name is unique only in its project."""
    own = project if own is None else own
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM images WHERE id = ? AND (? IS NULL OR visibility = 'public' "
        "OR project = ?)", (id_or_name, project, project)).fetchone()
    if row is None:
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM images WHERE name = ? AND (visibility = 'public' "
            "OR project = ?) ORDER BY project = ? DESC LIMIT 1",
            (id_or_name, own, own)).fetchone()
    return ImageRow(**row) if row else None


def list_page(conn: sqlite3.Connection, project: str | None, after: ImageRow | None,
              limit: int) -> list[ImageRow]:
    """Images project sees (None: every image) by (created_at, id), after the marker image."""
    where, params = "(? IS NULL OR visibility = 'public' OR project = ?)", [project, project]
    if after is not None:
        where += " AND (created_at, id) > (?, ?)"
        params += [after.created_at, after.id]
    return [ImageRow(**row) for row in conn.execute(
        f"SELECT {_COLUMNS} FROM images WHERE {where} ORDER BY created_at, id LIMIT ?",
        (*params, limit))]


def count(conn: sqlite3.Connection, project: str) -> int:
    """The project's images, whatever their status (public ones are no project's)."""
    return int(conn.execute("SELECT count(*) FROM images WHERE project = ?",
                            (project,)).fetchone()[0])


def by_id(conn: sqlite3.Connection, image_id: str) -> ImageRow | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM images WHERE id = ?", (image_id,)).fetchone()
    return ImageRow(**row) if row else None


def in_status(conn: sqlite3.Connection, statuses: tuple[str, ...]) -> list[ImageRow]:
    marks = ", ".join("?" * len(statuses))
    return [ImageRow(**row) for row in conn.execute(
        f"SELECT {_COLUMNS} FROM images WHERE status IN ({marks})", statuses)]


def count_users(conn: sqlite3.Connection, image_id: str) -> int:
    return int(conn.execute("SELECT count(*) FROM vms WHERE image_id = ?", (image_id,)).fetchone()[0])


def set_file(conn: sqlite3.Connection, image_id: str, file: str, fmt: str,
             facts: tuple[int, int, str] | None) -> None:
    """Point a registered image at another file (its size, virtual size and SHA-256, or None
    when the file is not there yet)."""
    size, virtual_size, sha256 = facts or (None, None, None)
    conn.execute("UPDATE images SET file = ?, format = ?, size_bytes = ?, virtual_size_bytes = ?, "
                 "sha256 = ? WHERE id = ? AND origin = 'file'",
                 (file, fmt, size, virtual_size, sha256, image_id))


def set_facts(conn: sqlite3.Connection, image_id: str, size: int, virtual_size: int,
              sha256: str) -> None:
    conn.execute("UPDATE images SET size_bytes = ?, virtual_size_bytes = ?, sha256 = ? "
                 "WHERE id = ?", (size, virtual_size, sha256, image_id))


def set_status(conn: sqlite3.Connection, image_id: str, status: str, only_from: tuple[str, ...],
               error: tuple[str, str] | None = None, bytes_total: int | None = None) -> bool:
    """Move the image to status (clearing or setting its error) if it is in one of only_from;
    False when it is not (deleted, or moved on meanwhile)."""
    code, message = error or (None, None)
    marks = ", ".join("?" * len(only_from))
    cursor = conn.execute(
        f"UPDATE images SET status = ?, error_code = ?, error_message = ?, bytes_done = NULL, "
        f"bytes_total = ? WHERE id = ? AND status IN ({marks})",
        (status, code, message, bytes_total, image_id, *only_from))
    return cursor.rowcount == 1


def set_progress(conn: sqlite3.Connection, image_id: str, status: str, done: int,
                 total: int | None) -> bool:
    """Record bytes received; False when the image is no longer in status (deleted, failed)."""
    cursor = conn.execute("UPDATE images SET bytes_done = ?, bytes_total = ? "
                          "WHERE id = ? AND status = ?", (done, total, image_id, status))
    return cursor.rowcount == 1


def activate(conn: sqlite3.Connection, image_id: str, status: str, facts: tuple[int, int, str]) -> bool:
    """status -> active with the file's size, virtual size and SHA-256; False if it moved on."""
    cursor = conn.execute(
        "UPDATE images SET status = 'active', size_bytes = ?, virtual_size_bytes = ?, "
        "sha256 = ?, error_code = NULL, error_message = NULL, bytes_done = NULL, "
        "bytes_total = NULL WHERE id = ? AND status = ?", (*facts, image_id, status))
    return cursor.rowcount == 1


def stored_bytes(conn: sqlite3.Connection, project: str, except_id: str | None = None) -> int:
    """Bytes the project's images hold: stored files, plus for uploads and imports under way
    what they announced (reserved) or, past that or when they announced nothing (chunked, no
    Content-Length), what has arrived so far."""
    row = conn.execute(
        "SELECT coalesce(sum(CASE WHEN status = 'active' THEN coalesce(size_bytes, 0) "
        "WHEN status IN ('pending', 'importing') THEN max(coalesce(bytes_total, 0), "
        "coalesce(bytes_done, 0)) ELSE 0 END), 0) "
        "FROM images WHERE project = ? AND id IS NOT ?", (project, except_id)).fetchone()
    return int(row[0])


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
