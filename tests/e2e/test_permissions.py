"""What other local users can read of a running VM and of the database: nothing."""
from __future__ import annotations

import secrets
import stat
import time
from pathlib import Path

from src.app import App
from src.config import Config
from tests.e2e.conftest import register_tiny_image
from tests.e2e.http_client import HttpClient

GROUP_OR_OTHER_READ = stat.S_IRGRP | stat.S_IROTH | stat.S_IWGRP | stat.S_IWOTH


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_instance_files_and_the_database_are_private(live_client: HttpClient, e2e_app: App,
                                                     e2e_config: Config) -> None:
    register_tiny_image(live_client)
    vm = live_client.post("/v1/vms", {"name": f"e2e-{secrets.token_hex(4)}", "cpu": 1,
                                      "ram": 128, "image_name": "tiny-linux"}).body
    assert live_client.wait_task(vm["task"]["id"])["status"] == "succeeded"
    folder = e2e_config.instances_dir / vm["id"]
    console = folder / "console.log"
    deadline = time.monotonic() + 60
    while not console.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _mode(folder) & GROUP_OR_OTHER_READ == 0, oct(_mode(folder))
    files = sorted(folder.iterdir())
    assert {path.name for path in files} >= {"disk.qcow2", "seed.iso", "console.log",
                                             ".iaas-installation"}
    for path in files:
        assert _mode(path) & GROUP_OR_OTHER_READ == 0, f"{path.name}: {oct(_mode(path))}"
    db = e2e_config.db_path
    with e2e_app.db.read() as conn:  # the WAL exists while a connection is open
        conn.execute("SELECT count(*) FROM vms").fetchone()
        for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            assert path.exists() and _mode(path) == 0o600, f"{path.name}: {oct(_mode(path))}"
    assert live_client.get(f"/v1/vms/{vm['id']}").body["status"] == "running"  # QEMU reads them
    assert live_client.wait_task(live_client.delete(f"/v1/vms/{vm['id']}").body["id"])[
        "status"] == "succeeded"
