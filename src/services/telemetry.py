"""What operators read about the platform: health of its parts, and counts for /metrics."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from src.database import gpus as gpu_dao
from src.database import tasks as task_dao
from src.database import vms as vm_dao
from src.database.db import Database
from src.hypervisor.errors import HypervisorError
from src.services import access
from src.services.access import Principal
from src.services.hosts import HostRegistry


@dataclass(frozen=True)
class Counts:
    vms: dict[str, int]  # by status
    tasks: dict[tuple[str, str], int]  # by (action, status)
    gpus: dict[str, int]  # by status
    hosts_up: dict[str, bool]  # by host name


def _probe(check: Callable[[], object]) -> str:
    try:
        check()
    except Exception as exc:  # noqa: BLE001 - health reports any failure, never raises
        return f"error: {exc}"
    return "ok"


class Telemetry:
    def __init__(self, db: Database, hosts: HostRegistry) -> None:
        self._db = db
        self._hosts = hosts

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
                                    for host in self._hosts.all()})

    def _every_host_answers(self) -> None:
        """Raises: HypervisorError naming the first enabled host that did not answer its last
        check (made every few seconds: a hung host never holds the health check up)."""
        for name in self._hosts.opened():
            if not self._hosts.is_up(name):
                reason = self._hosts.state(name).reason or "its connection is down"
                raise HypervisorError(f"host {name}: {reason}")
