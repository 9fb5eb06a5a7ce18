"""The VM state machine: actions allowed per status, each action's end status, reconciliation."""
from __future__ import annotations

import pytest

from src.services.rules.lifecycle import ALLOWED, RESULT, allowed_actions, reconciled
from src.vocabulary import POWER_ACTIONS

STATUSES = ("queued", "building", "deleting", "running", "paused", "stopped", "error")
BUSY_STATUSES = tuple(status for status in STATUSES if status != "queued")
POWER_STATES = ("running", "blocked", "paused", "suspended", "shutoff", "crashed", "missing",
                "shutting_down", "nostate", "unknown")
TRANSIENT = ("shutting_down", "nostate", "unknown", "no-such-state")
HOST_ERRORS = ("domain_missing", "guest_crashed")
USER_ERRORS = (None, "build_failed", "task_timeout", "start_failed")

# status -> actions a user may ask for while no task holds the VM and its domain exists.
ACTIONS = {
    "queued": ["delete"],
    "building": [],
    "deleting": [],
    "running": ["shutdown", "stop", "reboot", "pause", "delete"],
    "paused": ["resume", "stop", "delete"],
    "stopped": ["start", "delete"],
    "error": ["delete", "start"],
}

# libvirt power state -> (status, error code) it implies for an idle VM; absent: transient.
IMPLIED: dict[str, tuple[str, str | None]] = {
    "running": ("running", None),
    "blocked": ("running", None),
    "paused": ("paused", None),
    "suspended": ("paused", None),
    "shutoff": ("stopped", None),
    "crashed": ("error", "guest_crashed"),
    "missing": ("error", "domain_missing"),
}


def test_every_status_is_covered() -> None:
    assert set(ALLOWED) == set(STATUSES) == set(ACTIONS)


@pytest.mark.parametrize("status, actions", ACTIONS.items())
def test_idle_vm_with_a_domain_may_do_what_its_status_allows(status: str,
                                                            actions: list[str]) -> None:
    assert allowed_actions(status, busy=False, domain_exists=True) == actions


@pytest.mark.parametrize("status", BUSY_STATUSES)
@pytest.mark.parametrize("domain_exists", [True, False])
def test_busy_vm_allows_nothing(status: str, domain_exists: bool) -> None:
    assert allowed_actions(status, busy=True, domain_exists=domain_exists) == []


def test_a_vm_waiting_for_capacity_may_be_deleted_though_its_create_holds_it() -> None:
    assert allowed_actions("queued", busy=True, domain_exists=False) == ["delete"]


@pytest.mark.parametrize("status, actions", [
    ("building", []),
    ("deleting", []),
    ("running", ["shutdown", "stop", "reboot", "pause", "delete"]),
    ("paused", ["resume", "stop", "delete"]),
    ("stopped", ["start", "delete"]),
    ("error", ["delete"]),  # nothing left to start
])
def test_without_a_domain_only_error_drops_start(status: str, actions: list[str]) -> None:
    assert allowed_actions(status, busy=False, domain_exists=False) == actions


def test_unknown_status_allows_nothing() -> None:
    assert allowed_actions("exploded", busy=False, domain_exists=True) == []


@pytest.mark.parametrize("action, status", [
    ("start", "running"), ("shutdown", "stopped"), ("stop", "stopped"), ("reboot", "running"),
    ("pause", "paused"), ("resume", "running"),
])
def test_each_power_action_ends_in_a_status(action: str, status: str) -> None:
    assert RESULT[action] == status


def test_result_covers_exactly_the_power_actions() -> None:
    assert set(RESULT) == set(POWER_ACTIONS)
    assert "delete" not in RESULT


@pytest.mark.parametrize("status", STATUSES)
def test_an_allowed_power_action_leads_to_a_status_that_can_act_again(status: str) -> None:
    for action in allowed_actions(status, busy=False, domain_exists=True):
        if action in POWER_ACTIONS:
            assert RESULT[action] in ("running", "paused", "stopped")
            assert allowed_actions(RESULT[action], busy=False, domain_exists=True)


# --- reconciled(status, error_code, power_state): what the host's truth means for an idle VM ---

@pytest.mark.parametrize("status", ["queued", "building", "deleting"])
@pytest.mark.parametrize("power_state", [*POWER_STATES, "no-such-state"])
def test_task_owned_statuses_are_never_touched(status: str, power_state: str) -> None:
    assert reconciled(status, None, power_state) is None


@pytest.mark.parametrize("error_code", USER_ERRORS)
@pytest.mark.parametrize("power_state", POWER_STATES)
def test_error_the_user_must_clear_is_kept(error_code: str | None, power_state: str) -> None:
    assert reconciled("error", error_code, power_state) is None


@pytest.mark.parametrize("status", ["running", "paused", "stopped"])
@pytest.mark.parametrize("power_state", TRANSIENT)
def test_transient_or_unknown_power_state_changes_nothing(status: str, power_state: str) -> None:
    assert reconciled(status, None, power_state) is None


@pytest.mark.parametrize("error_code", HOST_ERRORS)
@pytest.mark.parametrize("power_state", TRANSIENT)
def test_host_error_stays_while_the_power_state_is_transient(error_code: str,
                                                             power_state: str) -> None:
    assert reconciled("error", error_code, power_state) is None


def expect(status: str, error_code: str | None, power_state: str) -> tuple[str, str | None] | None:
    """The reference decision for idle VMs: the implied state, unless the VM already shows it."""
    implied = IMPLIED[power_state]
    return None if implied == (status, error_code) else implied


# Every idle (status, error) a VM can show next to every power state libvirt reports.
IDLE = [("running", None), ("paused", None), ("stopped", None),
        ("error", "domain_missing"), ("error", "guest_crashed")]


@pytest.mark.parametrize("status, error_code", IDLE)
@pytest.mark.parametrize("power_state", IMPLIED)
def test_power_state_decides_the_idle_vms_status(status: str, error_code: str | None,
                                                 power_state: str) -> None:
    decision = reconciled(status, error_code, power_state)
    wanted = expect(status, error_code, power_state)
    if wanted is None:
        assert decision is None
        return
    assert decision is not None
    new_status, error = decision
    assert (new_status, error[0] if error else None) == wanted
    if error is not None:
        assert error[1].strip(), "an error carries a message for the user"


@pytest.mark.parametrize("status, error_code, power_state, new_status, new_error", [
    ("running", None, "shutoff", "stopped", None),
    ("running", None, "paused", "paused", None),
    ("stopped", None, "running", "running", None),
    ("paused", None, "blocked", "running", None),
    ("running", None, "crashed", "error", "guest_crashed"),
    ("stopped", None, "missing", "error", "domain_missing"),
    ("error", "domain_missing", "running", "running", None),
    ("error", "guest_crashed", "shutoff", "stopped", None),
    ("error", "guest_crashed", "missing", "error", "domain_missing"),
    ("error", "domain_missing", "crashed", "error", "guest_crashed"),
])
def test_examples_of_changes(status: str, error_code: str | None, power_state: str,
                             new_status: str, new_error: str | None) -> None:
    decision = reconciled(status, error_code, power_state)
    assert decision is not None
    assert decision[0] == new_status
    assert (decision[1][0] if decision[1] else None) == new_error


@pytest.mark.parametrize("status, error_code, power_state", [
    ("running", None, "running"), ("running", None, "blocked"), ("paused", None, "paused"),
    ("paused", None, "suspended"), ("stopped", None, "shutoff"),
    ("error", "guest_crashed", "crashed"), ("error", "domain_missing", "missing"),
])
def test_no_change_gives_none(status: str, error_code: str | None, power_state: str) -> None:
    assert reconciled(status, error_code, power_state) is None


@pytest.mark.parametrize("status, error_code", IDLE)
@pytest.mark.parametrize("power_state", POWER_STATES)
def test_reconciling_twice_changes_nothing_more(status: str, error_code: str | None,
                                                power_state: str) -> None:
    first = reconciled(status, error_code, power_state)
    if first is not None:
        new_status, error = first
        assert reconciled(new_status, error[0] if error else None, power_state) is None
