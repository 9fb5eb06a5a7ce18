"""Fixtures shared by every tier: fresh config, database and libvirt test-driver host per test."""
from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from src.app import App, create_app
from src.config import Config
from tests.support import Client, LiveServer, ProdServer, host_xml

AppFactory = Callable[..., App]


@pytest.fixture
def test_host(tmp_path: Path) -> Path:
    """A libvirt test-driver host of our own: every open gets a fresh, empty hypervisor."""
    path = tmp_path / "host.xml"
    path.write_text(host_xml("iaas-test"))
    return path


@pytest.fixture
def config(tmp_path: Path, test_host: Path) -> Config:
    images = tmp_path / "images"
    images.mkdir()
    return Config(db_path=tmp_path / "iaas.db", libvirt_uri=f"test://{test_host}",
                  domain_type="test", images_dir=images, instances_dir=tmp_path / "instances",
                  network="iaas-test", max_builds=4)


@pytest.fixture
def make_app() -> Iterator[AppFactory]:
    apps: list[App] = []

    def factory(config: Config, **deps: Any) -> App:
        app = create_app(config, **deps)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.close()


@pytest.fixture
def app(make_app: AppFactory, config: Config) -> App:
    return make_app(config)


@pytest.fixture
def client(app: App) -> Client:
    return Client(app)


def make_qcow2(path: Path, size: str = "64M") -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path


@pytest.fixture
def base_image(client: Client, config: Config) -> dict[str, Any]:
    make_qcow2(config.images_dir / "base.qcow2")
    reply = client.post("/v1/images", {"name": "base", "file": "base.qcow2", "format": "qcow2"})
    assert reply.status == 201, reply.body
    body: dict[str, Any] = reply.body
    return body


@pytest.fixture(params=["wsgiref", "waitress"])
def server(request: pytest.FixtureRequest, app: App) -> Iterator[LiveServer | ProdServer]:
    """The app behind `make serve`'s server, then behind `make serve-prod`'s."""
    live = LiveServer(app) if request.param == "wsgiref" else ProdServer(app)
    yield live
    live.stop()
