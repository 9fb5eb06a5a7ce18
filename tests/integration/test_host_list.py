"""The host list each process keeps in memory: read again whenever the hosts table changed
(migration 018's counter), whoever changed it; and a sweep re-reads its host's capacity, so a
create after it asks libvirt nothing."""
from __future__ import annotations

from pathlib import Path

from scripts.harness.servers import host_xml
from src.app import App
from src.config import Config
from src.database import hosts as host_dao
from src.database.db import Database
from src.services.hosts.capacity import CAPACITY_CALLS, Capacity
from src.services.hosts.gpus import GpuInventory
from tests.conftest import AppFactory
from tests.support import Client


def _add(client: Client, root: Path, name: str) -> None:
    path = root / f"{name}.xml"
    path.write_text(host_xml("iaas-test"))
    assert client.post("/v1/hosts", {"name": name, "uri": f"test://{path}"}).status == 201


def _listed(app: App) -> dict[str, bool]:
    return {host.name: host.row.enabled for host in app.hosts.all()}


def test_the_list_follows_every_change_to_the_hosts_table(make_app: AppFactory, config: Config,
                                                          tmp_path: Path) -> None:
    app = make_app(config)
    client = Client(app)
    assert _listed(app) == {"local": True}
    _add(client, tmp_path, "other")
    assert _listed(app) == {"local": True, "other": True}
    assert client.request("PATCH", "/v1/hosts/other", {"enabled": False}).status == 200
    assert _listed(app) == {"local": True, "other": False}
    # Another process (its own connection, its own Database) changes a row.
    with Database(app.db.path).write() as conn:
        host_dao.update(conn, "other", {"enabled": True})
    assert _listed(app) == {"local": True, "other": True}
    assert client.delete("/v1/hosts/other").status == 204
    assert _listed(app) == {"local": True}


def test_an_unchanged_list_is_not_read_again(make_app: AppFactory, config: Config) -> None:
    app = make_app(config)
    first, second = app.hosts.all(), app.hosts.all()
    assert first == second and first[0] is second[0]
    with app.db.read() as conn:
        before = host_dao.generation(conn)
    with app.db.write() as conn:
        host_dao.update(conn, "local", {"cpu_allocation_ratio": 2.0})
    with app.db.read() as conn:
        assert host_dao.generation(conn) == before + 1
    assert app.hosts.all()[0].row.cpu_allocation_ratio == 2.0


def test_a_sweep_rereads_capacity_so_a_create_asks_libvirt_nothing(make_app: AppFactory,
                                                                   config: Config) -> None:
    app = make_app(config)
    capacity = Capacity(app.db, app.hosts, "spread", lambda: 100)
    gpus = GpuInventory(app.db, app.hosts, on_refresh=capacity.reread)
    host = app.hosts.get("local")
    first = capacity.known([host])
    before = app.hypervisor.calls
    capacity.reread(host)  # what each sweep's GPU refresh does, on the sweep's thread
    assert app.hypervisor.calls - before == CAPACITY_CALLS  # the cells are not read again
    before = app.hypervisor.calls
    assert capacity.known([host]) == first and app.hypervisor.calls == before
    gpus.refresh_host(host)
    before = app.hypervisor.calls
    assert capacity.known([host]) == first and app.hypervisor.calls == before
