"""`iaas reservation …`, `iaas queue` and `iaas vm create --reservation`, run for real against
a live server on a test-driver host with two GPUs."""
from __future__ import annotations

from pathlib import Path

import pytest

from src.utils.clock import utc_after
from tests.cli.conftest import Iaas
from tests.integration.test_capacity_queue import ONE_GPU, TWO_GPUS
from tests.support import host_xml


@pytest.fixture
def test_host(tmp_path: Path) -> Path:
    path = tmp_path / "gpu-host.xml"
    path.write_text(host_xml("iaas-test", devices=TWO_GPUS))
    return path


def test_a_reservation_is_booked_listed_used_and_cancelled(iaas: Iaas) -> None:
    assert iaas.api("POST", "/v1/flavors", ONE_GPU).status == 201
    end = utc_after(600)[:19] + "Z"
    made = iaas.json("reservation", "create", "--flavor", "g.1", "--count", "2",
                     "--start", "now", "--end", end)
    assert (made["count"], made["end"]) == (2, end)
    shown = iaas("reservation", "show", made["id"])
    assert shown.returncode == 0 and "0000:3b:00.0" in shown.stdout, shown.stderr
    listed = iaas("reservation", "list")
    assert listed.returncode == 0 and "FLAVOR" in listed.stdout and made["id"] in listed.stdout
    conflict = iaas("reservation", "create", "--flavor", "g.1", "--count", "1",
                    "--start", "now", "--end", end)
    assert conflict.returncode == 1 and "error: reservation_conflict:" in conflict.stderr
    created = iaas("vm", "create", "inside", "--image", "base", "--flavor", "g.1",
                   "--reservation", made["id"], "--wait")
    assert created.returncode == 0, created.stderr
    outside = iaas("vm", "create", "outside", "--image", "base", "--flavor", "g.1",
                   "--wait-for-capacity", "--no-wait")
    assert outside.returncode == 0, outside.stderr
    queue = iaas("queue")
    assert queue.returncode == 0 and "outside" in queue.stdout and "gpu" in queue.stdout
    cancelled = iaas.json("reservation", "cancel", made["id"])
    assert cancelled["status"] == "cancelled"
    again = iaas("reservation", "cancel", made["id"])
    assert again.returncode == 1 and "error: reservation_closed:" in again.stderr


def test_vm_create_preemptible_says_so(iaas: Iaas) -> None:
    assert iaas.api("POST", "/v1/flavors", ONE_GPU).status == 201
    made = iaas.json("vm", "create", "lender", "--image", "base", "--flavor", "g.1",
                     "--preemptible", "--wait")
    plain = iaas.json("vm", "create", "keeper", "--image", "base", "--flavor", "g.1", "--wait")
    assert (made["preemptible"], plain["preemptible"]) == (True, False)
    assert iaas.api("GET", f"/v1/vms/{made['id']}").body["preemptible"] is True
