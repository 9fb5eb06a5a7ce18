"""E2E fixtures: qemu:///system, a network of our own, a workspace qemu can read, live apps."""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import libvirt  # type: ignore[import-untyped]
import pytest

from scripts.harness.host import (
    SYSTEM_URI,
    TINY_IMAGE_NAME,
    HostUnavailable,
    IsolatedNetwork,
    make_workspace,
    open_system,
    purge_domains,
    purge_filters,
    purge_pools,
    purge_pools_under,
    remove_network,
    start_isolated_network,
)
from scripts.harness.remote_host import RemoteHost, start_remote_host
from src.app import App
from src.config import Config
from tests.conftest import AppFactory
from tests.e2e.http_client import HttpClient
from tests.support import Client, LiveServer

E2eAppFactory = Callable[[Config], App]


def _open_or_fail() -> libvirt.virConnect:
    try:
        return open_system()
    except HostUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def system_conn() -> Iterator[libvirt.virConnect]:
    """Our own connection to qemu:///system, per test: one test restarts libvirtd.

    The tier fails (never skips) when libvirtd is down.
    """
    conn = _open_or_fail()
    yield conn
    try:
        conn.close()
    except libvirt.libvirtError:
        pass  # the daemon was restarted under it


@pytest.fixture(scope="session")
def e2e_network() -> Iterator[IsolatedNetwork]:
    conn = _open_or_fail()
    try:
        net = start_isolated_network(conn, "iaas-e2e")
    finally:
        conn.close()
    try:
        yield net
    finally:
        conn = _open_or_fail()  # fresh: libvirtd may have been restarted meanwhile
        try:
            remove_network(conn, net)
        finally:
            conn.close()


@pytest.fixture(scope="session")
def remote_host() -> Iterator[RemoteHost]:
    """A second libvirt host on this machine (own netns, TLS only), stopped whatever happens.

    Tests may kill and restart its libvirtd but must leave it running.
    """
    try:
        host = start_remote_host("iaas-e2e-rh")
    except HostUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    with host:
        yield host


@pytest.fixture
def remote_conn(remote_host: RemoteHost) -> Iterator[libvirt.virConnect]:
    """A TLS connection to the second host, per test (a test may restart its libvirtd)."""
    conn = remote_host.open()
    yield conn
    try:
        conn.close()
    except libvirt.libvirtError:
        pass  # the daemon was restarted under it


@pytest.fixture
def workspace() -> Iterator[Path]:
    """/var/lib/libvirt/images/iaas-e2e-XXXX with images/tiny-linux.qcow2 and instances/."""
    try:
        root = make_workspace("iaas-e2e-")
    except HostUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield root
    finally:
        conn = _open_or_fail()  # fresh: libvirtd may have been restarted meanwhile
        try:  # pools that server and worker processes made in it (no app fixture saw them)
            purge_pools_under(conn, root)
        finally:
            conn.close()
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def e2e_config(tmp_path: Path, workspace: Path, e2e_network: IsolatedNetwork) -> Config:
    return Config(db_path=tmp_path / "iaas.db", libvirt_uri=SYSTEM_URI, domain_type="qemu",
                  images_dir=workspace / "images", instances_dir=workspace / "instances",
                  network=e2e_network.name, max_builds=2, allow_test_hosts=True,
                  # the second host's client PKI (pkipath) lies in a temp dir of its own
                  host_credentials_dir=Path(tempfile.gettempdir()))


def vm_ids_of(app: App) -> set[str]:
    """Every VM id the app's DB knows, including those whose row a delete already removed."""
    with app.db.read() as conn:
        rows = conn.execute("SELECT id FROM vms UNION SELECT vm_id FROM tasks").fetchall()
    return {row[0] for row in rows}


@pytest.fixture
def make_e2e_app(make_app: AppFactory, workspace: Path,
                 system_conn: libvirt.virConnect) -> Iterator[E2eAppFactory]:
    """Apps on qemu:///system; at teardown their builds stop and every domain of theirs goes."""
    apps: list[App] = []

    def factory(config: Config) -> App:
        app = make_app(config)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.close()  # no build may define a domain after the purge
        purge_domains(system_conn, vm_ids_of(app), app.installation_id)
        purge_filters(system_conn, vm_ids_of(app))
        purge_pools(system_conn, app.installation_id)


@pytest.fixture
def e2e_app(make_e2e_app: E2eAppFactory, e2e_config: Config) -> App:
    return make_e2e_app(e2e_config)


@contextmanager
def served(app: App) -> Iterator[HttpClient]:
    """The app behind the real threaded server on 127.0.0.1."""
    server = LiveServer(app)
    try:
        yield HttpClient(server.url)
    finally:
        server.stop()


@pytest.fixture
def live_client(e2e_app: App) -> Iterator[HttpClient]:
    with served(e2e_app) as client:
        yield client


def register_tiny_image(client: Client | HttpClient) -> dict[str, Any]:
    reply = client.post("/v1/images", {"name": TINY_IMAGE_NAME, "file": "tiny-linux.qcow2",
                                       "format": "qcow2"})
    assert reply.status == 201, reply.body
    image: dict[str, Any] = reply.body
    return image
