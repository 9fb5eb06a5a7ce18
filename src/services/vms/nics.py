"""A VM's NICs: the networks a create asks for, checked against what each host offers, and
the NIC rows written with the placement."""
from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Sequence

from src import errors
from src.database import vm_nics as nic_dao
from src.services.hosts.registry import Host
from src.services.networks.catalog import active_on
from src.services.rules.placement import HostCapacity
from src.services.vms.build_record import BuildRecord, Nic

MAX_NICS = 8


def new_mac() -> str:
    # 52:54:00 is QEMU's locally administered prefix, as libvirt itself uses.
    return "52:54:00:" + ":".join(f"{byte:02x}" for byte in secrets.token_bytes(3))


def nics_of(networks: Sequence[str], first_mac: str) -> tuple[Nic, ...]:
    """One NIC per network asked for, in order, the first with the VM's own MAC; () when it
    asked for none (it joins its host's network)."""
    return tuple(Nic(network, first_mac if index == 0 else new_mac())
                 for index, network in enumerate(networks))


def lacking(hosts: list[Host], capacities: dict[str, HostCapacity], networks: Sequence[str],
            pinned: str | None) -> frozenset[str]:
    """The hosts that do not offer every network asked for, active (asked of libvirt, one call
    a host, before the create's transaction); none when it asked for none.

    Raises: NetworkNotFoundInRequest (no host that answers has one of them active),
    NetworkUnavailable (no enabled host the VM may go to has them all).
    """
    if not networks:
        return frozenset()
    answering = [host for host in hosts if host.name in capacities]
    active = active_on(answering)
    offered = set().union(*active.values()) if active else set()
    for network in networks:
        if network not in offered:
            raise errors.NetworkNotFoundInRequest(network=network)
    wanted = set(networks)
    missing = frozenset(host.name for host in hosts if not wanted <= active.get(host.name, set()))
    if not any(host.row.enabled and host.name in capacities and host.name not in missing
               and pinned in (None, host.name) for host in hosts):
        where = f"host {pinned!r} lacks " + ", ".join(sorted(
            wanted - active.get(pinned, set()))) if pinned else "none has them all, active"
        raise errors.NetworkUnavailable(networks=", ".join(networks), reason=where)
    return missing


def put(conn: sqlite3.Connection, record: BuildRecord) -> None:
    """The NIC rows of the record's VM, as its domain gets them."""
    nic_dao.put(conn, record.vm_id, [(nic.network, nic.mac) for nic in record.interfaces])


def rows_of(record: BuildRecord) -> list[nic_dao.NicRow]:
    """The NIC rows put writes, for an answer given before they are read back."""
    return [nic_dao.NicRow(record.vm_id, index, nic.network, nic.mac)
            for index, nic in enumerate(record.interfaces)]
