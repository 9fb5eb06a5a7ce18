"""Learn VMs' IP addresses from the host and record them, so listing VMs never asks libvirt for them.

Sources, in order: the DHCP leases of each libvirt network the VMs' NICs are on (one bulk call
a network), the guest agent (one call
per VM, only when our domains have an agent channel, on a schedule with a budget per sweep),
then the host's neighbour (ARP) table (read once, from this machine when libvirt is local).

What one sweep's `learn` costs in libvirt calls, whatever the number of VMs: 2 for the leases
of each network their NICs are on (one network, the host's, unless VMs asked for others), none
for the neighbour table, 2 per agent question and at most ASKS_PER_SWEEP questions, so at most
LEARN_CALLS_BOUND with one network. A VM's addresses are recorded per NIC (vm_nics) and, all
together in NIC order, as its ip_addresses. An agent that does not answer is asked again after 10 s, 20 s, 40 s...
up to 5 minutes; one that answered is asked again every 5 minutes.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from src.database import vm_nics as nic_dao
from src.database import vms as vm_dao
from src.database.db import Database
from src.hypervisor.domains import Addresses
from src.hypervisor.errors import DomainNotFound
from src.services.hosts.registry import Host
from src.services.vms.agent_asks import ASKS_PER_SWEEP, AgentSchedule
from src.utils.clock import utc_now

log = logging.getLogger(__name__)

LEASE_CALLS = 2  # network lookup, then its leases
LEARN_CALLS_BOUND = LEASE_CALLS + 2 * ASKS_PER_SWEEP  # an agent question: lookup, then ask
Entries = list[dict[str, str]]
PerNic = dict[str, Entries]  # a VM's addresses by the MAC of each NIC, in NIC order
Nics = list[tuple[str, str]]  # a VM's NICs in order: (network, mac)


def _entries(found: Addresses, mac: str, source: str) -> Entries:
    return [{"address": address, "family": family, "source": source}
            for address, family in found.get(mac.lower(), [])]


def _split(found: Addresses, nics: Nics, source: str) -> PerNic:
    return {mac: _entries(found, mac, source) for _, mac in nics}


def _union(per_nic: PerNic) -> Entries:
    return [entry for entries in per_nic.values() for entry in entries]


class AddressBook:
    def __init__(self, db: Database, *, guest_agent: bool = True,
                 schedule: Callable[[], AgentSchedule] = AgentSchedule,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """guest_agent: whether our domains have an agent channel (decided from the template);
        schedule makes each host's agent schedule."""
        self._db = db
        self._guest_agent = guest_agent
        self._new_schedule = schedule
        self._schedules: dict[str, AgentSchedule] = {}
        self._clock = clock
        self._asking = threading.Lock()  # one sweep at a time reads and moves a schedule
        # Told the VMs whose addresses changed (security groups' `group` rules follow them).
        self.on_change: Callable[[list[str]], object] = lambda _vm_ids: None

    def learn(self, rows: list[vm_dao.VmRow], host: Host) -> int:
        """Look up and record the addresses of the host's running VMs (rows with a MAC);
        return how many VMs got a changed list. Costs at most LEARN_CALLS_BOUND libvirt
        calls (with one network)."""
        if not rows:
            self._ask_agents([], host, {})  # no running VM: forget every agent's schedule
            return 0
        nics = self._nics({row.id: row.mac or "" for row in rows}, host)
        leases = self._leases(nics, host)
        neighbours = host.hypervisor.host.neighbours() or {}
        found = {row.id: {mac: _entries(leases[network], mac, "dhcp")
                          for network, mac in nics[row.id]} for row in rows}
        answers = self._ask_agents([row for row in rows if not _union(found[row.id])], host,
                                   nics)
        changes: dict[str, PerNic] = {}
        for row in rows:
            per_nic = (found[row.id] if _union(found[row.id]) else answers.get(row.id)
                       or self._from_neighbours(row, neighbours, nics[row.id]))
            if _union(per_nic) and _union(per_nic) != row.ip_addresses:
                changes[row.id] = per_nic
        return self._record(changes)

    def learn_one(self, vm_id: str, mac: str, host: Host) -> bool:
        """Look up one running VM's addresses now (a GET of a VM without any), asking its agent
        whatever the sweep's schedule says; True if its list changed."""
        nics = self._nics({vm_id: mac}, host)
        leases = self._leases(nics, host)
        per_nic = {nic_mac: _entries(leases[network], nic_mac, "dhcp")
                   for network, nic_mac in nics[vm_id]}
        if not _union(per_nic) and self._guest_agent:
            per_nic = self._ask(vm_id, nics[vm_id], "agent", host)
        if not _union(per_nic):
            neighbours = host.hypervisor.host.neighbours()
            per_nic = (self._ask(vm_id, nics[vm_id], "arp", host) if neighbours is None
                       else _split(neighbours, nics[vm_id], "arp"))  # None: a remote host
        return bool(_union(per_nic)) and self._record({vm_id: per_nic}) == 1

    def _nics(self, macs: dict[str, str], host: Host) -> dict[str, Nics]:
        """Each VM's NICs: the first with the MAC given (its row's), the others as stored."""
        with self._db.read() as conn:
            stored = nic_dao.for_vms(conn, list(macs))
        found = {}
        for vm_id, mac in macs.items():
            mine = stored.get(vm_id, [])
            first = mine[0].network if mine else host.row.network
            found[vm_id] = [(first, mac)] + [(nic.network, nic.mac) for nic in mine[1:]]
        return found

    @staticmethod
    def _leases(nics: dict[str, Nics], host: Host) -> dict[str, Addresses]:
        """The DHCP leases of every network the NICs are on: one bulk call a network."""
        networks = sorted({network for vm_nics in nics.values() for network, _ in vm_nics})
        return {network: host.hypervisor.host.dhcp_leases(network) for network in networks}

    def _ask_agents(self, rows: list[vm_dao.VmRow], host: Host,
                    nics: dict[str, Nics]) -> dict[str, PerNic]:
        """Ask the agents the schedule says are due, at most its budget; answers by VM id."""
        if not self._guest_agent:
            return {}
        answers: dict[str, PerNic] = {}
        with self._asking:
            schedule = self._schedules.setdefault(host.name, self._new_schedule())
            now = self._clock()
            for vm_id in schedule.due({row.id: bool(row.ip_addresses) for row in rows}, now):
                per_nic = self._ask(vm_id, nics[vm_id], "agent", host)
                if _union(per_nic):
                    answers[vm_id] = per_nic
                    schedule.answered(vm_id, now)
                else:
                    schedule.unanswered(vm_id, now)
        return answers

    @staticmethod
    def _from_neighbours(row: vm_dao.VmRow, neighbours: Addresses, nics: Nics) -> PerNic:
        if any(entry.get("source") == "agent" for entry in row.ip_addresses):
            return {}  # what the agent said stands until it is asked again
        return _split(neighbours, nics, "arp")

    @staticmethod
    def _ask(vm_id: str, nics: Nics, source: str, host: Host) -> PerNic:
        try:
            return _split(host.hypervisor.interface_addresses(vm_id, source), nics, source)
        except DomainNotFound:
            return {}

    def _record(self, changes: dict[str, PerNic]) -> int:
        """Store new address lists by VM id (together, and per NIC), in one transaction;
        return how many changed."""
        if not changes:
            return 0
        recorded = []
        with self._db.write() as conn:
            now = utc_now()
            for vm_id, per_nic in changes.items():
                row = vm_dao.get(conn, vm_id)
                addresses = _union(per_nic)
                if row is not None and row.ip_addresses != addresses:
                    vm_dao.set_addresses(conn, vm_id, addresses, now)
                    for mac, entries in per_nic.items():
                        nic_dao.set_addresses(conn, vm_id, mac, entries)
                    recorded.append(vm_id)
        for vm_id in recorded:
            log.info("vm %s addresses: %s", vm_id,
                     ", ".join(entry["address"] for entry in _union(changes[vm_id])))
        if recorded:
            self.on_change(recorded)
        return len(recorded)
