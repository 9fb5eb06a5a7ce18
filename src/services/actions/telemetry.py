"""What operators read about the platform: health of its parts, and counts for /metrics."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from src.database import gpus as gpu_dao
from src.database import tasks as task_dao
from src.database import vms as vm_dao
from src.database.db import Database
from src.hypervisor.errors import HypervisorError
from src.services.hosts.registry import HostRegistry
from src.services.rules import access
from src.services.rules.access import Principal


@dataclass(frozen=True)
class Counts:
    vms: dict[str, int]  # by status
    tasks: dict[tuple[str, str], int]  # by (action, status)
    gpus: dict[str, int]  # by status
    hosts_up: dict[str, bool]  # by host name
    latency: dict[task_dao.LatencyKey, list[tuple[float, int, float]]]  # cumulative buckets
    unpublished: int  # tasks in the outbox the relay has not handed to the broker yet
    queue_depths: dict[str, int] | None  # by host queue; None without a broker or when it is away


def _probe(check: Callable[[], object]) -> str:
    try:
        check()
    except Exception as exc:  # noqa: BLE001 - health reports any failure, never raises
        return f"error: {exc}"
    return "ok"


class Telemetry:
    def __init__(self, db: Database, hosts: HostRegistry,
                 queue_depths: Callable[[list[str]], dict[str, int]] | None = None) -> None:
        self._db = db
        self._hosts = hosts
        self._queue_depths = queue_depths

    def health(self, caller: Principal | None = None) -> tuple[bool, dict[str, str]]:
        """(all healthy, each part's 'ok' or 'error'); admins read each error's text too.
        `libvirt` is ok when every enabled host answers."""
        parts = {"db": _probe(self._db.ping), "libvirt": _probe(self._every_host_answers)}
        healthy = all(value == "ok" for value in parts.values())
        if not access.sees_internals(caller):
            parts = {part: "ok" if value == "ok" else "error" for part, value in parts.items()}
        return healthy, parts

    def counts(self) -> Counts:
        with self._db.read() as conn:
            return Counts(vms=vm_dao.count_by_status(conn),
                          tasks=task_dao.count_by_action_and_status(conn),
                          gpus=gpu_dao.count_by_status(conn),
                          hosts_up={host.name: self._hosts.is_up(host.name)
                                    for host in self._hosts.all()},
                          latency=task_dao.latency_histograms(conn),
                          unpublished=task_dao.count_unpublished(conn),
                          queue_depths=self._read_queue_depths())

    def _read_queue_depths(self) -> dict[str, int] | None:
        if self._queue_depths is None:
            return None
        try:
            return self._queue_depths([host.name for host in self._hosts.all()])
        except Exception:  # noqa: BLE001 - the broker is away: the metric says so
            return None

    def _every_host_answers(self) -> None:
        """Raises: HypervisorError naming the first enabled host that did not answer its last
        check (made every few seconds: a hung host never holds the health check up)."""
        for name in self._hosts.opened():
            if not self._hosts.is_up(name):
                reason = self._hosts.state(name).reason or "its connection is down"
                raise HypervisorError(f"host {name}: {reason}")
