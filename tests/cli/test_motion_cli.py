"""`iaas vm migrate` and `iaas host drain` against a live server with two test-driver hosts."""
from __future__ import annotations

from pathlib import Path

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
