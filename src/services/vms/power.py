"""The host side of each power action: what libvirt is asked to do, and when it counts as done.

A graceful shutdown presses the ACPI button and then waits without holding a worker: it returns
a Next (when to look again, and its state as plain JSON, so any worker process can take the
next look), is checked again on a timer or when its VM's lifecycle event arrives, presses again
every SHUTDOWN_RESEND_S, and at its deadline forces the VM off (force) or fails.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from src.hypervisor.domains import HALTED, MISSING
from src.hypervisor.driver import Hypervisor
from src.hypervisor.errors import HypervisorError, HypervisorUnavailable
from src.services.tasks.runner import Next, TaskFailed

SHUTDOWN_RESEND_S = 10.0  # guests still booting miss the first ACPI press; press again
RECHECK_S = 1.0  # without a lifecycle event, look again this often
OFF_STATES = ("shutoff", MISSING, "crashed")


@dataclass(frozen=True)
class PowerOptions:
    timeout: int = 60  # seconds; the field names are the request body's
    force: bool = False
    hard: bool = False


class PowerControl:
    """Runs one action against the domain; raises TaskFailed(<action>_failed | shutdown_timeout)."""

    def __init__(self, hypervisor: Hypervisor,
                 clock: Callable[[], float] = time.time) -> None:
        self._hypervisor = hypervisor
        self._clock = clock  # wall clock: the next look may be taken by another process

    def run(self, vm_id: str, action: str, options: PowerOptions,
            state: dict[str, Any] | None = None) -> Next | None:
        """Do the action, or take the next look at one under way (state: what the last look
        left); a Next when it must be looked at again."""
        state = state or {"deadline": self._clock() + options.timeout, "next_press": 0.0}
        steps: dict[str, Callable[[], Next | None]] = {
            "start": lambda: self._start(vm_id),
            "stop": lambda: self._stop(vm_id),
            "shutdown": lambda: self._shutdown(vm_id, state, options.timeout, options.force),
            "reboot": lambda: (self._hypervisor.reset(vm_id) if options.hard
                               else self._hypervisor.reboot(vm_id)),
            "pause": lambda: self._hypervisor.suspend(vm_id),
            "resume": lambda: self._hypervisor.resume(vm_id),
        }
        return _translated(action, steps[action])

    def _start(self, vm_id: str) -> None:
        state = self._hypervisor.power_state(vm_id)
        if state in ("paused", HALTED):  # an errored VM the hypervisor stopped: let it go on
            self._hypervisor.resume(vm_id)
        elif state != "running":  # already up (e.g. after an error): nothing to start
            self._hypervisor.start(vm_id)
        self._hypervisor.set_autostart(vm_id, True)

    def _stop(self, vm_id: str) -> None:
        self._hypervisor.force_off(vm_id)
        self._hypervisor.set_autostart(vm_id, False)

    def _shutdown(self, vm_id: str, state: dict[str, Any], timeout_s: int,
                  force: bool) -> Next | None:
        """One look: done when the guest is off; else press (when due) and come back later."""
        deadline, next_press = float(state["deadline"]), float(state["next_press"])
        if self._hypervisor.power_state(vm_id) in OFF_STATES:
            self._hypervisor.set_autostart(vm_id, False)
            return None
        now = self._clock()
        if now >= deadline:
            if not force:
                raise TaskFailed("shutdown_timeout",
                                 f"The guest did not power off within {timeout_s} s and is "
                                 "still running; retry with force, or use stop.")
            self._stop(vm_id)
            return None
        if now >= next_press:
            try:
                self._hypervisor.shutdown(vm_id)
            except HypervisorError:
                if self._hypervisor.power_state(vm_id) not in OFF_STATES:
                    raise
            next_press = now + SHUTDOWN_RESEND_S
        return Next(min(RECHECK_S, max(0.0, deadline - now)),
                    {"deadline": deadline, "next_press": next_press})


def _translated(action: str, step: Callable[[], Next | None]) -> Next | None:
    """Raises: TaskFailed(<action>_failed) for a libvirt refusal."""
    try:
        return step()
    except HypervisorUnavailable:
        raise  # the host is away: the task waits for it, it does not fail
    except HypervisorError as exc:
        raise TaskFailed(f"{action}_failed", str(exc)) from exc
