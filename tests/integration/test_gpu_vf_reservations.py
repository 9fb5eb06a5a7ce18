"""VFs racing, queued and reserved. A reservation that books a GPU whose VFs are free now gets that GPU whole in its window: a
VF given in between must not keep it split (a partition cannot be preempted like a GPU)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from src.app import App
from src.config import Config
from tests.conftest import AppFactory
from tests.e2e.http_client import HttpClient
from tests.integration.test_capacity_queue import (
    ONE_GPU,
    QUICK,
    create,
    delete,
    member,
    positions,
    queued,
    running,
    status_of,
    until,
)
from tests.integration.test_gpu_partitions import partition_flavor, served_with
from tests.integration.test_gpu_virtual_functions import PHYSICAL, PLAIN, VIRTUAL
from tests.integration.test_reservations import at, book, reservation_status
from tests.support import host_xml, race


@pytest.fixture
def test_host(tmp_path: Path) -> Path:
    path = tmp_path / "vf-host.xml"
    path.write_text(host_xml("iaas-test", devices=PHYSICAL + VIRTUAL + PLAIN))
    return path


@pytest.fixture
def admin(make_app: AppFactory, config: Config) -> Iterator[HttpClient]:
    app: App = make_app(replace(config, **QUICK))
    with served_with(app, (ONE_GPU, partition_flavor("vf.1", "sriov_vf")),
                     refresh_gpus=True) as client:
        yield client


def test_a_vf_given_before_a_window_leaves_the_reservation_its_gpus(admin: HttpClient) -> None:
    booked = book(admin, 2, at(4), at(60))  # both GPUs, the one with VFs included
    reply = admin.post("/v1/vms", {"name": "vf-1", "image_name": "base", "flavor": "vf.1"})
    if reply.status != 202:  # (or taken now, and given back by the window's start)
        assert (reply.status, reply.body["error"]["code"]) == (409, "insufficient_capacity")
    until(lambda: reservation_status(admin, booked) == "active", "the window began")
    for index in range(2):
        made = admin.post("/v1/vms", {"name": f"r{index}", "image_name": "base",
                                      "flavor": "g.1", "reservation": booked["id"]})
        assert made.status == 202, (index, reply.status, made.body)


def test_a_gpu_a_later_window_claims_lists_no_vf_available(admin: HttpClient) -> None:
    booked = book(admin, 2, at(30), at(60))  # both GPUs, the one with VFs included
    assert booked["status"] == "pending"
    shown = admin.get("/v1/gpus").body["partitions"]
    assert [offer["available"] for offer in shown if offer["kind"] == "vf"] == [0]
    reply = admin.post("/v1/vms", {"name": "vf-1", "image_name": "base", "flavor": "vf.1"})
    assert (reply.status, reply.body["error"]["code"]) == (409, "insufficient_capacity")


def test_racing_creates_of_the_last_vfs_take_each_once_and_the_losers_leave_nothing(
        admin: HttpClient) -> None:
    replies = race(f"{admin.base_url}/v1/vms", [
        {"name": f"vf-{index}", "image_name": "base", "flavor": "vf.1"} for index in range(8)])
    assert Counter(reply.status for reply in replies) == {202: 3, 409: 5}, [
        reply.body for reply in replies]
    assert {reply.body["error"]["code"] for reply in replies if reply.status == 409} == {
        "insufficient_capacity"}
    won = {reply.body["id"] for reply in replies if reply.status == 202}
    until(lambda: {vm["status"] for vm in admin.get("/v1/vms").body["vms"]} == {"running"},
          "the winners built")
    assert {vm["id"] for vm in admin.get("/v1/vms").body["vms"]} == won
    shown = admin.get("/v1/gpus").body["partitions"]
    assert [offer["available"] for offer in shown if offer["kind"] == "vf"] == [0]


def test_a_vf_create_waits_for_a_vf_and_takes_the_one_given_back(admin: HttpClient) -> None:
    held = [running(admin, create(admin, f"vf-{index}", "vf.1")) for index in range(3)]
    reply = admin.post("/v1/vms", {"name": "waits", "image_name": "base", "flavor": "vf.1",
                                   "wait_for_capacity": True})
    assert reply.status == 202, reply.body
    assert reply.body["status"] == "queued"
    gone = admin.delete(f"/v1/vms/{held[0]['id']}")
    assert admin.wait_task(gone.body["id"])["status"] == "succeeded"
    placed = running(admin, reply.body)
    assert placed["gpus"] == []


def test_queued_vfs_go_first_to_the_project_holding_fewer_gpus(make_app: AppFactory,
                                                                config: Config) -> None:
    """A VF counts as one GPU in the fair order as in the quota: A holds every VF and queues
    a4, then B queues b1; the VF A gives back goes to b1."""
    app: App = make_app(replace(config, **QUICK))
    with served_with(app, (ONE_GPU, partition_flavor("vf.1", "sriov_vf")),
                     refresh_gpus=True) as admin:
        team_a = member(app, admin.base_url, "team-a")
        team_b = member(app, admin.base_url, "team-b")
        held = [running(team_a, create(team_a, f"a{index}", "vf.1")) for index in range(3)]
        a4 = queued(team_a, "a4", "vf.1")
        b1 = queued(team_b, "b1", "vf.1")
        assert positions(admin) == [("b1", 1), ("a4", 2)]  # A holds 3 of its 4, B none
        delete(team_a, held[0])
        running(team_b, b1)
        assert status_of(team_a, a4) == "queued"
