"""The VM lifecycle on a real guest under qemu:///system: every action from every status, graceful
shutdown of a guest that ignores ACPI, changes made behind the API's back, concurrent actions.

libvirt itself (through our own connection, or `virsh`) is the referee: the API's word alone
proves nothing here. tests/integration/test_lifecycle.py runs the same matrix on the test driver.
"""
from __future__ import annotations

import secrets
import shutil
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import libvirt  # type: ignore[import-untyped]
import pytest

from scripts.harness.host import REPO, SYSTEM_URI, TINY_IMAGE_NAME, domain_exists
from src.app import App
from src.config import Config
from tests.e2e.conftest import E2eAppFactory, register_tiny_image, served
from tests.e2e.http_client import HttpClient
from tests.support import Reply

DEAF_IMAGE = REPO / "images" / "tiny-linux-noacpi.qcow2"
DEAF_IMAGE_NAME = "tiny-linux-noacpi"
ACTIONS = ("start", "shutdown", "stop", "reboot", "pause", "resume", "delete")
# The table as the README states it, written out here (not imported from src) so that a change
# to src/services/rules/lifecycle.py cannot make these tests agree with it by construction.
ALLOWED: dict[str, set[str]] = {
    "running": {"shutdown", "stop", "reboot", "pause", "delete"},
    "paused": {"resume", "stop", "delete"},
    "stopped": {"start", "delete"},
    "error-domain-kept": {"start", "delete"},
    "error-domain-gone": {"delete"},
    "building": set(),
    "deleting": set(),
}
# What libvirt must report for a VM in each status: (API power_state, virDomainState).
POWER: dict[str, tuple[str, int]] = {
    "running": ("running", libvirt.VIR_DOMAIN_RUNNING),
    "paused": ("paused", libvirt.VIR_DOMAIN_PAUSED),
    "stopped": ("shutoff", libvirt.VIR_DOMAIN_SHUTOFF),
    "error-domain-kept": ("shutoff", libvirt.VIR_DOMAIN_SHUTOFF),
}
BOOT_OK = "IAAS-TINY-BOOT-OK"
ACPI_ON = "IAAS-ACPI-POWEROFF"  # acpid runs: from now on the power button powers off
ACPI_DEAF = "IAAS-ACPI-IGNORED"  # the deaf guest's boot got as far as acpid would have
POWER_BUTTON = "IAAS-ACPI-POWER-BUTTON"  # the guest's acpid saw the button and powers off
BOOT_DEADLINE_S = 60.0  # a TCG boot takes ~3 s
# With events on, the sweep runs every 30 s (the default): a change seen within this much can
# only have come through a libvirt event.
RECONCILE_DEADLINE_S = 10.0
POLL_S = 0.2
FORCE_AFTER_S = 5


# ---- helpers -------------------------------------------------------------------------------


def eventually(probe: Callable[[], Any], deadline_s: float, what: str) -> Any:
    """Poll probe until it returns a truthy value, or fail naming what never happened."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not reached within {deadline_s} s"
        time.sleep(POLL_S)


def console_log(config: Config, vm_id: str) -> Path:
    return config.instances_dir / vm_id / "console.log"


def console_text(config: Config, vm_id: str) -> str:
    """The whole serial log (the API's tail could miss an earlier boot's lines)."""
    path = console_log(config, vm_id)
    return path.read_text(errors="replace") if path.exists() else ""


def wait_console(config: Config, vm_id: str, marker: str, count: int = 1) -> str:
    """Wait until marker appears count times in the serial log; return the log."""
    def seen() -> str:
        text = console_text(config, vm_id)
        return text if text.count(marker) >= count else ""

    found: str = eventually(seen, BOOT_DEADLINE_S, f"{marker} x{count} in the console of {vm_id}")
    return found


def wait_acpid(client: HttpClient, vm_id: str, marker: str = ACPI_ON) -> None:
    """A guest only reacts to the power button once its acpid runs; the API's console says so."""
    eventually(lambda: marker in client.get(f"/v1/vms/{vm_id}/console?tail=200").body,
               BOOT_DEADLINE_S, f"{marker} in GET /v1/vms/{vm_id}/console")


def create_vm(client: HttpClient, image_name: str) -> dict[str, Any]:
    reply = client.post("/v1/vms", {"name": f"e2e-{secrets.token_hex(4)}", "cpu": 1, "ram": 256,
                                    "image_name": image_name})
    assert reply.status == 202, reply.body
    task = client.wait_task(reply.body["task"]["id"])
    assert task["status"] == "succeeded", task
    vm: dict[str, Any] = client.get(f"/v1/vms/{reply.body['id']}").body
    return vm


def request(client: HttpClient, vm_id: str, action: str, body: Any = None) -> Reply:
    if action == "delete":
        return client.delete(f"/v1/vms/{vm_id}")
    return client.post(f"/v1/vms/{vm_id}/{action}", body)


def act(client: HttpClient, vm_id: str, action: str, body: Any = None) -> dict[str, Any]:
    """Ask for an action (it must be accepted) and return its task once finished."""
    reply = request(client, vm_id, action, body)
    assert reply.status == 202, (action, reply.body)
    assert reply.body["action"] == action and reply.body["vm_id"] == vm_id
    return client.wait_task(reply.body["id"])


def act_ok(client: HttpClient, vm_id: str, action: str, body: Any = None) -> dict[str, Any]:
    task = act(client, vm_id, action, body)
    assert task["status"] == "succeeded", (action, task)
    return task


def task_seconds(task: dict[str, Any]) -> float:
    """How long the worker ran the task, by the task's own timestamps."""
    started = datetime.fromisoformat(task["started_at"])
    finished = datetime.fromisoformat(task["finished_at"])
    return (finished - started).total_seconds()


def event_actions(client: HttpClient, vm_id: str) -> list[str]:
    return [event["action"] for event in client.get(f"/v1/vms/{vm_id}/events").body["events"]]


def run_id(conn: libvirt.virConnect, vm_id: str) -> int:
    """The id libvirt gave the domain's current QEMU process (-1 when off); a new one per start.

    A fresh lookup: a virDomain handle keeps the id it was looked up with.
    """
    run: int = conn.lookupByUUIDString(vm_id).ID()
    return run


def vnc_of(domain: libvirt.virDomain) -> str:
    """The VNC address QEMU really listens on, from the live domain XML."""
    graphics = ET.fromstring(domain.XMLDesc(0)).find("./devices/graphics[@type='vnc']")
    assert graphics is not None
    port = int(graphics.get("port", "-1"))
    assert port > 0, "a running domain has an autoport"
    return f"{graphics.get('listen')}:{port}"


def expect_vm(client: HttpClient, conn: libvirt.virConnect, vm_id: str,
              status: str) -> dict[str, Any]:
    """The API and libvirt agree that the idle VM is in status (a key of ALLOWED)."""
    vm: dict[str, Any] = client.get(f"/v1/vms/{vm_id}").body
    assert vm["status"] == status.split("-")[0], vm
    assert vm["task"] is None, vm
    assert set(vm["actions"]) == ALLOWED[status], vm
    if status == "error-domain-gone":
        assert vm["power_state"] == "missing" and not domain_exists(conn, vm_id)
        assert vm["error"] is not None and vm["error"]["code"] == "domain_missing", vm
        assert vm["console"]["vnc"] is None
        return vm
    power_state, libvirt_state = POWER[status]
    domain = conn.lookupByUUIDString(vm_id)
    assert vm["power_state"] == power_state, vm
    assert domain.state()[0] == libvirt_state, domain.state()
    up = status in ("running", "paused")
    assert bool(domain.isActive()) == up
    assert vm["console"]["vnc"] == (vnc_of(domain) if up else None), vm
    if status == "error-domain-kept":
        assert vm["error"] is not None and vm["error"]["code"] == "start_failed", vm
    else:
        assert vm["error"] is None, vm
        assert bool(domain.autostart()) == up  # it comes back with the host only if it was up
    if not up:
        assert vm["ip_addresses"] == []
    return vm


def settle(client: HttpClient, conn: libvirt.virConnect, vm_id: str, status: str,
           deadline_s: float) -> dict[str, Any]:
    """Poll until expect_vm passes (reconciliation is asynchronous); fail with its last word."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return expect_vm(client, conn, vm_id, status)
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(POLL_S)


def refuse_all_but(client: HttpClient, conn: libvirt.virConnect, vm_id: str,
                   status: str) -> None:
    """Every action the table forbids in status is 409 invalid_state and changes nothing."""
    before = client.get(f"/v1/vms/{vm_id}").body
    events_before = client.get(f"/v1/vms/{vm_id}/events").body
    state_before = (conn.lookupByUUIDString(vm_id).state() if domain_exists(conn, vm_id)
                    else None)
    refused = [action for action in ACTIONS if action not in ALLOWED[status]]
    assert refused, f"the table forbids nothing in {status}"
    for action in refused:
        reply = request(client, vm_id, action)
        assert reply.status == 409 and reply.error_code == "invalid_state", (action, reply.body)
        details = reply.body["error"]["details"]
        assert set(details["allowed"]) == ALLOWED[status], (action, details)
        assert details["status"] == before["status"] and details["action"] == action
    after = client.get(f"/v1/vms/{vm_id}").body
    for key in ("status", "error", "power_state", "actions", "console"):
        assert after[key] == before[key], (key, before, after)
    assert client.get(f"/v1/vms/{vm_id}/events").body == events_before  # no task was recorded
    assert (conn.lookupByUUIDString(vm_id).state() if domain_exists(conn, vm_id)
            else None) == state_before


def delete_and_check_gone(client: HttpClient, conn: libvirt.virConnect, config: Config,
                          vm_id: str) -> None:
    act_ok(client, vm_id, "delete")
    gone = client.get(f"/v1/vms/{vm_id}")
    assert gone.status == 404 and gone.error_code == "vm_not_found"
    assert not domain_exists(conn, vm_id)
    assert not (config.instances_dir / vm_id).exists()


def set_status_in_db(app: App, vm_id: str, status: str, error_code: str | None = None) -> None:
    """Put a row where a past operation (or a crash mid-task) would have left it."""
    with app.db.write() as conn:
        changed = conn.execute("UPDATE vms SET status=?, error_code=? WHERE id=?",
                               (status, error_code, vm_id)).rowcount
    assert changed == 1


def virsh(*args: str) -> None:
    """Change the host behind the API's back, as an operator at a shell would."""
    result = subprocess.run(["virsh", "-c", SYSTEM_URI, *args], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, f"virsh {' '.join(args)}: {result.stderr}"


def race(calls: list[Callable[[], Reply]]) -> list[Reply]:
    """Run the calls at once from threads released together; every call must answer."""
    barrier = threading.Barrier(len(calls))
    replies: list[Reply | None] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        replies[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    answered = [reply for reply in replies if reply is not None]
    assert len(answered) == len(calls), "a racing call raised (see the thread's traceback)"
    return answered


@pytest.fixture
def deaf_image(live_client: HttpClient, e2e_config: Config) -> None:
    """Register the guest that ignores the ACPI power button (a copy: libvirt chowns bases)."""
    assert DEAF_IMAGE.is_file(), (f"{DEAF_IMAGE} is missing; build it with "
                                  f"`TINY_ACPI=ignore scripts/build_tiny_image.sh {DEAF_IMAGE}`")
    shutil.copyfile(DEAF_IMAGE, e2e_config.images_dir / DEAF_IMAGE.name)
    reply = live_client.post("/v1/images", {"name": DEAF_IMAGE_NAME, "file": DEAF_IMAGE.name,
                                            "format": "qcow2"})
    assert reply.status == 201, reply.body


# ---- 1. the state table on the real guest ----------------------------------------------------


def test_every_action_from_every_status_on_the_acpi_guest(
        live_client: HttpClient, e2e_app: App, e2e_config: Config,
        system_conn: libvirt.virConnect) -> None:
    """One guest walks every status; in each, the refused actions change nothing and the allowed
    ones really happen on the host (graceful ones through the guest's own acpid)."""
    register_tiny_image(live_client)
    vm_id = create_vm(live_client, TINY_IMAGE_NAME)["id"]
    domain = system_conn.lookupByUUIDString(vm_id)
    expect_vm(live_client, system_conn, vm_id, "running")
    refuse_all_but(live_client, system_conn, vm_id, "running")
    first_qemu = run_id(system_conn, vm_id)

    # ACPI reboot: acpid powers off, libvirt resets the same QEMU process, so the serial log
    # (append='off' applies per QEMU start) is appended to, not rewritten.
    wait_acpid(live_client, vm_id)
    act_ok(live_client, vm_id, "reboot")
    text = wait_console(e2e_config, vm_id, BOOT_OK, 2)
    assert text.count(POWER_BUTTON) == 1 and text.find(POWER_BUTTON) < text.rfind(BOOT_OK), text
    assert run_id(system_conn, vm_id) == first_qemu
    expect_vm(live_client, system_conn, vm_id, "running")

    # Hard reboot: a reset, the guest never hears of it (no power button), and boots again.
    act_ok(live_client, vm_id, "reboot", {"hard": True})
    text = wait_console(e2e_config, vm_id, BOOT_OK, 3)
    assert text.count(POWER_BUTTON) == 1, text
    assert run_id(system_conn, vm_id) == first_qemu
    expect_vm(live_client, system_conn, vm_id, "running")

    act_ok(live_client, vm_id, "pause")
    assert domain.state() == [libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_USER]
    expect_vm(live_client, system_conn, vm_id, "paused")
    refuse_all_but(live_client, system_conn, vm_id, "paused")
    act_ok(live_client, vm_id, "resume")
    expect_vm(live_client, system_conn, vm_id, "running")

    act_ok(live_client, vm_id, "pause")
    act_ok(live_client, vm_id, "stop")  # from paused: a power-off, not a request
    assert domain.state() == [libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED]
    expect_vm(live_client, system_conn, vm_id, "stopped")
    refuse_all_but(live_client, system_conn, vm_id, "stopped")

    # Start: a new QEMU process, and the serial log starts over.
    act_ok(live_client, vm_id, "start")
    assert run_id(system_conn, vm_id) not in (-1, first_qemu)
    expect_vm(live_client, system_conn, vm_id, "running")
    wait_acpid(live_client, vm_id)
    text = console_text(e2e_config, vm_id)
    assert text.count(BOOT_OK) == 1 and POWER_BUTTON not in text, text

    # Graceful shutdown: the guest powers itself off on the button (libvirt says "shutdown").
    act_ok(live_client, vm_id, "shutdown", {"timeout": 60})
    assert domain.state() == [libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN]
    assert POWER_BUTTON in console_text(e2e_config, vm_id)
    expect_vm(live_client, system_conn, vm_id, "stopped")

    # error with its domain kept, as a failed operation of the past leaves it: start recovers.
    set_status_in_db(e2e_app, vm_id, "error", "start_failed")
    expect_vm(live_client, system_conn, vm_id, "error-domain-kept")
    refuse_all_but(live_client, system_conn, vm_id, "error-domain-kept")
    act_ok(live_client, vm_id, "start")
    expect_vm(live_client, system_conn, vm_id, "running")

    # building and deleting belong to a task: nothing, not even DELETE, is allowed. (Rows only:
    # with a real task holding the VM the answer is vm_busy, see the concurrency test.)
    for status in ("building", "deleting"):
        set_status_in_db(e2e_app, vm_id, status)
        shown = live_client.get(f"/v1/vms/{vm_id}").body
        assert (shown["status"], shown["actions"]) == (status, [])
        refuse_all_but(live_client, system_conn, vm_id, status)
        assert domain.isActive()
        set_status_in_db(e2e_app, vm_id, "running")

    assert event_actions(live_client, vm_id) == [
        "start", "shutdown", "start", "stop", "pause", "resume", "pause", "reboot", "reboot",
        "create"]
    events = live_client.get(f"/v1/vms/{vm_id}/events").body["events"]
    assert all(event["result"] == "succeeded" and event["error"] is None for event in events)
    delete_and_check_gone(live_client, system_conn, e2e_config, vm_id)


@pytest.mark.parametrize("status", ["running", "paused", "stopped", "error-domain-kept",
                                    "error-domain-gone"])
def test_delete_from_every_status(status: str, live_client: HttpClient, e2e_app: App,
                                  e2e_config: Config, system_conn: libvirt.virConnect) -> None:
    """DELETE is allowed from every idle status and leaves no domain, folder or row."""
    register_tiny_image(live_client)
    vm = create_vm(live_client, TINY_IMAGE_NAME)
    vm_id = vm["id"]
    if status == "paused":
        act_ok(live_client, vm_id, "pause")
    elif status in ("stopped", "error-domain-kept"):
        act_ok(live_client, vm_id, "stop")
        if status == "error-domain-kept":
            set_status_in_db(e2e_app, vm_id, "error", "start_failed")
    elif status == "error-domain-gone":
        virsh("destroy", vm_id)  # the domain's name is iaas-<id>; virsh takes the UUID too
        virsh("undefine", vm_id)
    settle(live_client, system_conn, vm_id, status, RECONCILE_DEADLINE_S)
    refuse_all_but(live_client, system_conn, vm_id, status)
    delete_and_check_gone(live_client, system_conn, e2e_config, vm_id)


# ---- 2. a guest that ignores the power button ------------------------------------------------


@pytest.mark.usefixtures("deaf_image")
def test_shutdown_of_a_guest_ignoring_acpi(live_client: HttpClient, e2e_config: Config,
                                           system_conn: libvirt.virConnect) -> None:
    """Without force the VM keeps running and the task says why; with force it goes off, but
    only once the timeout has passed."""
    vm_id = create_vm(live_client, DEAF_IMAGE_NAME)["id"]
    domain = system_conn.lookupByUUIDString(vm_id)
    wait_acpid(live_client, vm_id, ACPI_DEAF)

    started = time.monotonic()
    task = act(live_client, vm_id, "shutdown", {"timeout": FORCE_AFTER_S})
    elapsed = time.monotonic() - started
    assert task["status"] == "failed", task
    assert task["error"]["code"] == "shutdown_timeout", task
    assert elapsed >= FORCE_AFTER_S and task_seconds(task) >= FORCE_AFTER_S
    assert domain.isActive() and domain.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    expect_vm(live_client, system_conn, vm_id, "running")  # status kept, no error on the VM
    event = live_client.get(f"/v1/vms/{vm_id}/events").body["events"][0]
    assert (event["action"], event["result"]) == ("shutdown", "failed")
    assert event["error"]["code"] == "shutdown_timeout"

    started = time.monotonic()
    task = act_ok(live_client, vm_id, "shutdown", {"timeout": FORCE_AFTER_S, "force": True})
    elapsed = time.monotonic() - started
    assert task_seconds(task) >= FORCE_AFTER_S, task
    assert elapsed < FORCE_AFTER_S + 15, elapsed  # after the timeout, not the default 60 s
    assert not domain.isActive()
    assert domain.state() == [libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED]
    expect_vm(live_client, system_conn, vm_id, "stopped")
    assert event_actions(live_client, vm_id) == ["shutdown", "shutdown", "create"]
    delete_and_check_gone(live_client, system_conn, e2e_config, vm_id)


# ---- 3. changes behind the API's back ----------------------------------------------------------


@pytest.mark.parametrize("events", [True, False], ids=["events", "sweep-only"])
def test_virsh_behind_the_api_is_reconciled(events: bool, make_e2e_app: E2eAppFactory,
                                            e2e_config: Config,
                                            system_conn: libvirt.virConnect) -> None:
    """destroy, start and undefine done with virsh show up in the API: through libvirt's events
    (the 30 s sweep is too slow for the deadline), or with events off through a 1 s sweep."""
    config = (e2e_config if events
              else replace(e2e_config, lifecycle_events=False, reconcile_interval_s=1.0))
    with served(make_e2e_app(config)) as client:
        register_tiny_image(client)
        vm = create_vm(client, TINY_IMAGE_NAME)
        vm_id = vm["id"]
        name = f"iaas-{vm_id}"  # the domain's name, as an operator sees it in `virsh list`

        virsh("destroy", name)
        settle(client, system_conn, vm_id, "stopped", RECONCILE_DEADLINE_S)
        virsh("start", name)
        settle(client, system_conn, vm_id, "running", RECONCILE_DEADLINE_S)
        virsh("destroy", name)
        settle(client, system_conn, vm_id, "stopped", RECONCILE_DEADLINE_S)
        virsh("undefine", name)
        settle(client, system_conn, vm_id, "error-domain-gone", RECONCILE_DEADLINE_S)

        assert event_actions(client, vm_id) == ["create"]  # the host's doings are not actions
        refuse_all_but(client, system_conn, vm_id, "error-domain-gone")
        delete_and_check_gone(client, system_conn, config, vm_id)


# ---- 4. concurrent actions on one VM ----------------------------------------------------------


@pytest.mark.usefixtures("deaf_image")
def test_concurrent_actions_exactly_one_runs(live_client: HttpClient, e2e_config: Config,
                                             system_conn: libvirt.virConnect) -> None:
    """The hold is taken before the 202: of racing requests one runs, the rest are vm_busy for
    as long as it runs (the deaf guest makes a forced shutdown last its full timeout)."""
    vm_id = create_vm(live_client, DEAF_IMAGE_NAME)["id"]
    wait_acpid(live_client, vm_id, ACPI_DEAF)
    body = {"timeout": FORCE_AFTER_S, "force": True}

    replies = race([partial(request, live_client, vm_id, "shutdown", body)] * 8)
    accepted = [reply for reply in replies if reply.status == 202]
    assert len(accepted) == 1, [(reply.status, reply.error_code) for reply in replies]
    holder = accepted[0].body

    def busy(reply: Reply) -> bool:
        details = reply.body["error"]["details"] if reply.status == 409 else {}
        return (reply.error_code == "vm_busy" and details.get("task_id") == holder["id"]
                and details.get("action") == "shutdown")

    assert all(busy(reply) for reply in replies if reply is not accepted[0]), \
        [reply.body for reply in replies]

    # While it runs, every action and DELETE is refused, allowed by the table or not.
    replies = race([partial(request, live_client, vm_id, action) for action in ACTIONS])
    assert all(busy(reply) for reply in replies), [reply.body for reply in replies]
    shown = live_client.get(f"/v1/vms/{vm_id}").body
    assert shown["task"]["id"] == holder["id"] and shown["actions"] == []
    assert live_client.get(f"/v1/tasks/{holder['id']}").body["status"] == "running", \
        "the shutdown ended before the refusals were checked: they prove nothing"

    task = live_client.wait_task(holder["id"])
    assert task["status"] == "succeeded" and task_seconds(task) >= FORCE_AFTER_S, task
    expect_vm(live_client, system_conn, vm_id, "stopped")
    events = live_client.get(f"/v1/vms/{vm_id}/events").body["events"]
    assert [event["action"] for event in events] == ["shutdown", "create"]
    assert events[0]["task_id"] == holder["id"]
    assert events[0]["request_id"] == accepted[0].headers["X-Request-Id"]
    delete_and_check_gone(live_client, system_conn, e2e_config, vm_id)
