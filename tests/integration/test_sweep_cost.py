"""What a reconcile sweep costs in libvirt calls on the test driver: bounded, whatever the number
of VMs (bulk power states, the DHCP leases, the host's neighbour table read as a file, and a
budget of guest agent questions with backoff per VM)."""
from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

from src.app import App
from src.config import Config
from src.database import vms as vm_dao
from src.services.actions.reconcile import GPU_CALLS, SWEEP_CALLS_BOUND
from src.services.hosts.capacity import CAPACITY_CALLS
from src.services.vms.addresses import LEASE_CALLS, AddressBook
from src.services.vms.agent_asks import ASKS_PER_SWEEP
from src.vocabulary import QUOTA_RESOURCES
from tests.conftest import AppFactory, make_qcow2
from tests.support import Client

# Power states of every domain, the network's leases, the host's size and its PCI devices (its
# GPUs).
BULK_CALLS = 1 + LEASE_CALLS + CAPACITY_CALLS + GPU_CALLS


def settle(app: App, quiet_s: float = 0.3) -> None:
    """Wait until the post-build checks on the reconciler's thread stop calling libvirt."""
    while True:
        before = app.hypervisor.calls
        time.sleep(quiet_s)
        if app.hypervisor.calls == before:
            return


def fleet(make_app: AppFactory, config: Config, root: Path, count: int) -> App:
    """A fresh app that sweeps only when told, with count running VMs that have no address."""
    (root / "images").mkdir(parents=True)
    app = make_app(replace(config, db_path=root / "iaas.db", images_dir=root / "images",
                           instances_dir=root / "instances", lifecycle_events=False,
                           reconcile_interval_s=3600, cpu_allocation_ratio=64.0,
                           default_quota=tuple(0 if resource == "gpus" else None
                                               for resource in QUOTA_RESOURCES)))
    client = Client(app)
    make_qcow2(root / "images" / "base.qcow2")
    assert client.post("/v1/images", {"name": "base", "file": "base.qcow2",
                                       "format": "qcow2"}).status == 201
    tasks = [client.post("/v1/vms", {"name": f"vm-{i:04d}", "cpu": 1, "ram": 128,
                                     "image_name": "base"}).body["task"]["id"]
             for i in range(count)]
    assert all(client.wait_task(task)["status"] == "succeeded" for task in tasks)
    settle(app)
    assert all(not row.ip_addresses and row.status == "running" for row in running(app))
    return app


def running(app: App) -> list[vm_dao.VmRow]:
    with app.db.read() as conn:
        return vm_dao.list_all(conn)


def sweep_calls(app: App) -> int:
    """The calls the sweep itself makes (on this thread): the tasks its address changes queue
    (firewall refreshes, their after-task checks) run on others, at the same time."""
    before = app.hypervisor.thread_calls
    app.reconciler.sweep()
    return app.hypervisor.thread_calls - before


def test_a_sweep_costs_a_bounded_number_of_libvirt_calls(make_app: AppFactory, config: Config,
                                                         tmp_path: Path) -> None:
    series: dict[int, list[int]] = {}
    for count in (10, 200):
        app = fleet(make_app, config, tmp_path / f"n{count}", count)
        series[count] = [sweep_calls(app) for _ in range(count // ASKS_PER_SWEEP + 2)]
        assert all(row.ip_addresses and row.ip_addresses[0]["source"] == "agent"
                   for row in running(app))
    print("libvirt calls per sweep:", series)
    # The first sweep asks every agent it may: all 10 VMs, but only the budget of the 200.
    assert series[10][0] == BULK_CALLS + 2 * 10
    assert series[200][0] == BULK_CALLS + 2 * ASKS_PER_SWEEP == SWEEP_CALLS_BOUND
    assert max(series[200]) == SWEEP_CALLS_BOUND
    # Once every agent answered, a sweep is its bulk calls alone, at any size.
    assert series[10][-1] == series[200][-1] == BULK_CALLS


def test_silent_agents_are_asked_again_with_backoff(make_app: AppFactory, config: Config,
                                                    tmp_path: Path) -> None:
    app = fleet(make_app, config, tmp_path / "fleet", 40)
    now = [1000.0]
    book = AddressBook(app.db, clock=lambda: now[0])
    # MACs no interface has: every agent answers, but never about our interface.
    rows = [replace(row, mac=f"02:00:00:00:00:{i:02x}") for i, row in enumerate(running(app))]

    def agents_asked() -> int:
        before = app.hypervisor.calls
        assert book.learn(rows, app.hosts.get("local")) == 0
        return (app.hypervisor.calls - before - LEASE_CALLS) // 2

    def sweeps() -> list[int]:
        return [agents_asked() for _ in range(4)]

    assert sweeps() == [16, 16, 8, 0]  # everyone once, the budget at a time
    now[0] += 10
    assert sweeps() == [16, 16, 8, 0]  # the first retry, 10 s later
    now[0] += 10
    assert sweeps() == [0, 0, 0, 0]  # the second waits 20 s
    now[0] += 10
    assert sweeps() == [16, 16, 8, 0]


def test_without_an_agent_channel_the_neighbour_table_is_read_once(
        make_app: AppFactory, config: Config, tmp_path: Path) -> None:
    app = fleet(make_app, config, tmp_path / "fleet", 30)
    rows = running(app)
    table = tmp_path / "arp"
    table.write_text("IP address  HW type  Flags  HW address  Mask  Device\n" + "".join(
        f"10.250.0.{10 + i}  0x1  0x2  {row.mac}  *  virbr-iaas-t\n" for i, row in enumerate(rows)))
    app.hypervisor.host.arp_table = table
    book = AddressBook(app.db, guest_agent=False)
    before = app.hypervisor.calls
    assert book.learn(rows, app.hosts.get("local")) == 30
    assert app.hypervisor.calls - before == LEASE_CALLS
    learned = {row.id: row.ip_addresses for row in running(app)}
    assert learned[rows[3].id] == [{"address": "10.250.0.13", "family": "ipv4", "source": "arp"}]


def test_a_vm_shown_learns_its_addresses_whatever_the_schedule(
        make_app: AppFactory, config: Config, tmp_path: Path) -> None:
    app = fleet(make_app, config, tmp_path / "fleet", 20)
    for _ in range(3):  # every VM asked once: each one's next question is minutes away
        app.reconciler.sweep()
    with app.db.write() as conn:
        conn.execute("UPDATE vms SET ip_addresses = '[]'")
    assert sweep_calls(app) == BULK_CALLS  # the sweep leaves them be
    vm_id = running(app)[5].id
    shown = Client(app).get(f"/v1/vms/{vm_id}").body
    assert [entry["source"] for entry in shown["ip_addresses"]] == ["agent"]
    assert Client(app).get(f"/v1/vms/{vm_id}").body["ip_addresses"] == shown["ip_addresses"]


def test_libvirt_calls_are_counted_per_thread(app: App) -> None:
    total, mine = app.hypervisor.calls, app.hypervisor.thread_calls
    other = threading.Thread(target=app.hypervisor.ping)
    other.start()
    other.join()
    assert app.hypervisor.thread_calls == mine
    assert app.hypervisor.calls >= total + 1
    app.hypervisor.ping()
    assert app.hypervisor.thread_calls == mine + 1
