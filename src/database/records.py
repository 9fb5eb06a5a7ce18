"""A table of dataclass records keyed by their task: list fields are stored as JSON, flags as
0/1 (the move records: migrations, evacuations)."""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

Record = TypeVar("Record")


@dataclass(frozen=True)
class RecordTable(Generic[Record]):
    table: str
    columns: str  # comma-separated, in the record's field names
    make: Callable[..., Record]
    json_fields: tuple[str, ...]
    flags: tuple[str, ...]

    @property
    def names(self) -> list[str]:
        return [name.strip() for name in self.columns.split(",")]

    def decode(self, row: sqlite3.Row) -> Record:
        values: dict[str, Any] = dict(row)
        for name in self.json_fields:
            values[name] = json.loads(values[name])
        for name in self.flags:
            values[name] = bool(values[name])
        return self.make(**values)

    def insert(self, conn: sqlite3.Connection, record: Record) -> None:
        """Raises: sqlite3.IntegrityError (e.g. the VM has one under way already)."""
        values = [getattr(record, name) for name in self.names]
        conn.execute(f"INSERT INTO {self.table} ({self.columns}) VALUES "
                     f"({', '.join('?' * len(values))})",
                     [json.dumps(value) if isinstance(value, list) else value
                      for value in values])

    def select(self, conn: sqlite3.Connection, where: str,
               params: tuple[Any, ...] = ()) -> list[Record]:
        """The records matching where (an SQL condition, and an ORDER BY if wanted)."""
        return [self.decode(row) for row in conn.execute(
            f"SELECT {self.columns} FROM {self.table} WHERE {where}", params)]

    def get(self, conn: sqlite3.Connection, task_id: str) -> Record | None:
        found = self.select(conn, "task_id = ?", (task_id,))
        return found[0] if found else None
