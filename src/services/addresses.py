"""Learn VMs' IP addresses from the host and record them, so listing VMs never asks libvirt for them.

Sources, in order: the libvirt network's DHCP leases (one call for every VM), the guest agent,
then the host's ARP table (one call per VM still without an address).
"""
from __future__ import annotations

import logging

from src.database import vms as vm_dao
from src.database.db import Database
from src.hypervisor.domains import Addresses
from src.hypervisor.driver import Hypervisor
from src.hypervisor.errors import DomainNotFound
from src.utils.clock import utc_now

log = logging.getLogger(__name__)

PER_VM_SOURCES = ("agent", "arp")


def _entries(found: Addresses, mac: str, source: str) -> list[dict[str, str]]:
    return [{"address": address, "family": family, "source": source}
            for address, family in found.get(mac.lower(), [])]


class AddressBook:
    def __init__(self, db: Database, hypervisor: Hypervisor, network: str) -> None:
        self._db = db
        self._hypervisor = hypervisor
        self._network = network

    def learn(self, vms: list[tuple[str, str]]) -> int:
        """Look up and record the addresses of running VMs given as (vm_id, mac); return how many
        VMs got a changed list."""
        if not vms:
            return 0
        leases = self._hypervisor.host.dhcp_leases(self._network)
        changed = 0
        for vm_id, mac in vms:
            addresses = _entries(leases, mac, "dhcp") or self._ask_guest_or_host(vm_id, mac)
            if addresses and self._record(vm_id, addresses):
                changed += 1
        return changed

    def learn_one(self, vm_id: str, mac: str) -> bool:
        return self.learn([(vm_id, mac)]) == 1

    def _ask_guest_or_host(self, vm_id: str, mac: str) -> list[dict[str, str]]:
        for source in PER_VM_SOURCES:
            try:
                addresses = _entries(self._hypervisor.interface_addresses(vm_id, source), mac,
                                     source)
            except DomainNotFound:
                return []
            if addresses:
                return addresses
        return []

    def _record(self, vm_id: str, addresses: list[dict[str, str]]) -> bool:
        with self._db.write() as conn:
            row = vm_dao.get(conn, vm_id)
            if row is None or row.ip_addresses == addresses:
                return False
            vm_dao.set_addresses(conn, vm_id, addresses, utc_now())
        log.info("vm %s addresses: %s", vm_id,
                 ", ".join(entry["address"] for entry in addresses))
        return True
