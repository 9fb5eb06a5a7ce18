"""Power actions against the state table, the hold, events, and reconciliation on the test driver."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from src.app import App
from src.config import Config
from src.vocabulary import POWER_ACTIONS
from tests.conftest import AppFactory
from tests.integration.test_vm_failures import one_build_in_progress, setup_image
from tests.support import Client

ALL_ACTIONS = [*POWER_ACTIONS, "delete"]
SPEC = {"cpu": 1, "ram": 256, "image_name": "base"}


def create(client: Client, name: str) -> dict[str, Any]:
    vm = client.post("/v1/vms", {"name": name, **SPEC}).body
    assert client.wait_task(vm["task"]["id"])["status"] == "succeeded"
    return client.get(f"/v1/vms/{vm['id']}").body


def act(client: Client, vm_id: str, action: str, body: Any = None) -> dict[str, Any]:
    """Run an action to its end; return the task."""
    if action == "delete":
        reply = client.delete(f"/v1/vms/{vm_id}")
    else:
        reply = client.post(f"/v1/vms/{vm_id}/{action}", body)
    assert reply.status == 202, reply.body
    assert reply.headers["Location"] == f"/v1/tasks/{reply.body['id']}"
    return client.wait_task(reply.body["id"])


def eventually(probe: Callable[[], bool], deadline_s: float = 10) -> None:
    deadline = time.monotonic() + deadline_s
    while not probe():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        time.sleep(0.05)


def sweep_only(make_app: AppFactory, config: Config, interval_s: float) -> tuple[App, Client]:
    """An app that learns of host changes only from its sweep, with the base image registered."""
    app = make_app(replace(config, lifecycle_events=False, reconcile_interval_s=interval_s))
    client = Client(app)
    setup_image(config, client)
    return app, client


def bring_to(app: App, client: Client, vm_id: str, status: str) -> None:
    """Put a fresh running VM into status through the API (error: its domain vanishes)."""
    if status == "paused":
        act(client, vm_id, "pause")
    elif status == "stopped":
        act(client, vm_id, "stop")
    elif status == "error-domain-kept":
        with app.db.write() as conn:  # as a failed action of the past would leave it
            conn.execute("UPDATE vms SET status='error', error_code='start_failed' WHERE id=?",
                         (vm_id,))
        app.hypervisor.force_off(vm_id)
    elif status == "error-domain-gone":
        app.hypervisor.force_off(vm_id)
        app.hypervisor.undefine(vm_id)
        eventually(lambda: client.get(f"/v1/vms/{vm_id}").body["status"] == "error")
    assert client.get(f"/v1/vms/{vm_id}").body["status"] == status.split("-")[0]


EXPECTED_AFTER = {"start": "running", "shutdown": "stopped", "stop": "stopped",
                  "reboot": "running", "pause": "paused", "resume": "running"}
ALLOWED = {"running": {"shutdown", "stop", "reboot", "pause", "delete"},
           "paused": {"resume", "stop", "delete"}, "stopped": {"start", "delete"},
           "error-domain-kept": {"start", "delete"}, "error-domain-gone": {"delete"}}


@pytest.mark.parametrize("status", list(ALLOWED))
@pytest.mark.parametrize("action", ALL_ACTIONS)
def test_every_action_from_every_status(app: App, client: Client, base_image: dict,
                                        status: str, action: str) -> None:
    vm_id = create(client, "matrix")["id"]
    bring_to(app, client, vm_id, status)
    shown = client.get(f"/v1/vms/{vm_id}").body
    assert set(shown["actions"]) == ALLOWED[status]
    listed = [vm["actions"] for vm in client.get("/v1/vms").body["vms"] if vm["id"] == vm_id]
    assert listed == [shown["actions"]]
    events_before = len(client.get(f"/v1/vms/{vm_id}/events").body["events"])

    if action not in ALLOWED[status]:
        reply = (client.delete(f"/v1/vms/{vm_id}") if action == "delete"
                 else client.post(f"/v1/vms/{vm_id}/{action}", None))
        assert reply.status == 409 and reply.error_code == "invalid_state", reply.body
        assert set(reply.body["error"]["details"]["allowed"]) == ALLOWED[status]
        assert client.get(f"/v1/vms/{vm_id}").body["status"] == shown["status"]
        assert len(client.get(f"/v1/vms/{vm_id}/events").body["events"]) == events_before
        return

    task = act(client, vm_id, action)
    assert task["status"] == "succeeded", task
    if action == "delete":
        assert client.get(f"/v1/vms/{vm_id}").status == 404
        assert app.hypervisor.power_state(vm_id) == "missing"
        return
    after = client.get(f"/v1/vms/{vm_id}").body
    assert after["status"] == EXPECTED_AFTER[action] and after["error"] is None
    assert after["power_state"] == {"running": "running", "paused": "paused",
                                    "stopped": "shutoff"}[after["status"]]
    assert app.hypervisor.autostart(vm_id) == (after["status"] != "stopped")
    if after["status"] == "stopped":  # (the test driver gives no VNC port at all; e2e checks it)
        assert after["console"]["vnc"] is None and after["ip_addresses"] == []


def test_actions_record_events_newest_first(client: Client, base_image: dict) -> None:
    vm_id = create(client, "evented")["id"]
    stop = client.post(f"/v1/vms/{vm_id}/stop", None)
    client.wait_task(stop.body["id"])
    act(client, vm_id, "start")
    events = client.get(f"/v1/vms/{vm_id}/events").body["events"]
    assert [event["action"] for event in events] == ["start", "stop", "create"]
    assert events[1]["request_id"] == stop.headers["X-Request-Id"]
    assert all(event["result"] == "succeeded" and event["finished_at"] for event in events)
    assert client.get(f"/v1/vms/{vm_id}/events?limit=1").body["events"][0]["action"] == "start"


def test_failed_action_keeps_status_and_records_the_error(make_app: AppFactory, config: Config) -> None:
    app, client = sweep_only(make_app, config, 3600)
    vm_id = create(client, "pausefail")["id"]
    app.hypervisor.suspend(vm_id)  # behind the API's back; no event, no sweep yet
    task = act(client, vm_id, "pause")
    assert task["status"] == "failed" and task["error"]["code"] == "pause_failed"
    event = client.get(f"/v1/vms/{vm_id}/events").body["events"][0]
    assert event["result"] == "failed" and event["error"]["code"] == "pause_failed"
    # The VM is re-checked when a task ends: the host's truth (paused) wins, without events.
    eventually(lambda: client.get(f"/v1/vms/{vm_id}").body["status"] == "paused")


def test_action_bodies_are_validated(client: Client, base_image: dict) -> None:
    vm_id = create(client, "bodies")["id"]
    for action, body in [("shutdown", {"timeout": 0}), ("shutdown", {"force": "yes"}),
                         ("shutdown", {"hard": True}), ("reboot", {"timeout": 5}),
                         ("stop", {"force": True}), ("shutdown", [])]:
        reply = client.post(f"/v1/vms/{vm_id}/{action}", body)
        assert reply.status == 400 and reply.error_code == "validation_failed", (action, body)
    assert client.get(f"/v1/vms/{vm_id}/events").body["events"][0]["action"] == "create"
    assert client.post("/v1/vms/nope/start", None).error_code == "vm_not_found"
    reply = client.request("GET", f"/v1/vms/{vm_id}/stop")
    assert reply.status == 405 and reply.headers["Allow"] == "POST"


def test_hard_reboot_and_graceful_shutdown(client: Client, base_image: dict) -> None:
    vm_id = create(client, "reboots")["id"]
    assert act(client, vm_id, "reboot", {"hard": True})["status"] == "succeeded"
    task = act(client, vm_id, "shutdown", {"timeout": 5, "force": True})
    assert task["status"] == "succeeded"
    assert client.get(f"/v1/vms/{vm_id}").body["status"] == "stopped"


def test_concurrent_actions_one_runs_the_other_is_refused(app: App, client: Client,
                                                          base_image: dict) -> None:
    vm_id = create(client, "racy")["id"]
    replies: list[Any] = []
    start = threading.Barrier(12)

    def racer() -> None:  # pause can succeed once: later ones find the VM busy or paused
        start.wait()
        replies.append(client.post(f"/v1/vms/{vm_id}/pause", None))

    threads = [threading.Thread(target=racer) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    accepted = [reply for reply in replies if reply.status == 202]
    assert len(accepted) == 1, [(r.status, r.error_code) for r in replies]
    assert {reply.error_code for reply in replies if reply.status != 202} <= {"vm_busy",
                                                                             "invalid_state"}
    client.wait_task(accepted[0].body["id"])
    with app.db.read() as conn:  # exactly one action task ever existed besides the create
        actions = [row[0] for row in conn.execute("SELECT action FROM tasks WHERE vm_id=?", (vm_id,))]
    assert sorted(actions) == sorted(["create", accepted[0].body["action"]])


def test_busy_vm_refuses_actions_with_the_holding_task(make_app: AppFactory,
                                                       config: Config) -> None:
    _app, client, gated, first = one_build_in_progress(make_app, config)
    for action in POWER_ACTIONS:
        reply = client.post(f"/v1/vms/{first['id']}/{action}", None)
        assert reply.status == 409 and reply.error_code == "vm_busy"
        assert reply.body["error"]["details"]["action"] == "create"
    gated.gate.set()
    client.wait_task(first["task"]["id"])


def test_events_bring_outside_changes_in(app: App, client: Client, base_image: dict) -> None:
    vm_id = create(client, "outside")["id"]
    status = lambda: client.get(f"/v1/vms/{vm_id}").body
    app.hypervisor.force_off(vm_id)  # as `virsh destroy` would
    eventually(lambda: status()["status"] == "stopped")
    assert app.hypervisor.autostart(vm_id) is False
    app.hypervisor.start(vm_id)  # as `virsh start` would
    eventually(lambda: status()["status"] == "running")
    app.hypervisor.suspend(vm_id)
    eventually(lambda: status()["status"] == "paused")
    app.hypervisor.force_off(vm_id)
    app.hypervisor.undefine(vm_id)  # as `virsh undefine` would
    eventually(lambda: status()["error"] is not None)
    shown = status()
    assert shown["status"] == "error" and shown["error"]["code"] == "domain_missing"
    assert shown["actions"] == ["delete"]
    assert act(client, vm_id, "delete")["status"] == "succeeded"


def test_sweep_catches_changes_without_events(make_app: AppFactory, config: Config) -> None:
    app, client = sweep_only(make_app, config, 3600)
    vm_id = create(client, "swept")["id"]
    app.hypervisor.force_off(vm_id)
    time.sleep(0.2)  # give an (absent) event time to arrive: nothing may change by itself
    assert client.get(f"/v1/vms/{vm_id}").body["status"] == "running"
    assert client.get(f"/v1/vms/{vm_id}").body["power_state"] == "shutoff"
    assert app.reconciler.sweep().changed == 1
    assert client.get(f"/v1/vms/{vm_id}").body["status"] == "stopped"
    app.hypervisor.undefine(vm_id)
    assert app.reconciler.sweep().changed == 1
    assert client.get(f"/v1/vms/{vm_id}").body["error"]["code"] == "domain_missing"
    assert app.reconciler.sweep().changed == 0


def test_short_sweep_interval_reconciles_by_itself(make_app: AppFactory, config: Config) -> None:
    app, client = sweep_only(make_app, config, 0.2)
    vm_id = create(client, "ticking")["id"]
    app.hypervisor.suspend(vm_id)
    eventually(lambda: client.get(f"/v1/vms/{vm_id}").body["status"] == "paused")


def test_stuck_task_times_out_and_its_build_is_undone(make_app: AppFactory, config: Config) -> None:
    app, client, gated, first = one_build_in_progress(
        make_app, replace(config, task_timeout_s=1, reconcile_interval_s=3600))
    time.sleep(1.1)
    assert app.reconciler.fail_overdue_tasks() == 1
    task = client.get(f"/v1/tasks/{first['task']['id']}").body
    assert task["status"] == "failed" and task["error"]["code"] == "task_timeout"
    vm = client.get(f"/v1/vms/{first['id']}").body
    assert vm["status"] == "error" and vm["error"]["code"] == "task_timeout"
    assert vm["actions"] == ["delete"]
    gated.gate.set()  # the stuck build wakes up late: it must undo itself, not resurrect
    eventually(lambda: not (config.instances_dir / first["id"]).exists())
    assert app.hypervisor.power_state(first["id"]) == "missing"
    assert client.get(f"/v1/vms/{first['id']}").body["status"] == "error"


def test_restart_ends_an_interrupted_power_action(make_app: AppFactory, config: Config,
                                                  base_image: dict, app: App,
                                                  client: Client) -> None:
    vm_id = create(client, "restarted")["id"]
    with app.db.write() as conn:  # as if the server died while a stop was queued
        conn.execute("INSERT INTO tasks (id, vm_id, action, status, created_at) VALUES "
                     "('00000000-0000-4000-8000-00000000000a', ?, 'stop', 'queued', '2026-01-01')",
                     (vm_id,))
    app.close()
    again = Client(make_app(config))
    task = again.get("/v1/tasks/00000000-0000-4000-8000-00000000000a").body
    assert task["status"] == "failed" and task["error"]["code"] == "interrupted"
    assert again.get(f"/v1/vms/{vm_id}").body["actions"] != []


def test_console_tail_and_stats(app: App, client: Client, config: Config,
                                base_image: dict) -> None:
    vm_id = create(client, "watched")["id"]
    assert client.get(f"/v1/vms/{vm_id}/console").body == ""
    (config.instances_dir / vm_id / "console.log").write_bytes(
        b"boot\r\nIAAS-TINY-BOOT-OK\r\nlease 10.0.0.5\r\n\xff\xfe bad bytes\r\n")
    reply = client.get(f"/v1/vms/{vm_id}/console?tail=2")
    assert reply.headers["Content-Type"].startswith("text/plain")
    assert reply.body == "lease 10.0.0.5\n\ufffd\ufffd bad bytes\n"
    assert client.get(f"/v1/vms/{vm_id}/console?tail=0").error_code == "invalid_query"
    stats = client.get(f"/v1/vms/{vm_id}/stats").body
    assert stats["vm_id"] == vm_id and stats["cpu"]["vcpus"] == 1 and stats["window_s"] > 0
    act(client, vm_id, "stop")
    reply = client.get(f"/v1/vms/{vm_id}/stats")
    assert reply.status == 409 and reply.error_code == "vm_not_running"
