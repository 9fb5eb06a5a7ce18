"""A moving VM's NICs: which networks its target must offer, how each NIC is renamed there,
and the NIC rows moved with the VM.

A NIC on its host's own network (the one VMs join when they name none) joins the target's own
network; a NIC on any other network keeps that network's name, which the target must have
active."""
from __future__ import annotations

import sqlite3

from src.database import vm_nics as nic_dao
from src.database.db import Database
from src.services.hosts.registry import Host
from src.services.networks.catalog import active_on


def named(db: Database, vm_id: str, source: Host) -> set[str]:
    """The networks of the VM's NICs that the target must offer by name."""
    with db.read() as conn:
        nics = nic_dao.for_vms(conn, [vm_id]).get(vm_id, [])
    return {nic.network for nic in nics if nic.network != source.row.network}


def lacking(hosts: list[Host], networks: set[str]) -> dict[str, str]:
    """Why each host that does not offer every network (active) cannot take the VM, by name;
    no libvirt call when there are none to offer."""
    if not networks:
        return {}
    active = active_on(hosts)
    return {host.name: "lacks the network(s) " + ", ".join(sorted(networks - active[host.name]))
            for host in hosts if not networks <= active[host.name]}


def renames(source: Host, target: Host, networks: set[str]) -> dict[str, str]:
    """Each source network's name on the target (Retarget.networks): named networks keep
    theirs, the source's own becomes the target's own."""
    return {name: name for name in networks} | {source.row.network: target.row.network}


def commit(conn: sqlite3.Connection, vm_id: str, source: Host, target: Host) -> None:
    """The VM's NICs on its source's own network are on the target's own now."""
    conn.execute("UPDATE vm_nics SET network = ? WHERE vm_id = ? AND network = ?",
                 (target.row.network, vm_id, source.row.network))
