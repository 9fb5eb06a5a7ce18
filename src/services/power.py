"""The host side of each power action: what libvirt is asked to do, and when it counts as done."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from src.hypervisor.domains import MISSING
from src.hypervisor.driver import Hypervisor
from src.hypervisor.errors import HypervisorError
from src.services.tasks import TaskFailed

SHUTDOWN_RESEND_S = 10.0  # guests still booting miss the first ACPI press; press again
POLL_S = 0.25
OFF_STATES = ("shutoff", MISSING, "crashed")


@dataclass(frozen=True)
class PowerOptions:
    timeout: int = 60  # seconds; the field names are the request body's
    force: bool = False
    hard: bool = False


class PowerControl:
    """Runs one action against the domain; raises TaskFailed(<action>_failed | shutdown_timeout)."""

    def __init__(self, hypervisor: Hypervisor, sleep: Callable[[float], None] = time.sleep) -> None:
        self._hypervisor = hypervisor
        self._sleep = sleep

    def run(self, vm_id: str, action: str, options: PowerOptions) -> None:
        steps: dict[str, Callable[[], None]] = {
            "start": lambda: self._start(vm_id),
            "stop": lambda: self._stop(vm_id),
            "shutdown": lambda: self._shutdown(vm_id, options.timeout, options.force),
            "reboot": lambda: (self._hypervisor.reset(vm_id) if options.hard
                               else self._hypervisor.reboot(vm_id)),
            "pause": lambda: self._hypervisor.suspend(vm_id),
            "resume": lambda: self._hypervisor.resume(vm_id),
        }
        try:
            steps[action]()
        except HypervisorError as exc:
            raise TaskFailed(f"{action}_failed", str(exc)) from exc

    def _start(self, vm_id: str) -> None:
        if self._hypervisor.power_state(vm_id) != "running":  # already up (e.g. after an error)
            self._hypervisor.start(vm_id)
        self._hypervisor.set_autostart(vm_id, True)

    def _stop(self, vm_id: str) -> None:
        self._hypervisor.force_off(vm_id)
        self._hypervisor.set_autostart(vm_id, False)

    def _shutdown(self, vm_id: str, timeout_s: int, force: bool) -> None:
        """Press the ACPI button every SHUTDOWN_RESEND_S until the guest is off or time runs out."""
        deadline = time.monotonic() + timeout_s
        next_press = time.monotonic()
        while self._hypervisor.power_state(vm_id) not in OFF_STATES:
            now = time.monotonic()
            if now >= deadline:
                if not force:
                    raise TaskFailed("shutdown_timeout",
                                     f"The guest did not power off within {timeout_s} s and is "
                                     "still running; retry with force, or use stop.")
                self._hypervisor.force_off(vm_id)
                break
            if now >= next_press:
                try:
                    self._hypervisor.shutdown(vm_id)
                except HypervisorError:
                    if self._hypervisor.power_state(vm_id) in OFF_STATES:
                        break  # it went off between our look and the press
                    raise
                next_press = now + SHUTDOWN_RESEND_S
            self._sleep(POLL_S)
        self._hypervisor.set_autostart(vm_id, False)
