"""Placing the VMs that wait for capacity: one pass over the whole queue in fair order, in one
write transaction, on every change that frees room (a VM deleted, a build failed, a host added
or enabled, a reservation ended) and at every tick of the capacity clock.

Each waiting VM is tried in its turn (src/services/rules/fair_order.py); one that fits is placed
and is a normal create from then on: it claims its room, its build record gets its host and
placement, and its create task goes to the executor. A smaller VM that fits may pass a larger
one that does not (backfill), but not past a VM that has waited longer than
IAAS_QUEUE_BACKFILL_LIMIT: the hosts that could hold that one take nothing else (backfill.py).
Demands that did not fit are not tried again in the same pass (room only shrinks during one),
so a pass over a thousand waiting VMs of a few flavors schedules a few times.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache

from src.database import capacity_waits as wait_dao
from src.database import gpus as gpu_dao
from src.database import projects as project_dao
from src.database import reservations as reservation_dao
from src.database import tasks as task_dao
from src.database import vm_terms as terms_dao
from src.database import vms as vm_dao
from src.database import volumes as volume_dao
from src.database.db import Database
from src.services.hosts.backfill import kept_for
from src.services.hosts.capacity import Capacity
from src.services.hosts.registry import Host, HostRegistry
from src.services.networks.catalog import active_on
from src.services.rules.fair_order import (
    Entry,
    FairTurn,
    Holdings,
    amount_of,
    fair_order,
    share_resource,
)
from src.services.rules.placement import Claim, Demand, Free, HostCapacity, after_claim
from src.services.rules.scheduler import Candidate, NoHostFits, schedule
from src.services.vms import build_record, nics, preemption
from src.services.vms.build_record import UnreadableRecord
from src.services.vms.waiting import reason_of
from src.utils.clock import utc_after, utc_now

log = logging.getLogger(__name__)

EXPIRED = ("capacity_wait_expired", ("The VM waited for capacity longer than its max_wait_s "
                                     "(IAAS_QUEUE_MAX_WAIT) and was never placed; it holds "
                                     "nothing."))
UNPLACEABLE = ("internal_error", "The VM could not be placed; see the server log.")
# (demand as JSON, pinned host, networks asked for): waits that fit alike
Shape = tuple[str, str | None, tuple[str, ...]]
SHARED = ("gpus", "vcpus", "ram", "disk_gb")  # the resources a share can be counted in


def _asked(conn: sqlite3.Connection, wait: wait_dao.WaitRow) -> tuple[str, ...]:
    """The networks the waiting VM's record asks for (none: its host's network): as recorded
    with the wait, or read from its task for a VM queued before they were (migration 025)."""
    if wait.networks is not None:
        return wait.networks
    return _asked_by_task(conn, wait.task_id)


def _asked_by_task(conn: sqlite3.Connection, task_id: str) -> tuple[str, ...]:
    task = task_dao.get(conn, task_id)
    return build_record.asked_networks(json.loads(task.payload)) if task else ()


def _model_matches(gpu: gpu_dao.GpuRow, model: str) -> bool:
    """As gpu_dao.list_free matches a flavor's gpu_model: part of the product name, any case."""
    return model.lower() in (gpu.product_name or "").lower()


@dataclass
class _Pass:
    """What one pass learns as it goes."""

    rooms: dict[str, Candidate]  # what is free on each host, less what this pass placed
    read_whole: Callable[[], dict[str, Free]]  # each host's whole room (could a VM ever fit?)
    now: str
    overdue: str  # a wait since before this is past the backfill limit
    kept: set[str] = field(default_factory=set)  # hosts kept for overdue waits
    failed: dict[Shape, str] = field(default_factory=dict)  # shapes that fit nowhere: why
    reasons: dict[str, str] = field(default_factory=dict)  # vm id -> what it waits for now
    active: dict[str, set[str]] | None = None  # each host's active networks, when asked
    _whole: dict[str, Free] | None = None

    @property
    def whole(self) -> dict[str, Free]:
        """Read when first asked: only a wait past the backfill limit needs it (every GPU's
        description parsed again cost a pass over 200 GPUs 1.5 ms)."""
        if self._whole is None:
            self._whole = self.read_whole()
        return self._whole


class QueuePlacer:
    def __init__(self, db: Database, hosts: HostRegistry, capacity: Capacity,
                 executor_name: str, backfill_limit_s: float) -> None:
        """executor_name: the executor a placed create goes to (a Celery worker's placer hands
        it to the API's outbox relay, which publishes it)."""
        self._db = db
        self._hosts = hosts
        self._capacity = capacity
        self._executor_name = executor_name
        self._backfill_limit_s = backfill_limit_s
        self._submit: Callable[[task_dao.TaskRow], object] = lambda _task: None
        self._lock = threading.Lock()  # one pass at a time here (processes: BEGIN IMMEDIATE)

    def bind(self, submit: Callable[[task_dao.TaskRow], object]) -> None:
        """Placed creates are handed to submit (the executor's) once their pass committed."""
        self._submit = submit

    def after_task(self, task: task_dao.TaskRow) -> None:
        """A task ended: a delete or a failed build may have freed room."""
        if (task.action, task.status) in (("delete", "succeeded"), ("create", "failed")):
            self.place()

    def place(self) -> list[task_dao.TaskRow]:
        """One pass over the queue; the create tasks of the VMs it placed."""
        with self._db.read() as conn:
            if not wait_dao.count(conn):
                return []
            asking, unrecorded = wait_dao.network_asks(conn)
            asking = asking or any(_asked_by_task(conn, task) for task in unrecorded)
        hosts = self._hosts.all()
        capacities = self._capacity.known(hosts)  # libvirt (cached): before the transaction
        active = active_on([host for host in hosts if host.name in capacities]) if asking else None
        with self._lock, self._db.write() as conn:
            placed = self._pass(conn, hosts, capacities, active)
        for task in placed:
            log.info("vm %s placed from the capacity queue on %s", task.vm_id, task.host)
            self._submit(task)
        return placed

    def expire(self) -> int:
        """End the waits past their max_wait_s (capacity_wait_expired); how many."""
        with self._lock, self._db.write() as conn:
            now = utc_now()
            expired = wait_dao.expired(conn, now)
            for wait in expired:
                _end(conn, wait, EXPIRED, now)
        for wait in expired:
            log.warning("vm %s waited for capacity too long: %s", wait.vm_id, EXPIRED[0])
        return len(expired)

    def _pass(self, conn: sqlite3.Connection, hosts: list[Host],
              capacities: dict[str, HostCapacity],
              active: dict[str, set[str]] | None = None) -> list[task_dao.TaskRow]:
        waits = {wait.vm_id: wait for wait in wait_dao.list_all(conn)}
        if not waits:
            return []
        state = _Pass(rooms={room.name: room for room in
                             self._capacity.rooms(conn, hosts, capacities)},
                      read_whole=lambda: self._capacity.whole_rooms(conn, hosts, capacities),
                      now=utc_now(), overdue=utc_after(-self._backfill_limit_s), active=active)
        held, allowed = _shares(conn, list(waits.values()), hosts, capacities)
        entries, asked, shapes = {}, {}, {}
        for key, wait in waits.items():
            entries[key] = _entry(wait)
            asked[key] = networks_asked = _asked(conn, wait)
            shapes[key] = (wait.demand_text or json.dumps(wait.demand, sort_keys=True),
                           wait.pinned_host, networks_asked)
        turn = FairTurn(entries.values(), held, allowed)
        networks = {host.name: host.row.network for host in hosts}
        untried = Counter(shapes.values())
        live = len(waits)  # the waits not tried yet whose shape has not failed in this pass
        placed = []
        while live and (entry := turn.next()) is not None:
            wait, shape = waits[entry.key], shapes[entry.key]
            untried[shape] -= 1
            live -= shape not in state.failed
            failed_before = shape in state.failed
            task = self._try(conn, wait, asked[entry.key], shape, state, networks)
            if task is None:
                if not failed_before and shape in state.failed:
                    live -= untried[shape]  # the rest of that shape fail alike, untried
                turn.passed()
                continue
            turn.placed()
            placed.append(task)
            del waits[entry.key]
        # Past the last shape that could fit, the rest only learn why they wait (and the hosts
        # kept for overdue ones no longer matter: nothing else is tried).
        for key in waits.keys() - state.reasons.keys():
            if shapes[key] in state.failed:
                state.reasons[key] = state.failed[shapes[key]]
        _rank(conn, waits, entries, state.reasons, turn.held, allowed)
        return placed

    def _try(self, conn: sqlite3.Connection, wait: wait_dao.WaitRow, asked: tuple[str, ...],
             shape: Shape, state: _Pass, networks: dict[str, str]) -> task_dao.TaskRow | None:
        """Place one waiting VM (which asks for networks `asked`) if it fits; its create task
        then, else None."""
        if shape not in state.failed:
            demand = Demand(**wait.demand)
            # Unknown networks (a VM queued after this pass looked) offer nothing until the next.
            offers = [offer for room in state.rooms.values()
                      if (offer := _offer(room, demand, wait.pinned_host, state.kept))
                      and (not asked or set(asked) <= (state.active or {}).get(room.name, set()))]
            try:
                host, claim = schedule(demand, offers, self._capacity.policy)
            except NoHostFits as none:
                state.failed[shape] = reason_of(none.resource)
            else:
                task = self._claim(conn, wait, host, claim, networks[host], state.now)
                if task is not None:
                    room = state.rooms[host]
                    assert room.free is not None
                    state.rooms[host] = replace(room, free=after_claim(room.free, demand, claim))
                return task
        state.reasons[wait.vm_id] = state.failed[shape]
        if wait.since < state.overdue:  # nothing may pass it any more
            state.kept |= kept_for([wait], state.whole)
        return None

    def _claim(self, conn: sqlite3.Connection, wait: wait_dao.WaitRow, host: str, claim: Claim,
               network: str, now: str) -> task_dao.TaskRow | None:
        """Give the VM its room and hand its create on; None (nothing changed) when it cannot
        be. A savepoint per VM: one that fails never undoes the others of the pass."""
        conn.execute("SAVEPOINT placing")
        try:
            task = task_dao.get(conn, wait.task_id)
            if task is None:
                raise LookupError("its create task is gone")
            record = build_record.placed(json.loads(task.payload), wait.vm_id, host, network,
                                         claim)
            payload = json.dumps(record.to_payload())
            if not vm_dao.set_placed(conn, wait.vm_id, host, claim.numa_node, claim.pinned_cpus,
                                     now):
                raise LookupError("its VM no longer waits")
            gpu_dao.allocate(conn, host, [gpu.id for gpu in claim.gpus], wait.vm_id, now)
            preemption.notify_landing(conn, wait.vm_id, host, [gpu.id for gpu in claim.gpus],
                                      None, now)
            build_record.hold_partitions(conn, record, now)
            nics.put(conn, record)
            if not task_dao.hand_on(conn, task.id, host, self._executor_name, payload, now):
                raise LookupError("its create task no longer waits")
            wait_dao.delete(conn, wait.vm_id)
        except UnreadableRecord as exc:
            conn.execute("ROLLBACK TO placing")
            _end(conn, wait, (exc.code, exc.message), now)
            conn.execute("RELEASE placing")
            return None
        except Exception:
            conn.execute("ROLLBACK TO placing")
            log.exception("vm %s could not be placed from the queue; it is dropped", wait.vm_id)
            _end(conn, wait, UNPLACEABLE, now)
            conn.execute("RELEASE placing")
            return None
        conn.execute("RELEASE placing")
        return replace(task, host=host, executor=self._executor_name, payload=payload,
                       created_at=now)


def _offer(room: Candidate, demand: Demand, pinned: str | None,
           kept: set[str]) -> Candidate | None:
    """The host as a candidate for demand: only its GPUs of the model asked for; None when the
    VM may not go there (pinned elsewhere, or kept for a VM past the backfill limit)."""
    if room.name in kept or pinned not in (None, room.name):
        return None
    if not demand.gpu_model or room.free is None:
        return room
    model = demand.gpu_model
    return replace(room, free=replace(room.free, gpus=[
        gpu for gpu in room.free.gpus if _model_matches(gpu, model)]))


def _entry(wait: wait_dao.WaitRow) -> Entry:
    resource, amount = _share(wait.demand_text or json.dumps(wait.demand, sort_keys=True),
                              wait.reason)
    return Entry(wait.vm_id, wait.project, wait.since, resource, amount)


@lru_cache(maxsize=1024)
def _share(demand_text: str, reason: str) -> tuple[str, int]:
    """(resource, amount) a wait's share is counted in: the same for waits that ask alike."""
    demand = Demand(**json.loads(demand_text))
    resource = share_resource(demand, reason)
    return resource, amount_of(demand, resource)


def _shares(conn: sqlite3.Connection, waits: list[wait_dao.WaitRow], hosts: list[Host],
            capacities: dict[str, HostCapacity]) -> tuple[Holdings, Holdings]:
    """(what each waiting project holds, what its quota allows: the cluster's amount where its
    quota sets no limit) of every resource a share is counted in."""
    enabled = [host.name for host in hosts if host.row.enabled and host.name in capacities]
    assignable = gpu_dao.assignable_counts(conn)  # each host's whole room's GPUs
    totals = {"gpus": sum(assignable.get(name, 0) for name in enabled),
              "vcpus": sum(capacities[name].vcpus for name in enabled),
              "ram": sum(capacities[name].ram_mib for name in enabled),
              "disk_gb": sum(min(capacities[name].disk_gb, 2 ** 40) for name in enabled)}
    projects = sorted({wait.project for wait in waits})
    held: Holdings = {}
    allowed: Holdings = {}
    for project, holding in wait_dao.holdings(conn, projects).items():
        limits = project_dao.limits(conn, project) or {}
        for resource in SHARED:
            held[project, resource] = getattr(holding, resource)
            limit = limits.get(resource)
            allowed[project, resource] = totals[resource] if limit is None else limit
    return held, allowed


def _rank(conn: sqlite3.Connection, waits: dict[str, wait_dao.WaitRow],
          entries: dict[str, Entry], reasons: dict[str, str], held: Holdings,
          allowed: Holdings) -> None:
    """Record each remaining wait's position in the fair order, what it waits for, and when
    it may start (for GPUs: when the reservations running now, or the runs of VMs with a
    max_runtime_s, give back enough of them)."""
    freed = _gpus_freed(conn)
    findings: list[wait_dao.Finding] = []
    for position, entry in enumerate(fair_order([entries[key] for key in waits], held,
                                                allowed), 1):
        wait = waits[entry.key]
        reason = reasons.get(entry.key, wait.reason)
        estimate = _estimate(freed, int(wait.demand.get("gpu_count", 0))) \
            if reason == "gpu" and freed else None
        findings.append((wait, position, estimate, reason))
    wait_dao.set_findings(conn, findings)


def _gpus_freed(conn: sqlite3.Connection) -> list[tuple[str, int]]:
    """(moment, GPUs given back then), soonest first: the ends of the reservations whose window
    runs now (its VMs are stopped and its claims lapse) and of the runs of VMs with a
    max_runtime_s. Only these ends are known ahead."""
    now = utc_now()
    return sorted(reservation_dao.ends_of_running(conn, now) + terms_dao.runs_ending(conn, now))


def _estimate(freed: list[tuple[str, int]], wanted: int) -> str | None:
    """The first moment enough GPUs for one VM of wanted are given back (ignoring the others
    that wait: an estimate, as Slurm's --start is); None when no known end gives enough."""
    total = 0
    for moment, count in freed:
        total += count
        if wanted and total >= wanted:
            return moment
    return None


def _end(conn: sqlite3.Connection, wait: wait_dao.WaitRow, error: tuple[str, str],
         now: str) -> None:
    """The VM waits no more and was never placed: error, its create failed, nothing held."""
    vm_dao.set_status(conn, wait.vm_id, "error", now, error, only_from="queued")
    task_dao.finish(conn, wait.task_id, now, error)
    volume_dao.drop_pending(conn, wait.vm_id)
    wait_dao.delete(conn, wait.vm_id)
