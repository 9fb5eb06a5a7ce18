"""What a user sees when the host is not ready: a stopped network, a guest QEMU paused itself."""
from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import libvirt  # type: ignore[import-untyped]
import libvirt_qemu  # type: ignore[import-untyped]

from scripts.harness.host import REPO, remove_network, start_isolated_network
from src.app import App
from src.config import Config
from tests.e2e.conftest import E2eAppFactory, register_tiny_image, served
from tests.e2e.http_client import HttpClient
from tests.support import fetch


def _create(client: HttpClient) -> dict[str, Any]:
    reply = client.post("/v1/vms", {"name": f"e2e-{secrets.token_hex(4)}", "cpu": 1, "ram": 128,
                                    "image_name": "tiny-linux"})
    assert reply.status == 202, reply.body
    return dict(reply.body)


def _stopped_network(conn: libvirt.virConnect) -> Any:
    net = start_isolated_network(conn, "iaas-e2e-off")
    conn.networkLookupByName(net.name).destroy()
    return net


def test_a_vm_on_a_stopped_network_fails_saying_how_to_fix_it(
        make_e2e_app: E2eAppFactory, e2e_config: Config,
        system_conn: libvirt.virConnect) -> None:
    net = _stopped_network(system_conn)
    try:
        app = make_e2e_app(replace(e2e_config, network=net.name))
        with served(app) as client:
            register_tiny_image(client)
            vm = _create(client)
            task = client.wait_task(vm["task"]["id"])
            assert task["error"]["code"] == "network_inactive", task
            assert f"virsh net-start {net.name}" in task["error"]["message"]
            assert client.get(f"/v1/vms/{vm['id']}").body["status"] == "error"
    finally:
        remove_network(system_conn, net)


def test_make_serve_starts_the_configured_network(tmp_path: Path, e2e_config: Config,
                                                  system_conn: libvirt.virConnect) -> None:
    net = _stopped_network(system_conn)
    # Port 0: the server says which port it got (one picked here could be another run's).
    env = {**os.environ, "IAAS_NETWORK": net.name, "IAAS_PORT": "0",
           "IAAS_DB_PATH": str(tmp_path / "iaas.db"), "IAAS_DOMAIN_TYPE": "qemu",
           "IAAS_IMAGES_DIR": str(e2e_config.images_dir),
           "IAAS_INSTANCES_DIR": str(e2e_config.instances_dir),
           "IAAS_ADMIN_TOKEN_FILE": str(tmp_path / "token")}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(["make", "--no-print-directory", "serve"], cwd=REPO, env=env,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            said = re.search(r"serving on (http://127\.0\.0\.1:\d+)",
                             log.read_text(errors="replace"))
            try:
                if said and fetch(said[1], "GET", "/healthz").status == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "make serve never answered"
            time.sleep(0.5)
        network = system_conn.networkLookupByName(net.name)
        assert network.isActive() and network.autostart()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        output = log.read_text(errors="replace")
        remove_network(system_conn, net)
    assert f"network {net.name} was not running: started it and marked it autostart" in output


def test_a_guest_that_qemu_pauses_by_itself_is_an_error(e2e_app: App,
                                                        live_client: HttpClient,
                                                        system_conn: libvirt.virConnect) -> None:
    register_tiny_image(live_client)
    vm = _create(live_client)
    assert live_client.wait_task(vm["task"]["id"])["status"] == "succeeded"
    domain = system_conn.lookupByUUIDString(vm["id"])
    # What a broken KVM does to a guest: QEMU stops the CPUs without libvirt asking.
    libvirt_qemu.qemuMonitorCommand(domain, '{"execute": "stop"}', 0)
    deadline = time.monotonic() + 60
    while (shown := live_client.get(f"/v1/vms/{vm['id']}").body)["status"] != "error":
        assert time.monotonic() < deadline, shown
        e2e_app.reconciler.request_sweep()
        time.sleep(0.5)
    assert shown["error"]["code"] == "paused_by_hypervisor", shown
    assert "IAAS_DOMAIN_TYPE=qemu" in shown["error"]["message"]
    assert "libvirt's reason: unknown" in shown["error"]["message"]
    assert shown["power_state"] == "paused_by_hypervisor"
    started = live_client.post(f"/v1/vms/{vm['id']}/start", None)  # start lets it go on
    assert live_client.wait_task(started.body["id"])["status"] == "succeeded"
    assert live_client.get(f"/v1/vms/{vm['id']}").body["status"] == "running"
