"""The VM state machine: which action is allowed from which status, and what the host's truth means.

The API (409 invalid_state), the task runner (each action's end status) and the `actions` field
all read these tables, so they cannot disagree.
"""
from __future__ import annotations

ALLOWED: dict[str, tuple[str, ...]] = {
    "queued": ("delete",),  # it waits for capacity: a delete removes it at once
    "building": (),
    "deleting": (),
    "running": ("shutdown", "stop", "reboot", "pause", "delete"),
    "paused": ("resume", "stop", "delete"),
    "stopped": ("start", "delete"),
    "error": ("delete", "start"),  # start only while the domain still exists
}

# What a VM held by its task still allows: one that waits for capacity holds its create task
# all the while, and nothing of it is on a host yet.
WHILE_BUSY: dict[str, tuple[str, ...]] = {"queued": ("delete",)}

# The status a VM has once the action succeeded.
RESULT: dict[str, str] = {
    "start": "running", "shutdown": "stopped", "stop": "stopped", "reboot": "running",
    "pause": "paused", "resume": "running",
}

# Errors the reconciler itself sets; the host clears them by showing a normal power state again.
# Other errors (a failed build, a timed-out task) stay until the user acts.
HOST_ERRORS = ("domain_missing", "guest_crashed", "paused_by_hypervisor")

# libvirt power state -> the status it implies for an idle VM (None: transient, no change).
_STATUS_OF_POWER: dict[str, tuple[str, tuple[str, str] | None] | None] = {
    "running": ("running", None),
    "blocked": ("running", None),
    "paused": ("paused", None),
    "suspended": ("paused", None),
    "shutoff": ("stopped", None),
    "crashed": ("error", ("guest_crashed", "The guest crashed.")),
    "paused_by_hypervisor": ("error", ("paused_by_hypervisor", (
        "The hypervisor paused the guest without a pause action. With IAAS_DOMAIN_TYPE=kvm on "
        "a host where KVM does not work, QEMU stops the guest at once: use "
        "IAAS_DOMAIN_TYPE=qemu (software emulation) there."))),
    "missing": ("error", ("domain_missing",
                          "The libvirt domain disappeared outside the API (undefined on the host).")),
    "shutting_down": None,
    "nostate": None,
    "unknown": None,
}


def allowed_actions(status: str, *, busy: bool, domain_exists: bool) -> list[str]:
    """The actions a user may ask for now."""
    if busy:
        return list(WHILE_BUSY.get(status, ()))
    actions = ALLOWED.get(status, ())
    if status == "error" and not domain_exists:
        actions = tuple(action for action in actions if action != "start")
    return list(actions)


def reconciled(status: str, error_code: str | None,
               power_state: str) -> tuple[str, tuple[str, str] | None] | None:
    """The (status, error) an idle VM should have given libvirt's power state; None: keep it."""
    if status in ("queued", "building", "deleting"):
        return None  # owned by a task (or by start-up recovery, or the capacity queue)
    if status == "error" and error_code not in HOST_ERRORS:
        return None  # waits for the user: start or delete
    target = _STATUS_OF_POWER.get(power_state)
    if target is None:
        return None
    new_status, error = target
    if new_status == status and (error[0] if error else None) == error_code:
        return None
    return target
