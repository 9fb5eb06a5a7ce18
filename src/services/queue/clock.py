"""The capacity clock: every IAAS_RESERVATION_TICK seconds (and at once when poked) it ends the
waits past their max_wait_s, then places what fits; so the queue moves on even when the change
that freed room happened where nobody told this process (another process, a GPU refresh)."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class CapacityClock:
    def __init__(self, tick_s: float, jobs: list[Callable[[], object]]) -> None:
        """jobs run in order at every tick."""
        self._tick_s = tick_s
        self._jobs = jobs
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="capacity-clock", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Look now (a host was added or enabled: room may have come)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def tick(self) -> None:
        """Every job once; one that fails is logged and the others still run."""
        for job in self._jobs:
            try:
                job()
            except Exception:
                log.exception("capacity clock: %s failed", getattr(job, "__name__", job))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._wake.wait(self._tick_s)
            self._wake.clear()
