"""Queues served fairly: each project in turn, none with more than `cap` entries out at once
(nor more than a kind's own cap of that kind)."""
from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class FairQueue(Generic[T]):
    """FIFO per (project, kind); `take(kind)` serves projects round-robin.

    An entry is "out" from take() until done(project, kind): a project with `cap` entries out
    gets none more, whatever it has queued, so one project cannot fill every worker; nor more
    of a kind than kind_caps gives it (image imports: a share of their few workers).
    """

    def __init__(self, cap: int, kind_caps: Mapping[str, int] | None = None) -> None:
        self._cap = cap
        self._kind_caps = dict(kind_caps or {})
        self._out_of_kind: Counter[tuple[str, str]] = Counter()
        self._queues: dict[tuple[str, str], deque[T]] = {}
        self._turn: deque[str] = deque()  # projects in the order they are next served
        self.out: Counter[str] = Counter()

    def put(self, project: str, kind: str, item: T) -> None:
        self._queues.setdefault((project, kind), deque()).append(item)
        if project not in self._turn:
            self._turn.append(project)

    def take(self, kind: str) -> tuple[str, T] | None:
        """The next (project, item) of kind, from the first project in turn that is under its
        cap; that project then goes to the back of the turn."""
        for project in list(self._turn):
            queue = self._queues.get((project, kind))
            if not queue or self.out[project] >= self._cap or (
                    self._out_of_kind[project, kind] >= self._kind_caps.get(kind, self._cap)):
                continue
            item = queue.popleft()
            self.out[project] += 1
            self._out_of_kind[project, kind] += 1
            self._turn.remove(project)
            self._turn.append(project)
            self._drop_if_idle(project)
            return project, item
        return None

    def done(self, project: str, kind: str) -> None:
        self.out[project] -= 1
        if self.out[project] <= 0:
            del self.out[project]
        self._out_of_kind[project, kind] -= 1
        if self._out_of_kind[project, kind] <= 0:
            del self._out_of_kind[project, kind]

    def remove_where(self, matches: Callable[[T], bool]) -> list[T]:
        """Take every queued item that matches out of the queues (not counted as out)."""
        removed = []
        for (project, _kind), queue in self._queues.items():
            kept = [item for item in queue if not matches(item)]
            removed += [item for item in queue if matches(item)]
            queue.clear()
            queue.extend(kept)
        for project in list(self._turn):
            self._drop_if_idle(project)
        return removed

    def queued(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def _drop_if_idle(self, project: str) -> None:
        if not any(queue for (owner, _), queue in self._queues.items() if owner == project):
            self._turn.remove(project)
            for key in [key for key in self._queues if key[0] == project]:
                del self._queues[key]
