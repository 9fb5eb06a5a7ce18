"""`iaas vm migrate`, `iaas host drain` and `iaas host evacuate` against a live server with two test-driver hosts."""
from __future__ import annotations

import shutil
from pathlib import Path

from src.app import App
from tests.cli.conftest import Iaas
from tests.support import host_xml

VM = ("--image", "base", "--cpu", "1", "--ram", "128")


def test_a_vm_migrates_and_a_host_drains_from_the_command_line(iaas: Iaas,
                                                                 tmp_path: Path) -> None:
    other = tmp_path / "other.xml"
    other.write_text(host_xml("iaas-test", cpus=8, memory_gib=16))
    assert iaas("host", "add", "other", f"test://{other}").returncode == 0
    for name in ("mover", "stayer"):
        made = iaas("vm", "create", name, *VM, "--host", "local", "--wait")
        assert made.returncode == 0, made.stderr

    refused = iaas("vm", "migrate", "mover", "--host", "other")  # test:/// has no address
    assert refused.returncode == 1 and "vm_not_migratable" in refused.stderr
    moved = iaas("vm", "migrate", "mover", "--host", "other", "--cold", "--wait")
    assert moved.returncode == 0, moved.stderr
    assert "migrate mover: succeeded" in moved.stderr and "other" in moved.stdout
    assert iaas.api("GET", "/v1/vms/mover").body["host"] == "other"

    assert iaas("vm", "stop", "stayer", "--wait").returncode == 0
    drained = iaas("host", "drain", "local")
    assert drained.returncode == 0, drained.stderr
    assert "moved" in drained.stdout
    task = iaas.api("GET", "/v1/hosts/local").body["drain"]["tasks"][0]["task_id"]
    assert iaas("task", "wait", task).returncode == 0
    shown = iaas("host", "show", "local")
    assert "done: 1/1 moved, 0 moving, 0 waiting" in shown.stdout, shown.stdout
    assert iaas.json("host", "show", "local")["enabled"] is False


def test_a_dead_host_is_evacuated_from_the_command_line(iaas: Iaas, app: App,
                                                         tmp_path: Path) -> None:
    dead = tmp_path / "dead.xml"
    dead.write_text(host_xml("iaas-test", cpus=8, memory_gib=16))
    assert iaas("host", "add", "dead", f"test://{dead}").returncode == 0
    for name in ("keeper", "orphan"):
        made = iaas("vm", "create", name, *VM, "--host", "dead", "--wait")
        assert made.returncode == 0, made.stderr
    refused = iaas("host", "evacuate", "dead")
    assert refused.returncode == 1 and "host_not_down" in refused.stderr
    orphan = iaas.api("GET", "/v1/vms/orphan").body["id"]
    shutil.rmtree(app.config.instances_dir / orphan)  # its disk lived only on the dead host
    app.hosts.get("dead").hypervisor.close()  # its libvirtd stops answering

    first = iaas("host", "evacuate", "dead", "--wait")
    assert first.returncode == 0, first.stderr
    assert "keeper" in first.stdout and "orphan" in first.stdout
    assert "disks_on_down_host" in first.stdout
    assert "keeper runs on local" in first.stderr
    assert iaas.api("GET", "/v1/vms/keeper").body["host"] == "local"
    second = iaas.json("host", "evacuate", "dead", "--rebuild-lost-disks", "--wait")
    assert [task["vm"] for task in second["tasks"]] == ["orphan"] and second["skipped"] == []
    assert iaas.api("GET", "/v1/vms/orphan").body["host"] == "local"
    shown = iaas("host", "show", "dead")
    assert "done: 1/1 rebuilt, 0 under way; stale copies: 2" in shown.stdout, shown.stdout
