"""Learn VMs' IP addresses from the host and record them, so listing VMs never asks libvirt for them.

Sources, in order: the libvirt network's DHCP leases (one bulk call), the guest agent (one call
per VM, only when our domains have an agent channel, on a schedule with a budget per sweep),
then the host's neighbour (ARP) table (read once, from this machine when libvirt is local).

What one sweep's `learn` costs in libvirt calls, whatever the number of VMs: 2 for the leases,
none for the neighbour table, 2 per agent question and at most ASKS_PER_SWEEP questions, so at
most LEARN_CALLS_BOUND. An agent that does not answer is asked again after 10 s, 20 s, 40 s...
up to 5 minutes; one that answered is asked again every 5 minutes.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

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


def _entries(found: Addresses, mac: str, source: str) -> Entries:
    return [{"address": address, "family": family, "source": source}
            for address, family in found.get(mac.lower(), [])]


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
        calls."""
        if not rows:
            self._ask_agents([], host)  # no running VM: forget every agent's schedule
            return 0
        leases = host.hypervisor.host.dhcp_leases(host.row.network)
        neighbours = host.hypervisor.host.neighbours() or {}
        found = {row.id: _entries(leases, row.mac or "", "dhcp") for row in rows}
        answers = self._ask_agents([row for row in rows if not found[row.id]], host)
        changes: dict[str, Entries] = {}
        for row in rows:
            addresses = (found[row.id] or answers.get(row.id)
                         or self._from_neighbours(row, neighbours))
            if addresses and addresses != row.ip_addresses:
                changes[row.id] = addresses
        return self._record(changes)

    def learn_one(self, vm_id: str, mac: str, host: Host) -> bool:
        """Look up one running VM's addresses now (a GET of a VM without any), asking its agent
        whatever the sweep's schedule says; True if its list changed."""
        addresses = _entries(host.hypervisor.host.dhcp_leases(host.row.network), mac, "dhcp")
        if not addresses and self._guest_agent:
            addresses = self._ask(vm_id, mac, "agent", host)
        if not addresses:
            neighbours = host.hypervisor.host.neighbours()
            addresses = (self._ask(vm_id, mac, "arp", host) if neighbours is None  # remote host
                         else _entries(neighbours, mac, "arp"))
        return bool(addresses) and self._record({vm_id: addresses}) == 1

    def _ask_agents(self, rows: list[vm_dao.VmRow], host: Host) -> dict[str, Entries]:
        """Ask the agents the schedule says are due, at most its budget; answers by VM id."""
        if not self._guest_agent:
            return {}
        macs = {row.id: row.mac or "" for row in rows}
        answers: dict[str, Entries] = {}
        with self._asking:
            schedule = self._schedules.setdefault(host.name, self._new_schedule())
            now = self._clock()
            for vm_id in schedule.due({row.id: bool(row.ip_addresses) for row in rows}, now):
                addresses = self._ask(vm_id, macs[vm_id], "agent", host)
                if addresses:
                    answers[vm_id] = addresses
                    schedule.answered(vm_id, now)
                else:
                    schedule.unanswered(vm_id, now)
        return answers

    @staticmethod
    def _from_neighbours(row: vm_dao.VmRow, neighbours: Addresses) -> Entries:
        if any(entry.get("source") == "agent" for entry in row.ip_addresses):
            return []  # what the agent said stands until it is asked again
        return _entries(neighbours, row.mac or "", "arp")

    @staticmethod
    def _ask(vm_id: str, mac: str, source: str, host: Host) -> Entries:
        try:
            return _entries(host.hypervisor.interface_addresses(vm_id, source), mac, source)
        except DomainNotFound:
            return []

    def _record(self, changes: dict[str, Entries]) -> int:
        """Store new address lists by VM id, in one transaction; return how many changed."""
        if not changes:
            return 0
        recorded = []
        with self._db.write() as conn:
            now = utc_now()
            for vm_id, addresses in changes.items():
                row = vm_dao.get(conn, vm_id)
                if row is not None and row.ip_addresses != addresses:
                    vm_dao.set_addresses(conn, vm_id, addresses, now)
                    recorded.append(vm_id)
        for vm_id in recorded:
            log.info("vm %s addresses: %s", vm_id,
                     ", ".join(entry["address"] for entry in changes[vm_id]))
        if recorded:
            self.on_change(recorded)
        return len(recorded)
