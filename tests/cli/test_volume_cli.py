"""`iaas volume …` and `iaas vm snapshot|snapshots`, run for real against a live server on the
test driver (attach itself needs a real hypervisor: its refusals are what shows here)."""
from __future__ import annotations

from tests.cli.conftest import Iaas

VM = ("--image", "base", "--cpu", "1", "--ram", "128")


def test_a_volume_is_created_listed_snapshotted_and_deleted(iaas: Iaas) -> None:
    made = iaas("volume", "create", "ckpt", "--size", "2", "--wait")
    assert made.returncode == 0, made.stderr
    assert "available" in made.stdout and "ckpt" in made.stdout
    listed = iaas("volume", "list")
    assert listed.returncode == 0 and "ATTACHED TO" in listed.stdout and "ckpt" in listed.stdout
    assert "2 GiB" in listed.stdout
    assert [v["name"] for v in iaas.json("volume", "list")["volumes"]] == ["ckpt"]
    snap = iaas("volume", "snapshot", "ckpt", "epoch-1", "--wait")
    assert snap.returncode == 0, snap.stderr
    snaps = iaas("volume", "snapshots", "ckpt")
    assert snaps.returncode == 0 and "epoch-1" in snaps.stdout and "available" in snaps.stdout
    reverted = iaas("volume", "revert", "ckpt", "epoch-1", "--wait")
    assert reverted.returncode == 0, reverted.stderr
    shrink = iaas("volume", "resize", "ckpt", "--size", "1")
    assert shrink.returncode == 1
    assert "error: volume_cannot_shrink:" in shrink.stderr
    gone = iaas("volume", "delete", "ckpt", "--wait")
    assert gone.returncode == 0, gone.stderr
    missing = iaas("volume", "show", "ckpt")
    assert missing.returncode == 1 and "error: volume_not_found:" in missing.stderr


def test_attach_and_vm_snapshot_refusals_read_clearly(iaas: Iaas) -> None:
    assert iaas("volume", "create", "shared", "--size", "1", "--multiattach",
                "--wait").returncode == 0
    assert iaas("vm", "create", "box", *VM, "--wait").returncode == 0
    rw = iaas("volume", "attach", "shared", "box")
    assert rw.returncode == 1 and "error: multiattach_requires_read_only:" in rw.stderr
    running = iaas("vm", "snapshot", "box", "s1")
    assert running.returncode == 1 and "error: vm_not_stopped:" in running.stderr
    assert iaas("vm", "stop", "box", "--wait").returncode == 0
    image = iaas("vm", "image", "box", "box-image", "--no-wait")
    assert image.returncode == 0, image.stderr
    listed = iaas("vm", "snapshots", "box")
    assert listed.returncode == 0 and "NAME" in listed.stdout
