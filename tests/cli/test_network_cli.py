"""`iaas network …` and `iaas vm create --network`, run for real against a live server on the
test driver."""
from __future__ import annotations

from tests.cli.conftest import Iaas

VM = ("--image", "base", "--cpu", "1", "--ram", "128")


def test_a_network_is_created_used_by_a_vm_and_deleted(iaas: Iaas) -> None:
    made = iaas("network", "create", "lab", "--host", "local", "--mode", "isolated",
                "--subnet", "10.252.0.0/24")
    assert made.returncode == 0, made.stderr
    assert "10.252.0.0/24" in made.stdout
    listed = iaas("network", "list")
    assert listed.returncode == 0 and "MANAGED" in listed.stdout and "lab" in listed.stdout
    assert "iaas-test" in listed.stdout
    created = iaas("vm", "create", "two", *VM, "--network", "lab", "--network", "iaas-test",
                   "--wait")
    assert created.returncode == 0, created.stderr
    nics = iaas.json("vm", "show", "two")["nics"]
    assert [nic["network"] for nic in nics] == ["lab", "iaas-test"]
    shown = iaas("vm", "show", "two")
    assert f"lab {nics[0]['mac']}" in shown.stdout, shown.stdout
    busy = iaas("network", "delete", "local", "lab")
    assert busy.returncode == 1 and "error: network_in_use:" in busy.stderr
    foreign = iaas("network", "delete", "local", "iaas-test")
    assert foreign.returncode == 1 and "error: network_not_managed:" in foreign.stderr
    unknown = iaas("vm", "create", "nowhere", *VM, "--network", "nothing")
    assert unknown.returncode == 1 and "error: network_not_found:" in unknown.stderr
    assert iaas("vm", "delete", "two", "--wait").returncode == 0
    gone = iaas("network", "delete", "local", "lab")
    assert gone.returncode == 0, gone.stderr
    assert "lab" not in [n["name"] for n in iaas.json("network", "list")["networks"]]
