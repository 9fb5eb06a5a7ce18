"""Render libvirt domain XML (configs/vm_template.xml) and volume disks
(configs/disk_template.xml) with autoescape and StrictUndefined."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

import jinja2

from src.vocabulary import DOMAIN_NAME_PREFIX

TEMPLATE_DIR = Path(__file__).resolve().parent.parent.parent / "configs"
TEMPLATE_NAME = "vm_template.xml"
DISK_TEMPLATE_NAME = "disk_template.xml"
METADATA_NS = "https://iaas.example.org/xmlns/instance/1"
AGENT_CHANNEL = "org.qemu.guest_agent.0"
# Spare pcie-root-ports of a q35 VM: disks hot-plugged into it at once (one port each; a disk
# attached while it is stopped gets a port of its own from libvirt).
HOTPLUG_ROOT_PORTS = 4
# The template's q35 devices that each take a root port besides the disks, NICs and GPUs:
# the memory balloon, the guest agent's virtio-serial controller and libvirt's own USB
# controller (video and SATA sit on the root itself).
_PORTED_DEVICES = 3
DISK_FORMATS = ("qcow2", "raw")
_TARGET_DEV = re.compile(r"vd[a-z]{1,2}")
_SERIAL = re.compile(r"[A-Za-z0-9_.+-]{1,20}")  # libvirt's serial characters; virtio keeps 20


def domain_name(vm_id: str) -> str:
    """The libvirt name of a new VM's domain: from its id, so it reveals and collides with
    nothing (VM names are only unique per project)."""
    return DOMAIN_NAME_PREFIX + vm_id


@dataclass(frozen=True)
class DiskSpec:
    """A volume's virtio disk. Raises: ValueError for a value libvirt or the guest would not
    take as it is (a format, target, serial or relative path outside what is allowed)."""

    path: str  # the volume's file on the VM's host
    format: str
    target_dev: str  # vdc, vdd, ...: the order libvirt gives it; the guest names disks itself
    serial: str  # what the guest reads in /sys/block/vdX/serial
    read_only: bool = False
    shareable: bool = False  # a multiattach volume: other VMs may have it open at once

    def __post_init__(self) -> None:
        if self.format not in DISK_FORMATS:
            raise ValueError(f"disk format {self.format!r} is not one of {DISK_FORMATS}")
        if not _TARGET_DEV.fullmatch(self.target_dev):
            raise ValueError(f"disk target {self.target_dev!r} is not vd<letters>")
        if not _SERIAL.fullmatch(self.serial):
            raise ValueError(f"disk serial {self.serial!r} is not 1-20 of [A-Za-z0-9_.+-]")
        if not self.path.startswith("/"):
            raise ValueError(f"disk path {self.path!r} is not absolute")


@dataclass(frozen=True)
class NicSpec:
    """A virtio NIC on a libvirt network."""

    network: str
    mac: str


@dataclass(frozen=True)
class DomainSpec:
    """Everything the template may use; values are escaped, never trusted as markup."""

    uuid: str
    name: str  # the domain's name: iaas-<uuid>
    title: str  # the VM's name, for `virsh list --title`
    domain_type: str
    cpu: int
    ram_mib: int
    disk_path: str
    disk_format: str
    nics: tuple[NicSpec, ...]  # in order: the guest's eth0, eth1, ...
    console_log: str
    installation_id: str
    image_name: str
    seed_path: str | None = None  # the cloud-init NoCloud ISO, attached read-only
    machine: str = "pc"  # q35 for PCI passthrough
    cpu_mode: str | None = None  # host-passthrough for GPU VMs
    hostdevs: tuple[tuple[int, int, int, int], ...] = ()  # (domain, bus, slot, function)
    mdevs: tuple[str, ...] = ()  # UUIDs of mediated devices (GPU partitions) made for the VM
    numa_node: int | None = None  # memory bound strictly to this host node
    cpuset: str = ""  # host CPUs the vCPUs may float over, e.g. "0-7"
    pinned_cpus: tuple[int, ...] = ()  # host CPU of vCPU 0, 1, ...
    hugepages: bool = False
    volumes: tuple[DiskSpec, ...] = ()  # attached volumes: there from the first boot
    hotplug_root_ports: int = HOTPLUG_ROOT_PORTS  # q35 only
    nwfilter: str | None = None  # the VM's firewall (its security groups), on every NIC
    metadata_ns: str = METADATA_NS


# The one environment for every XML template in configs/ (domains, disks, filters, probes).
TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_domain(spec: DomainSpec) -> str:
    """The domain XML for spec.

    Raises: jinja2.UndefinedError if the template uses a value the spec lacks.
    """
    return TEMPLATES.get_template(TEMPLATE_NAME).render(**asdict(spec), root_ports=root_ports(spec))


def root_ports(spec: DomainSpec) -> int:
    """The pcie-root-ports a q35 domain is given (0 on other machines): one per device the
    template gives it, and hotplug_root_ports to spare. Without spares a hot-plug fails with
    libvirt's "No more available PCI slots"."""
    if spec.machine != "q35":
        return 0
    disks = 1 + (1 if spec.seed_path else 0) + len(spec.volumes)
    return (_PORTED_DEVICES + disks + len(spec.nics) + len(spec.hostdevs) + len(spec.mdevs)
            + spec.hotplug_root_ports)


def render_disk(spec: DiskSpec) -> str:
    """The <disk> element of a volume, to attach to a domain."""
    return TEMPLATES.get_template(DISK_TEMPLATE_NAME).render(volume=asdict(spec)).strip() + "\n"


def has_agent_channel(xml: str) -> bool:
    """Whether a domain XML gives the guest a QEMU guest agent channel."""
    return any(target.get("name") == AGENT_CHANNEL
               for target in ET.fromstring(xml).iterfind("./devices/channel/target"))


def template_has_agent_channel() -> bool:
    """Whether the domains we render get a guest agent channel, from one sample rendering, so
    nobody asks libvirt (or a guest without a channel) every sweep."""
    sample = DomainSpec(uuid="00000000-0000-4000-8000-000000000000", name="sample",
                        domain_type="kvm", cpu=1, ram_mib=64, disk_path="/sample.qcow2",
                        disk_format="qcow2", nics=(NicSpec("sample", "52:54:00:00:00:00"),),
                        console_log="/sample.log", installation_id="sample",
                        image_name="sample", title="sample")
    return has_agent_channel(render_domain(sample))
