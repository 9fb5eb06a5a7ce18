"""NetworkService: list every host's libvirt networks, define and start one on a host, and
remove one the platform defined that no VM uses. Read live from libvirt; the networks table
only says which of them the platform made (those alone may be removed through the API)."""
from __future__ import annotations

import ipaddress
import logging
import sqlite3
from contextlib import ExitStack
from dataclasses import dataclass
from typing import NoReturn

from src import errors
from src.database import networks as network_dao
from src.database import vm_nics as nic_dao
from src.database.db import Database
from src.hypervisor.errors import HypervisorError, HypervisorUnavailable
from src.hypervisor.networks import NetworkFacts, NetworkSpec, network_xml
from src.services.hosts.registry import Host, HostRegistry
from src.services.tasks.steps import best_effort
from src.utils.clock import utc_now

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NetworkCreate:
    """A validated create body."""

    name: str
    host: str
    mode: str  # isolated, nat or bridge
    subnet: str | None = None
    bridge: str | None = None


@dataclass(frozen=True)
class NetworkView:
    host: str
    facts: NetworkFacts
    managed: bool  # defined through the API: it may be removed through it


class NetworkService:
    def __init__(self, db: Database, hosts: HostRegistry) -> None:
        self._db = db
        self._hosts = hosts

    def every(self) -> list[NetworkView]:
        """Every network of every host, by host then name; a host that does not answer shows
        the networks the platform defined there, as inactive."""
        with self._db.read() as conn:
            rows = network_dao.list_all(conn)
        managed = {(row.host, row.name): row for row in rows}
        views = []
        for host in self._hosts.all():
            live = self._live(host)
            names = {facts.name for facts in live}
            views += [NetworkView(host.name, facts, (host.name, facts.name) in managed)
                      for facts in live]
            views += [NetworkView(host.name, NetworkFacts(row.name, row.mode, row.subnet,
                                                          row.bridge, active=False), True)
                      for row in rows if row.host == host.name and row.name not in names]
        return sorted(views, key=lambda view: (view.host, view.facts.name))

    def _live(self, host: Host) -> list[NetworkFacts]:
        if not self._hosts.is_up(host.name):
            return []
        try:
            return host.hypervisor.networks.list_all()
        except HypervisorError as exc:
            log.warning("networks of host %s unreadable: %s", host.name, exc)
            return []

    def create(self, request: NetworkCreate) -> NetworkView:
        """Define and start the network on its host (autostarted); nothing is left when a step
        fails.

        Raises: HostNotFoundInRequest, HostUnavailable, NetworkInvalid, NameConflict,
        NetworkSubnetConflict, NetworkDefineFailed.
        """
        try:
            spec = NetworkSpec(request.name, request.mode, request.subnet, request.bridge)
            xml = network_xml(spec)
        except ValueError as exc:
            raise errors.NetworkInvalid(reason=f"{exc}.") from None
        try:
            host = self._hosts.require_up(request.host)
        except errors.HostNotFound:
            raise errors.HostNotFoundInRequest(host=request.host) from None
        self._refuse_clashes(host, spec)
        row = network_dao.NetworkRow(host.name, spec.name, spec.mode, spec.subnet, spec.bridge,
                                     utc_now())
        with ExitStack() as undo:
            try:
                with self._db.write() as conn:
                    network_dao.insert(conn, row)
            except sqlite3.IntegrityError:
                raise errors.NameConflict(kind="network", name=spec.name) from None
            undo.callback(best_effort, "forget network", self._forget, row)
            networks = host.hypervisor.networks
            try:
                networks.define(xml)
                undo.callback(best_effort, "undefine network", networks.remove, spec.name)
                networks.start(spec.name)
            except HypervisorUnavailable:
                raise
            except HypervisorError as exc:
                raise errors.NetworkDefineFailed(host=host.name, network=spec.name,
                                                 reason=str(exc)) from None
            undo.pop_all()
        log.info("network %s defined on host %s (%s)", spec.name, host.name, spec.mode)
        return NetworkView(host.name, NetworkFacts(spec.name, spec.mode, spec.subnet,
                                                   spec.bridge, active=True), True)

    @staticmethod
    def _refuse_clashes(host: Host, spec: NetworkSpec) -> None:
        """Raises: NameConflict, NetworkSubnetConflict."""
        subnet = ipaddress.IPv4Network(spec.subnet) if spec.subnet else None
        for other in host.hypervisor.networks.list_all():
            if other.name == spec.name:
                raise errors.NameConflict(kind="network", name=spec.name)
            if subnet and other.subnet and subnet.overlaps(ipaddress.IPv4Network(other.subnet)):
                raise errors.NetworkSubnetConflict(subnet=spec.subnet, other=other.name,
                                                   other_subnet=other.subnet, host=host.name)

    def _forget(self, row: network_dao.NetworkRow) -> None:
        with self._db.write() as conn:
            network_dao.delete(conn, row.host, row.name)

    def delete(self, host_name: str, name: str) -> None:
        """Stop and undefine a network the platform defined that no VM uses.

        Raises: HostNotFound, HostUnavailable, NetworkNotFound, NetworkNotManaged, NetworkInUse.
        """
        host = self._hosts.require_up(host_name)
        with self._db.write() as conn:
            row = network_dao.get(conn, host.name, name)
            if row is None:
                self._refuse_unknown(host, name)
            users = nic_dao.users(conn, host.name, name)
            if users:
                raise errors.NetworkInUse(network=name, host=host.name, vms=users,
                                          reason=f"{len(users)} VM(s) have a NIC on it")
            if host.row.network == name:
                raise errors.NetworkInUse(network=name, host=host.name, reason=(
                    "VMs that name no network join it on this host (the host's network)"))
            network_dao.delete(conn, host.name, name)
        try:
            host.hypervisor.networks.remove(name)
        except HypervisorError:
            with self._db.write() as conn:  # still there: still ours
                network_dao.insert(conn, row)
            raise
        log.info("network %s removed from host %s", name, host.name)

    @staticmethod
    def _refuse_unknown(host: Host, name: str) -> NoReturn:
        """Raises: NetworkNotFound, or NetworkNotManaged when libvirt has it (the one libvirt
        question asked inside the write: the answer is an error either way)."""
        if host.hypervisor.networks.state(name) == "missing":
            raise errors.NetworkNotFound(host=host.name, network=name)
        raise errors.NetworkNotManaged(host=host.name, network=name)


def active_on(hosts: list[Host]) -> dict[str, set[str]]:
    """The active networks of each host, by host name (a host that does not answer has none)."""
    found: dict[str, set[str]] = {}
    for host in hosts:
        try:
            found[host.name] = host.hypervisor.networks.active_names()
        except HypervisorError:
            found[host.name] = set()
    return found
