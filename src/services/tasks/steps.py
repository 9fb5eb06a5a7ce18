"""The steps of a build or a delete: a host-side failure becomes TaskFailed with the step's
code, and undo steps go on whatever fails."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from src.hypervisor.disks import CommandFailed
from src.hypervisor.errors import HypervisorError, HypervisorUnavailable
from src.services.tasks.runner import TaskFailed

log = logging.getLogger(__name__)

# Words in libvirt's start errors that mean the PCI passthrough itself failed.
_PASSTHROUGH_WORDS = ("pci", "passthrough", "vfio", "iommu", "hostdev")


@contextmanager
def step(code: str, passthrough: list[str] | None = None,
         networks: Sequence[str] = ()) -> Iterator[None]:
    """Turn a host-side failure inside the block into TaskFailed(code, reason).

    Two start failures get codes of their own: gpu_passthrough_failed when libvirt's words
    name passthrough (with devices to pass through), and network_inactive with what to do.
    """
    try:
        yield
    except HypervisorUnavailable:
        raise  # the host is away: its task waits for it (task_runs.py), it does not fail
    except (HypervisorError, CommandFailed, OSError, ValueError) as exc:
        message = str(exc)
        if passthrough and any(word in message.lower() for word in _PASSTHROUGH_WORDS):
            code = "gpu_passthrough_failed"
        elif (network := next((name for name in networks
                               if f"network '{name}' is not active" in message), None)):
            code, message = "network_inactive", (
                f"The network {network!r} is not active, so the VM cannot start: start it with "
                f"`virsh net-start {network}` and `virsh net-autostart {network}`, or run "
                f"`make serve`, which does both ({message}).")
        raise TaskFailed(code, message) from exc


def best_effort(what: str, func: Callable[..., object], *args: object) -> None:
    try:
        func(*args)
    except Exception as exc:  # noqa: BLE001 - undo must go on with the remaining steps
        log.error("undo step %r failed: %s", what, exc)
