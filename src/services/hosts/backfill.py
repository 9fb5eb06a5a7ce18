"""Backfill's one limit: once a VM has waited for capacity longer than IAAS_QUEUE_BACKFILL_LIMIT,
nothing may pass it any more. Every host that could hold it (were it empty) is kept for it:
neither a VM behind it in the fair order nor a new create is placed there until it is."""
from __future__ import annotations

import json
import sqlite3

from src.database import capacity_waits as wait_dao
from src.services.hosts.capacity import Capacity
from src.services.hosts.registry import Host
from src.services.rules.fair_order import could_hold
from src.services.rules.placement import Demand, Free, HostCapacity
from src.utils.clock import utc_after


def kept_for(waits: list[wait_dao.WaitRow], whole: dict[str, Free]) -> set[str]:
    """The hosts that could hold any of these waiting VMs (whole: each host's whole room)."""
    kept: set[str] = set()
    seen: set[tuple[str, str | None]] = set()
    for wait in waits:
        shape = (json.dumps(wait.demand, sort_keys=True), wait.pinned_host)
        if shape in seen:  # a thousand waits of a few flavors: a few checks
            continue
        seen.add(shape)
        rooms = {name: room for name, room in whole.items()
                 if wait.pinned_host in (None, name) and name not in kept}
        kept |= could_hold(Demand(**wait.demand), rooms)
    return kept


def kept_now(conn: sqlite3.Connection, capacity: Capacity, hosts: list[Host],
             capacities: dict[str, HostCapacity], limit_s: float) -> frozenset[str]:
    """The hosts kept for VMs waiting longer than limit_s (none waits so long: none)."""
    overdue = wait_dao.older_than(conn, utc_after(-limit_s))
    if not overdue:
        return frozenset()
    return frozenset(kept_for(overdue, capacity.whole_rooms(conn, hosts, capacities)))
