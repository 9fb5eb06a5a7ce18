"""Volumes in real guests on qemu:///system: hot-plug and unplug on machine pc and q35, data that
survives into the next VM, read-only sharing, snapshot layers and revert, a VM defined with its
volumes, and a detach the guest does not answer. The tiny guest reports its extra disks on the
serial console (IAAS-DISK-SEEN/WROTE/WRITE-FAILED/GONE, see scripts/build_tiny_image.sh)."""
from __future__ import annotations

import hashlib
import re
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import libvirt  # type: ignore[import-untyped]
import pytest

from scripts.harness.host import SYSTEM_URI, IsolatedNetwork, purge_domains
from scripts.harness.pools import remove_pool
from src.hypervisor.domain_xml import (
    HOTPLUG_ROOT_PORTS,
    DiskSpec,
    DomainSpec,
    NicSpec,
    domain_name,
    render_disk,
    render_domain,
)
from src.hypervisor.driver import Hypervisor
from src.hypervisor.errors import DeviceNotReleased, HypervisorError, LayerInUse
from src.utils.nocloud import Seed, write_seed

GIB = 1024 ** 3
BOOT_S = 180.0  # TCG on two busy cores
EVENT_S = 60.0  # a disk the guest looks at every 0.5 s
DETACH_S = 30.0
TIMINGS: dict[str, list[float]] = {}


def timed(label: str, started: float) -> None:
    TIMINGS.setdefault(label, []).append(time.monotonic() - started)


@pytest.fixture(scope="module", autouse=True)
def report_timings() -> Iterator[None]:
    yield
    for label, values in TIMINGS.items():
        print(f"\n{label}: " + ", ".join(f"{value * 1000:.0f} ms" for value in values))


class Console:
    """A guest's serial log, read forward: each expect starts after the last match."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.at = 0

    def restarted(self) -> None:
        self.at = 0  # the log is rewritten when the domain starts (append='off')

    def expect(self, pattern: str, timeout: float = EVENT_S) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            text = self.path.read_text(errors="replace") if self.path.exists() else ""
            found = re.compile(pattern).search(text, self.at)
            if found:
                self.at = found.end()
                return found
            assert time.monotonic() < deadline, (
                f"{pattern!r} never appeared in {self.path}:\n{text[self.at:][-2000:]}")
            time.sleep(0.2)

    def seen(self, serial: str, read_only: bool) -> tuple[str, str]:
        """(the guest's name for the disk, the data it found) once it saw the disk."""
        found = self.expect(rf"IAAS-DISK-SEEN (vd[a-z]+) serial={re.escape(serial)} "
                            rf"ro={int(read_only)} data=([^\r\n]*)")
        return found[1], found[2]


@dataclass(frozen=True)
class Guest:
    uuid: str
    hostname: str
    console: Console


@dataclass
class Lab:
    hypervisor: Hypervisor
    pool: str
    workspace: Path
    network: str
    installation: str
    guests: list[str] = field(default_factory=list)

    def volume(self, name: str, backing: str | None = None) -> str:
        return self.hypervisor.pools.create_volume(
            self.pool, name, GIB, "qcow2", backing=(backing, "qcow2") if backing else None)

    def boot(self, hostname: str, machine: str = "pc", volumes: tuple[DiskSpec, ...] = (),
             hotplug_root_ports: int = HOTPLUG_ROOT_PORTS, ready: bool = True) -> Guest:
        vm_id = str(uuid.uuid4())
        self.guests.append(vm_id)
        base = self.workspace / "images" / "tiny-linux.qcow2"
        root = self.hypervisor.pools.create_volume(self.pool, f"root-{hostname}.qcow2", GIB,
                                                   "qcow2", backing=(str(base), "qcow2"))
        seed = self.workspace / "instances" / f"{vm_id}-seed.iso"
        mac = "52:54:00:" + ":".join(f"{byte:02x}" for byte in secrets.token_bytes(3))
        write_seed(Seed(instance_id=vm_id, hostname=hostname, ssh_keys=(), user_data=None,
                        mac=mac), seed)
        console = Console(self.workspace / "instances" / f"{vm_id}.log")
        spec = DomainSpec(uuid=vm_id, name=domain_name(vm_id), title=hostname,
                          domain_type="qemu", cpu=1, ram_mib=256, disk_path=root,
                          disk_format="qcow2", nics=(NicSpec(self.network, mac),),
                          console_log=str(console.path), installation_id=self.installation,
                          image_name="tiny-linux", seed_path=str(seed),
                          machine=machine, volumes=volumes,
                          hotplug_root_ports=hotplug_root_ports)
        self.hypervisor.define(render_domain(spec))
        self.hypervisor.start(vm_id)
        guest = Guest(vm_id, hostname, console)
        if ready:
            self.ready(guest)
        return guest

    def ready(self, guest: Guest) -> None:
        guest.console.expect(rf"IAAS-SEED-HOSTNAME {guest.hostname}", BOOT_S)
        guest.console.expect("IAAS-TINY-READY", BOOT_S)

    def attach(self, guest: Guest, disk: DiskSpec, live: bool = True) -> None:
        started = time.monotonic()
        self.hypervisor.attach_disk(guest.uuid, render_disk(disk), live=live)
        timed("attach (live)" if live else "attach (persistent only)", started)

    def detach(self, guest: Guest, target: str, timeout_s: float = DETACH_S) -> None:
        started = time.monotonic()
        self.hypervisor.detach_disk(guest.uuid, target, live=True, timeout_s=timeout_s)
        timed("detach until the guest let go", started)

    def targets(self, guest: Guest, live: bool) -> dict[str, str | None]:
        return {disk.target_dev: disk.source
                for disk in self.hypervisor.disk_targets(guest.uuid, live=live)}


@pytest.fixture
def lab(workspace: Path, e2e_network: IsolatedNetwork,
        system_conn: libvirt.virConnect) -> Iterator[Lab]:
    tag = secrets.token_hex(4)
    hypervisor = Hypervisor(SYSTEM_URI)
    pool = f"iaas-e2e-disks-{tag}"
    lab = Lab(hypervisor, pool, workspace, e2e_network.name, f"iaas-e2e-disks-{tag}")
    try:
        hypervisor.pools.ensure_dir_pool(pool, str(workspace / "volumes"))
        yield lab
    finally:
        purge_domains(system_conn, lab.guests, lab.installation)
        remove_pool(system_conn, pool)
        hypervisor.close()
    assert not {domain.UUIDString() for domain in system_conn.listAllDomains()} & set(lab.guests)
    assert pool not in [pool_.name() for pool_ in system_conn.listAllStoragePools()]


def first_sector(path: str, scratch: Path) -> bytes:
    """The first 512 bytes a guest reads from the qcow2 volume (its backing chain included)."""
    out = scratch / f"sector-{secrets.token_hex(4)}"
    subprocess.run(["qemu-img", "dd", "-f", "qcow2", "-O", "raw", "bs=512", "count=1",
                    f"if={path}", f"of={out}"], capture_output=True, check=True)
    return out.read_bytes()


def sector_of(stamp: str) -> bytes:
    return (stamp + "\n").encode().ljust(512, b"\0")


def sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_a_volume_keeps_its_data_from_vm_to_vm_and_is_shared_read_only(
        lab: Lab, tmp_path: Path) -> None:
    data = lab.volume("data.qcow2")
    first, second, third = (lab.boot(name, ready=False) for name in ("vol-a", "vol-b", "vol-c"))
    for guest in (first, second, third):
        lab.ready(guest)
    disk = DiskSpec(path=data, format="qcow2", target_dev="vdc", serial="vol-e2e-data")

    lab.attach(first, disk)
    device, found = first.console.seen("vol-e2e-data", read_only=False)
    assert found == "-"  # a new, empty volume
    stamp = first.console.expect(rf"IAAS-DISK-WROTE {device} (IAAS-DATA vol-a \w+)")[1]
    assert lab.targets(first, live=True)["vdc"] == lab.targets(first, live=False)["vdc"] == data
    lab.detach(first, "vdc")
    first.console.expect(rf"IAAS-DISK-GONE {device}\b")
    assert "vdc" not in lab.targets(first, live=True)
    assert "vdc" not in lab.targets(first, live=False)
    assert first_sector(data, tmp_path) == sector_of(stamp)  # synced to the file

    lab.attach(second, disk)
    device, found = second.console.seen("vol-e2e-data", read_only=False)
    assert found == stamp  # the first VM's bytes, in the next VM
    stamp = second.console.expect(rf"IAAS-DISK-WROTE {device} (IAAS-DATA vol-b \w+)")[1]
    lab.detach(second, "vdc")
    second.console.expect(rf"IAAS-DISK-GONE {device}\b")

    shared = replace(disk, read_only=True, shareable=True)
    for reader in (third, first):  # two VMs at once
        lab.attach(reader, shared)
        device, found = reader.console.seen("vol-e2e-data", read_only=True)
        assert found == stamp
        reader.console.expect(rf"IAAS-DISK-WRITE-FAILED {device}\b")
    for reader in (third, first):
        lab.detach(reader, "vdc")
        assert "vdc" not in lab.targets(reader, live=True)
    assert first_sector(data, tmp_path) == sector_of(stamp)  # nobody could write it


def test_a_snapshot_layer_and_a_revert_give_back_the_bytes(lab: Lab, tmp_path: Path) -> None:
    pools, guest = lab.hypervisor.pools, lab.boot("vol-s")
    layer = lab.volume("vol-1.qcow2")
    disk = DiskSpec(path=layer, format="qcow2", target_dev="vdc", serial="vol-e2e-snap")
    lab.attach(guest, disk)
    device, _ = guest.console.seen("vol-e2e-snap", read_only=False)
    snapped = guest.console.expect(rf"IAAS-DISK-WROTE {device} (IAAS-DATA vol-s \w+)")[1]
    lab.detach(guest, "vdc")
    guest.console.expect(rf"IAAS-DISK-GONE {device}\b")

    # The snapshot: the layer is frozen, the guest writes a new top over it.
    frozen = sha256(layer)
    top = lab.volume("vol-2.qcow2", backing=layer)
    lab.attach(guest, replace(disk, path=top))
    device, found = guest.console.seen("vol-e2e-snap", read_only=False)
    assert found == snapped
    later = guest.console.expect(rf"IAAS-DISK-WROTE {device} (IAAS-DATA vol-s \w+)")[1]
    lab.detach(guest, "vdc")
    guest.console.expect(rf"IAAS-DISK-GONE {device}\b")
    assert sha256(layer) == frozen
    assert first_sector(top, tmp_path) == sector_of(later) != sector_of(snapped)

    # The revert: a new top on the snapshot's layer; the old top may go, the layer may not.
    reverted = lab.volume("vol-3.qcow2", backing=layer)
    pools.delete_layer(lab.pool, "vol-2.qcow2")
    with pytest.raises(LayerInUse):
        pools.delete_layer(lab.pool, "vol-1.qcow2")
    assert first_sector(reverted, tmp_path) == first_sector(layer, tmp_path) == sector_of(
        snapped)

    # A stopped VM: attached in its definition only, pointed at a newer revert, seen at boot.
    lab.hypervisor.force_off(guest.uuid)
    lab.attach(guest, replace(disk, path=reverted), live=False)
    again = lab.volume("vol-4.qcow2", backing=layer)
    lab.hypervisor.set_disk_source(guest.uuid, "vdc", again)
    assert lab.targets(guest, live=False)["vdc"] == again
    pools.delete_layer(lab.pool, "vol-3.qcow2")
    guest.console.restarted()
    lab.hypervisor.start(guest.uuid)
    device, found = guest.console.seen("vol-e2e-snap", read_only=False)
    assert found == snapped  # exactly the snapshot's bytes, read by the guest
    guest.console.expect(rf"IAAS-DISK-WROTE {device} IAAS-DATA vol-s \w+")
    assert sha256(layer) == frozen


def test_q35_has_its_volumes_from_the_first_boot_and_hot_plugs_into_spare_ports(
        lab: Lab) -> None:
    booted = DiskSpec(path=lab.volume("boot.qcow2"), format="qcow2", target_dev="vdc",
                      serial="vol-e2e-boot")
    guest = lab.boot("vol-q", machine="q35", volumes=(booted,))
    device, found = guest.console.seen("vol-e2e-boot", read_only=False)  # there at boot
    assert found == "-"
    hot = DiskSpec(path=lab.volume("hot.qcow2"), format="qcow2", target_dev="vdd",
                   serial="vol-e2e-hot")
    lab.attach(guest, hot)
    device, _ = guest.console.seen("vol-e2e-hot", read_only=False)
    guest.console.expect(rf"IAAS-DISK-WROTE {device} IAAS-DATA vol-q \w+")
    lab.detach(guest, "vdd")
    guest.console.expect(rf"IAAS-DISK-GONE {device}\b")
    assert set(lab.targets(guest, live=True)) == {"vda", "vdb", "vdc"}

    bare = lab.boot("vol-q0", machine="q35", hotplug_root_ports=0, ready=False)
    with pytest.raises(HypervisorError, match="No more available PCI slots"):
        lab.attach(bare, replace(hot, path=lab.volume("nowhere.qcow2")))
    assert "vdd" not in lab.targets(bare, live=True)
    assert "vdd" not in lab.targets(bare, live=False)


def test_a_detach_the_guest_does_not_answer_fails_clearly_and_the_disk_stays(lab: Lab) -> None:
    guest = lab.boot("vol-p")
    disk = DiskSpec(path=lab.volume("held.qcow2"), format="qcow2", target_dev="vdc",
                    serial="vol-e2e-held")
    lab.attach(guest, disk)
    device, _ = guest.console.seen("vol-e2e-held", read_only=False)
    guest.console.expect(rf"IAAS-DISK-WROTE {device}\b")
    lab.hypervisor.suspend(guest.uuid)  # a paused guest cannot answer the unplug request
    started = time.monotonic()
    with pytest.raises(DeviceNotReleased, match="did not release vdc within 1 s; it is still"):
        lab.hypervisor.detach_disk(guest.uuid, "vdc", live=True, timeout_s=1)
    assert time.monotonic() - started < 4  # our deadline, not libvirt's own 5 s
    assert lab.targets(guest, live=True)["vdc"] == disk.path  # as it really is
    assert lab.targets(guest, live=False)["vdc"] == disk.path
    assert lab.hypervisor.power_state(guest.uuid) == "paused"

    lab.hypervisor.resume(guest.uuid)  # the pending request goes through once it runs
    guest.console.expect(rf"IAAS-DISK-GONE {device}\b")
    lab.detach(guest, "vdc")  # done live already: only the definition is left to update
    assert "vdc" not in lab.targets(guest, live=True)
    assert "vdc" not in lab.targets(guest, live=False)
