"""The hosts VMs run on: their records, one libvirt connection each, and whether each answers.

A single-host install is a cluster of one: the host `local`, registered from IAAS_LIBVIRT_URI.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from src import errors
from src.config import Config
from src.database import host_drains as drain_dao
from src.database import host_evacuations as host_evac_dao
from src.database import hosts as host_dao
from src.database import networks as network_dao
from src.database.db import Database
from src.database.hosts import LOCAL, HostRow
from src.hypervisor.driver import Hypervisor
from src.hypervisor.errors import HypervisorError
from src.services.hosts.uris import check_host_uri
from src.utils.clock import utc_now

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 5.0  # with libvirt's keepalive (about 20 s) a dead host is down within 30 s
POOL_PATH = "/var/lib/libvirt/images/{pool}"  # where a pool the API makes keeps its volumes


@dataclass
class HostState:
    """What the last look at a host found (kept in memory, refreshed every CHECK_INTERVAL_S)."""

    state: str = "down"  # up or down; a disabled host shows `disabled`
    reason: str | None = "not checked yet"
    libvirt_version: str | None = None
    last_seen: str | None = None


@dataclass(frozen=True)
class Host:
    row: HostRow
    hypervisor: Hypervisor

    @property
    def name(self) -> str:
        return self.row.name


class HostRegistry:
    def __init__(self, db: Database, config: Config,
                 open_libvirt: Callable[[str], Hypervisor] = Hypervisor) -> None:
        self._db = db
        self._config = config
        self._open = open_libvirt
        self._lock = threading.Lock()
        self._hypervisors: dict[str, Hypervisor] = {}
        self._states: dict[str, HostState] = {}
        self._listeners: list[Callable[[Host], None]] = []
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        # (generation, hosts) as last read: all() reads one counter row, not every host row
        self._listed: tuple[int, list[Host]] | None = None

    def ensure_local(self) -> None:
        """Register (or follow the settings of) the host `local`: IAAS_LIBVIRT_URI, shared."""
        config = self._config
        row = HostRow(name=LOCAL, uri=config.libvirt_uri, storage="shared",
                      storage_pool="iaas", network=config.network,
                      domain_type=config.domain_type,
                      cpu_allocation_ratio=config.cpu_allocation_ratio,
                      ram_allocation_ratio=config.ram_allocation_ratio, enabled=True,
                      created_at=utc_now())
        with self._db.write() as conn:
            current = host_dao.get(conn, LOCAL)
            if current is None:
                host_dao.insert(conn, row)
            else:
                host_dao.update(conn, LOCAL, {
                    "uri": row.uri, "network": row.network, "domain_type": row.domain_type,
                    "cpu_allocation_ratio": row.cpu_allocation_ratio,
                    "ram_allocation_ratio": row.ram_allocation_ratio})

    def on_open(self, listener: Callable[[Host], None]) -> None:
        """listener(host) runs for every host whose connection is opened (now and later)."""
        self._listeners.append(listener)

    def opened(self) -> list[str]:
        """The hosts with a connection, from memory (no database read)."""
        with self._lock:
            return sorted(self._hypervisors)

    def all(self) -> list[Host]:
        """Every host by name, as the database has them now (read again only when the hosts
        table changed since; the counter is read first, so a change that lands meanwhile is
        read again next time)."""
        with self._db.read() as conn:
            generation = host_dao.generation(conn)
            with self._lock:
                listed = self._listed
            if listed is not None and listed[0] == generation:
                return list(listed[1])
            rows = host_dao.list_all(conn)
        hosts = [Host(row, self._hypervisor(row)) for row in rows]
        with self._lock:
            self._listed = (generation, hosts)
        return list(hosts)

    def get(self, name: str) -> Host:
        """Raises: HostNotFound."""
        with self._db.read() as conn:
            row = host_dao.get(conn, name)
        if row is None:
            raise errors.HostNotFound(host=name)
        return Host(row, self._hypervisor(row))

    def state(self, name: str) -> HostState:
        with self._lock:
            return replace(self._states.setdefault(name, HostState()))

    def is_up(self, name: str) -> bool:
        """Whether the host answered its last check and its connection is still alive (a
        daemon that died shows at once, before the next check)."""
        return self.up_hypervisor(name) is not None

    def up_hypervisor(self, name: str) -> Hypervisor | None:
        """The connection of a host that is up (see is_up), else None; from memory, without
        the database read of get, for a VM list that asks each host of its page."""
        with self._lock:
            hypervisor = self._hypervisors.get(name)
            state = self._states.get(name)
        if state is None or state.state != "up" or hypervisor is None or not hypervisor.connected:
            return None
        return hypervisor

    def answering(self, names: list[str]) -> set[str]:
        """The hosts among names that are up (see is_up), looked up under one lock."""
        with self._lock:
            looks = [(name, self._hypervisors.get(name), self._states.get(name))
                     for name in names]
        return {name for name, hypervisor, state in looks
                if state is not None and state.state == "up" and hypervisor is not None
                and hypervisor.connected}

    def require_up(self, name: str) -> Host:
        """The host, if it answers. Raises: HostUnavailable."""
        host = self.get(name)
        if not self.is_up(name) and not self.check(host):
            raise errors.HostUnavailable(host=name)
        return host

    def check(self, host: Host) -> bool:
        """Ask the host for its libvirt version now and record whether it answered."""
        try:
            version = host.hypervisor.version()
        except HypervisorError as exc:
            self._record(host.name, HostState("down", str(exc)))
            return False
        self._record(host.name, HostState("up", None, version, utc_now()))
        return True

    def check_all(self) -> None:
        for host in self.all():
            self.check(host)

    def start(self) -> None:
        """Check every host now, then every CHECK_INTERVAL_S on a background thread."""
        self.check_all()
        self._monitor = threading.Thread(target=self._watch, name="hosts", daemon=True)
        self._monitor.start()

    def add(self, row: HostRow) -> Host:
        """Register a host after connecting to it (and making its pool when it uses one).

        Raises: HostUriNotAllowed, InsecureUri, NameConflict, HostUnreachable.
        """
        check_host_uri(row.uri, self._config)
        with self._db.read() as conn:
            if host_dao.get(conn, row.name) is not None:
                raise errors.NameConflict(kind="host", name=row.name)
        hypervisor = self._open(row.uri)
        try:
            version = hypervisor.version()
            if row.storage == "pool":
                hypervisor.pools.ensure_dir_pool(row.storage_pool,
                                                 POOL_PATH.format(pool=row.storage_pool))
        except HypervisorError as exc:
            hypervisor.close()
            # libvirt's text may quote a file or the host's reply: the log has it, the answer
            # says what failed in our words.
            log.warning("host %s at %s does not answer: %s", row.name, row.uri, exc)
            raise errors.HostUnreachable(uri=row.uri, reason=exc.summary) from None
        try:
            with self._db.write() as conn:
                host_dao.insert(conn, row)
        except sqlite3.IntegrityError:
            hypervisor.close()
            raise errors.NameConflict(kind="host", name=row.name) from None
        with self._lock:
            self._hypervisors[row.name] = hypervisor
            self._listed = None  # a list read meanwhile may hold another connection of it
        self._record(row.name, HostState("up", None, version, utc_now()))
        host = Host(row, hypervisor)
        self._opened(host)
        return host

    def update(self, name: str, changes: dict[str, object]) -> Host:
        """Raises: HostNotFound."""
        with self._db.write() as conn:
            if host_dao.get(conn, name) is None:
                raise errors.HostNotFound(host=name)
            host_dao.update(conn, name, changes)
        return self.get(name)

    def remove(self, name: str) -> None:
        """Forget a host that has no VMs. Raises: HostNotFound, HostNotEmpty."""
        with self._db.write() as conn:
            if host_dao.get(conn, name) is None:
                raise errors.HostNotFound(host=name)
            vms = host_dao.vm_counts(conn).get(name, 0)
            if vms:
                raise errors.HostNotEmpty(host=name, vm_count=vms)
            host_dao.delete(conn, name)
            drain_dao.remove(conn, name)
            host_evac_dao.remove(conn, name)
            network_dao.forget_host(conn, name)
        with self._lock:
            hypervisor = self._hypervisors.pop(name, None)
            self._states.pop(name, None)
            self._listed = None
        if hypervisor is not None:
            hypervisor.close()

    def close(self) -> None:
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(timeout=10)
        with self._lock:
            hypervisors = list(self._hypervisors.values())
            self._hypervisors.clear()
            self._listed = None
        for hypervisor in hypervisors:
            hypervisor.close()

    def _hypervisor(self, row: HostRow) -> Hypervisor:
        with self._lock:
            hypervisor = self._hypervisors.get(row.name)
            opened = hypervisor is None
            if hypervisor is None:
                hypervisor = self._hypervisors[row.name] = self._open(row.uri)
        if opened:
            self._opened(Host(row, hypervisor))
        return hypervisor

    def _opened(self, host: Host) -> None:
        for listener in self._listeners:
            listener(host)

    def _record(self, name: str, state: HostState) -> None:
        with self._lock:
            before = self._states.get(name)
            self._states[name] = state
        if before is not None and before.state != state.state:
            log.warning("host %s is %s%s", name, state.state,
                        f" ({state.reason})" if state.reason else "")

    def _watch(self) -> None:
        while not self._stop.wait(CHECK_INTERVAL_S):
            started = time.monotonic()
            for host in self.all():
                if self._stop.is_set():
                    return
                self.check(host)
            log.debug("host checks took %.3f s", time.monotonic() - started)
