"""When to ask each running VM's guest agent: exponential backoff per VM, a budget per sweep."""
from __future__ import annotations

from dataclasses import dataclass

FIRST_RETRY_S = 10.0  # an agent that did not answer is asked again after this, doubling...
MAX_RETRY_S = 300.0  # ...up to this, so a guest without an agent costs one question in 5 min
REFRESH_S = MAX_RETRY_S  # an agent that answered is asked again after this, to follow changes
ASKS_PER_SWEEP = 16  # agent questions one sweep may ask, whatever the number of VMs


def retry_delay(failures: int) -> float:
    """Seconds to wait after the failures-th unanswered question in a row (1, 2, ...)."""
    return min(FIRST_RETRY_S * 2.0 ** max(0, failures - 1), MAX_RETRY_S)


@dataclass
class _Entry:
    due_at: float
    failures: int = 0


class AgentSchedule:
    """Per VM, kept in memory (a restart asks everyone once more): when its agent may next be
    asked. The caller serialises access."""

    def __init__(self, budget: int = ASKS_PER_SWEEP) -> None:
        self.budget = budget
        self._entries: dict[str, _Entry] = {}

    def due(self, candidates: dict[str, bool], now: float) -> list[str]:
        """The VMs to ask now, at most `budget` of them.

        candidates maps each VM that could be asked to whether it has addresses already. A VM
        seen for the first time is due at once; VMs without addresses go first, then the ones
        waiting longest. VMs no longer among the candidates (stopped, deleted, found in the DHCP
        leases) are forgotten, so memory follows the running VMs.
        """
        for vm_id in self._entries.keys() - candidates.keys():
            del self._entries[vm_id]
        ready = []
        for vm_id, known in candidates.items():
            entry = self._entries.setdefault(vm_id, _Entry(due_at=now))
            if entry.due_at <= now:
                ready.append((known, entry.due_at, vm_id))
        return [vm_id for _known, _due, vm_id in sorted(ready)[:self.budget]]

    def answered(self, vm_id: str, now: float) -> None:
        self._entries[vm_id] = _Entry(due_at=now + REFRESH_S)

    def unanswered(self, vm_id: str, now: float) -> None:
        entry = self._entries.setdefault(vm_id, _Entry(due_at=now))
        entry.failures += 1
        entry.due_at = now + retry_delay(entry.failures)
