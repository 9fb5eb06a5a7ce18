"""Render libvirt domain XML from configs/vm_template.xml with autoescape and StrictUndefined."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

import jinja2

from src.vocabulary import DOMAIN_NAME_PREFIX

TEMPLATE_DIR = Path(__file__).resolve().parent.parent.parent / "configs"
TEMPLATE_NAME = "vm_template.xml"
METADATA_NS = "https://iaas.example.org/xmlns/instance/1"
AGENT_CHANNEL = "org.qemu.guest_agent.0"


def domain_name(vm_id: str) -> str:
    """The libvirt name of a new VM's domain: from its id, so it reveals and collides with
    nothing (VM names are only unique per project)."""
    return DOMAIN_NAME_PREFIX + vm_id


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
    network: str
    console_log: str
    installation_id: str
    image_name: str
    mac: str
    seed_path: str | None = None  # the cloud-init NoCloud ISO, attached read-only
    machine: str = "pc"  # q35 for PCI passthrough
    cpu_mode: str | None = None  # host-passthrough for GPU VMs
    hostdevs: tuple[tuple[int, int, int, int], ...] = ()  # (domain, bus, slot, function)
    numa_node: int | None = None  # memory bound strictly to this host node
    cpuset: str = ""  # host CPUs the vCPUs may float over, e.g. "0-7"
    pinned_cpus: tuple[int, ...] = ()  # host CPU of vCPU 0, 1, ...
    hugepages: bool = False
    metadata_ns: str = METADATA_NS


_env = jinja2.Environment(
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
    return _env.get_template(TEMPLATE_NAME).render(**asdict(spec))


def has_agent_channel(xml: str) -> bool:
    """Whether a domain XML gives the guest a QEMU guest agent channel."""
    return any(target.get("name") == AGENT_CHANNEL
               for target in ET.fromstring(xml).iterfind("./devices/channel/target"))


def template_has_agent_channel() -> bool:
    """Whether the domains we render get a guest agent channel, from one sample rendering, so
    nobody asks libvirt (or a guest without a channel) every sweep."""
    sample = DomainSpec(uuid="00000000-0000-4000-8000-000000000000", name="sample",
                        domain_type="kvm", cpu=1, ram_mib=64, disk_path="/sample.qcow2",
                        disk_format="qcow2", network="sample", console_log="/sample.log",
                        installation_id="sample", image_name="sample", mac="52:54:00:00:00:00",
                        title="sample")
    return has_agent_channel(render_domain(sample))
