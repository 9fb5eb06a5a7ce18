"""GET /healthz: ok when DB and libvirt answer, 503 naming the part that does not."""
from dataclasses import replace
from pathlib import Path

from src.config import Config
from tests.conftest import AppFactory
from tests.support import Client


def test_healthy(client: Client) -> None:
    reply = client.get("/healthz")
    assert reply.status == 200
    assert reply.body == {"status": "ok", "db": "ok", "libvirt": "ok"}


def test_libvirt_unreachable_is_503(make_app: AppFactory, config: Config, tmp_path: Path) -> None:
    app = make_app(replace(config, libvirt_uri=f"test://{tmp_path}/no-such-host.xml"))
    reply = Client(app).get("/healthz")
    assert reply.status == 503
    assert reply.body["db"] == "ok"
    assert reply.body["libvirt"].startswith("error")


def test_database_unreachable_is_503(client: Client, config: Config) -> None:
    config.db_path.unlink()
    config.db_path.mkdir()  # a directory where the database file was: sqlite cannot open it
    reply = client.get("/healthz")
    assert reply.status == 503
    assert reply.body["libvirt"] == "ok"
    assert reply.body["db"].startswith("error")
