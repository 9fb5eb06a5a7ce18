"""Unit fixtures: a real, migrated SQLite database holding one base image."""
from __future__ import annotations

from pathlib import Path

import pytest

from src.database import images as image_dao
from src.database.db import Database

NOW = "2026-01-01T00:00:00.000000Z"
IMAGE_ID = "11111111-1111-1111-1111-111111111111"


@pytest.fixture
def db(tmp_path: Path) -> Database:
    """A migrated database with the image `base` (IMAGE_ID), for rows that need one."""
    database = Database(tmp_path / "iaas.db")
    database.migrate()
    with database.write() as conn:
        image_dao.insert(conn, image_dao.ImageRow(
            id=IMAGE_ID, name="base", file="base.qcow2", format="qcow2", size_bytes=None,
            virtual_size_bytes=None, created_at=NOW))
    return database
