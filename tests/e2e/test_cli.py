"""`iaas` against a server on qemu:///system: a real guest created, seen booting on its console,
and deleted, by command."""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import libvirt  # type: ignore[import-untyped]
import pytest

from scripts.harness.host import domain_exists
from src.app import App
from tests.cli.conftest import Iaas
from tests.e2e.conftest import register_tiny_image, served
from tests.support import SERVER_TOKENS

BOOT_DEADLINE_S = 120


@pytest.fixture
def iaas(e2e_app: App, tmp_path: Path) -> Iterator[Iaas]:
    with served(e2e_app) as client:
        register_tiny_image(client)
        yield Iaas(client.base_url, SERVER_TOKENS[client.base_url], tmp_path)


def test_a_real_guest_by_command_create_running_console_delete(
        iaas: Iaas, system_conn: libvirt.virConnect) -> None:
    made = iaas("vm", "create", "cli-e2e", "--image", "tiny-linux", "--cpu", "1", "--ram", "256",
                "--wait", timeout=180)
    assert made.returncode == 0, made.stderr
    vm = iaas.json("vm", "show", "cli-e2e")
    assert vm["status"] == "running" and vm["power_state"] == "running"
    assert domain_exists(system_conn, vm["id"])
    deadline = time.monotonic() + BOOT_DEADLINE_S
    while "IAAS-TINY-BOOT-OK" not in (console := iaas("vm", "console", "cli-e2e")).stdout:
        assert time.monotonic() < deadline, console.stdout[-2000:]
        time.sleep(2)
    gone = iaas("vm", "delete", "cli-e2e", "--wait", timeout=180)
    assert gone.returncode == 0 and "succeeded" in gone.stdout, gone.stderr
    assert not domain_exists(system_conn, vm["id"])
    assert iaas("vm", "show", "cli-e2e").returncode == 1
