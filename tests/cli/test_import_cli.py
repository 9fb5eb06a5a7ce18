"""`iaas image import` follows the import task to the active image, from a server of the
test's own on 127.0.0.1 (IAAS_IMPORT_ALLOW_PRIVATE)."""
from __future__ import annotations

import hashlib
from pathlib import Path

from src.config import Config
from tests.cli.conftest import Iaas
from tests.conftest import AppFactory
from tests.origin import Origin, reaching_origin
from tests.support import LiveServer


def test_import_waits_for_the_image_and_a_failed_one_says_why(
        make_app: AppFactory, config: Config, origin: Origin, tmp_path: Path) -> None:
    server = LiveServer(make_app(reaching_origin(config)))
    try:
        iaas = Iaas(server.url, server.token, tmp_path)
        shown = iaas.json("image", "import", "far", f"{origin.url}/image.qcow2", "--wait")
        assert shown["status"] == "active"
        assert shown["sha256"] == hashlib.sha256(origin.data).hexdigest()
        failed = iaas("image", "import", "gone", f"{origin.url}/missing", "--wait")
        assert failed.returncode == 1 and "download_failed" in failed.stderr, failed.stderr
        started = iaas.json("image", "import", "later", f"{origin.url}/image.qcow2",
                            "--no-wait")
        assert started["status"] == "importing" and started["task_id"]
    finally:
        server.stop()
