"""The GPUs a later window claims (reservations.claimed_after) are read on every GET /v1/gpus
(partition_rooms says what each partition offer has available) and every placement: that read
costs the same however many windows are over, as the ledger keeps them all."""
from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from src.database import reservations as reservation_dao
from src.database.db import Database
from src.utils.clock import utc_now, utc_plus

NOW = utc_now()


def _book(conn: sqlite3.Connection, index: int, gpu: str, start: str, end: str) -> None:
    reservation_dao.insert(conn, reservation_dao.ReservationRow(
        f"r{index}", "team-a", "f", "g.1", 1, 1, start, end, "ended", start),
        [reservation_dao.ClaimRow(f"r{index}", "local", gpu, 0, start, end)])


def _steps(conn: sqlite3.Connection, read: Callable[[sqlite3.Connection], object]) -> int:
    """SQLite's virtual-machine steps (in hundreds) the read takes."""
    counted = [0]

    def count() -> int:
        counted[0] += 1
        return 0
    conn.set_progress_handler(count, 100)
    try:
        read(conn)
    finally:
        conn.set_progress_handler(None, 100)
    return counted[0]


def test_the_gpus_a_later_window_claims_are_read_without_the_windows_that_are_over(
        tmp_path: Path) -> None:
    db = Database(tmp_path / "iaas.db")
    db.migrate()
    with db.write() as conn:
        _book(conn, 0, "0000:3b:00.0", utc_plus(NOW, 3600), utc_plus(NOW, 7200))

        def later(read: sqlite3.Connection) -> object:
            return reservation_dao.claimed_after(read, NOW, None)
        assert later(conn) == {("local", "0000:3b:00.0")}
        short = _steps(conn, later)
        for index in range(1, 3001):  # three thousand windows over, one hour each
            _book(conn, index, "0000:5e:00.0", utc_plus(NOW, -3600.0 * (index + 1)),
                  utc_plus(NOW, -3600.0 * index))
        assert later(conn) == {("local", "0000:3b:00.0")}
        assert _steps(conn, later) <= short + 2, "the read walks the windows that are over"
