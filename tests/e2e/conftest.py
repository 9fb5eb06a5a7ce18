"""E2E fixtures: qemu:///system, a network of our own, a workspace qemu can read, live apps."""
from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

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
from scripts.harness.pools import remove_pool
from scripts.harness.remote_host import RemoteHost, host_entry, start_remote_host
from src.app import App
from src.config import Config
from tests.conftest import AppFactory
from tests.e2e.http_client import HttpClient
from tests.support import Client, LiveServer

E2eAppFactory = Callable[[Config], App]
REMOTE_POOL = "iaas-e2e"  # the second host's storage pool, removed after each test that used it


def eventually(check: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll check until it holds. Raises: AssertionError naming what did not happen in time."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"{what} not within {seconds} s"
        time.sleep(0.5)


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


Started = TypeVar("Started", bound=AbstractContextManager[Any])


def running(start: Callable[[], Started]) -> Iterator[Started]:
    """What start() made, for a fixture to yield from, stopped whatever happens; a start that
    fails fails the test (this tier never skips)."""
    try:
        made = start()
    except HostUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    with made:
        yield made


@pytest.fixture(scope="session")
def remote_host() -> Iterator[RemoteHost]:
    """A second libvirt host on this machine (own netns, TLS only), stopped whatever happens.

    Tests may kill and restart its libvirtd but must leave it running.
    """
    yield from running(lambda: start_remote_host("iaas-e2e-rh"))


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


class AppMaker:
    """Makes apps and remembers them, for the teardowns that remove what each one made."""

    def __init__(self, make_app: AppFactory) -> None:
        self._make_app = make_app
        self.apps: list[App] = []

    def __call__(self, config: Config) -> App:
        app = self._make_app(config)
        self.apps.append(app)
        return app


@pytest.fixture
def make_e2e_app(make_app: AppFactory, workspace: Path,
                 system_conn: libvirt.virConnect) -> Iterator[AppMaker]:
    """Apps on qemu:///system; at teardown their builds stop and every domain of theirs goes."""
    maker = AppMaker(make_app)
    yield maker
    for app in maker.apps:
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


def clean_remote(remote: RemoteHost, installations: list[str]) -> None:
    """Remove the installations' domains and REMOTE_POOL from the second host, over a fresh
    connection (its libvirtd may have been restarted meanwhile)."""
    with closing(remote.open()) as fresh:
        for installation in installations:
            purge_domains(fresh, [], installation)
        remove_pool(fresh, REMOTE_POOL)


@pytest.fixture
def remote_network(remote_host: RemoteHost) -> Iterator[IsolatedNetwork]:
    """An isolated network on the second host, for its guests."""
    with closing(remote_host.open()) as conn:
        net = start_isolated_network(conn, "iaas-e2e-rn")
    yield net
    with closing(remote_host.open()) as conn:  # fresh: its libvirtd may have been restarted
        remove_network(conn, net)


def add_remote(client: HttpClient, remote: RemoteHost, net: IsolatedNetwork) -> dict[str, Any]:
    """Add the second host as `remote` (storage in REMOTE_POOL, guests on net)."""
    added = client.post("/v1/hosts", host_entry(remote, REMOTE_POOL, net))
    assert added.status == 201, added.body
    return dict(added.body)


@dataclass(frozen=True)
class TwoHosts:
    """qemu:///system as `local` beside the second libvirtd as `remote`, and connections to
    both; what its apps make on `remote` is removed at teardown."""

    make_app: AppMaker
    config: Config
    remote: RemoteHost
    network: IsolatedNetwork  # the remote's
    system_conn: libvirt.virConnect
    remote_conn: libvirt.virConnect

    @contextmanager
    def serve(self, app: App | None = None) -> Iterator[HttpClient]:
        """app (default: a new one on config) served, with the tiny image and `remote`."""
        with served(app or self.make_app(self.config)) as client:
            register_tiny_image(client)
            add_remote(client, self.remote, self.network)
            yield client


@pytest.fixture
def two_hosts(make_e2e_app: AppMaker, e2e_config: Config, remote_host: RemoteHost,
              remote_network: IsolatedNetwork, system_conn: libvirt.virConnect,
              remote_conn: libvirt.virConnect) -> Iterator[TwoHosts]:
    yield TwoHosts(make_e2e_app, e2e_config, remote_host, remote_network, system_conn,
                   remote_conn)
    clean_remote(remote_host, [app.installation_id for app in make_e2e_app.apps])
