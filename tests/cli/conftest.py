"""The `iaas` command run for real, as a subprocess, against a live server on 127.0.0.1."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from src.app import App
from tests.conftest import make_qcow2
from tests.support import LiveServer, fetch

REPO = Path(__file__).resolve().parents[2]
# The console script set-up installs; PYTHONPATH makes it run this checkout's code, whichever
# checkout the shared venv was installed from.
IAAS = Path(sys.executable).parent / "iaas"


def cli_env(url: str, token: str | None, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("IAAS_") and key not in ("COLUMNS", "LINES")}
    env.update({"PYTHONPATH": str(REPO), "IAAS_URL": url, **extra})
    if token:
        env["IAAS_TOKEN"] = token
    return env


@dataclass
class Iaas:
    """Runs `iaas` against one live server, as one token, from a folder of its own."""

    url: str
    token: str | None
    cwd: Path

    def __call__(self, *args: str, timeout: float = 60, **env: str
                 ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(IAAS), *args], cwd=self.cwd, env=cli_env(
            self.url, self.token, **env), capture_output=True, text=True, timeout=timeout,
            check=False)

    def json(self, *args: str) -> Any:
        done = self("-o", "json", *args)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """The same call made directly, to compare with what the CLI prints."""
        return fetch(self.url, method, path, body,
                     {"Authorization": f"Bearer {self.token}"} if self.token else {})

    def as_token(self, token: str | None) -> Iaas:
        return Iaas(self.url, token, self.cwd)


@pytest.fixture
def live(app: App) -> Iterator[LiveServer]:
    server = LiveServer(app)
    yield server
    server.stop()


@pytest.fixture
def iaas(live: LiveServer, app: App, tmp_path: Path) -> Iaas:
    """The CLI as an admin, with the image `base` and the flavor `small`."""
    make_qcow2(app.config.images_dir / "base.qcow2")
    work = tmp_path / "cwd"
    work.mkdir()
    cli = Iaas(live.url, live.token, work)
    assert cli.api("POST", "/v1/images", {"name": "base", "file": "base.qcow2",
                                          "format": "qcow2"}).status == 201
    assert cli.api("POST", "/v1/flavors", {"name": "small", "cpu": 1, "ram": 128,
                                           "disk_gb": 1}).status == 201
    return cli
