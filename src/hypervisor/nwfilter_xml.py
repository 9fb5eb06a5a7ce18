"""Render one VM's libvirt nwfilter (configs/nwfilter_template.xml) with autoescape and
StrictUndefined, from checked values only."""
from __future__ import annotations

import ipaddress
import uuid as uuid_module
from dataclasses import asdict, dataclass

from src.hypervisor.domain_xml import TEMPLATES

TEMPLATE_NAME = "nwfilter_template.xml"
FILTER_PREFIX = "iaas-fw-"
# nwfilter's element per protocol: `all` is every IP protocol.
PROTOCOLS = ("tcp", "udp", "icmp", "all")
_PORTED = ("tcp", "udp")


def filter_name(vm_id: str) -> str:
    """The nwfilter of a VM: named by its id, as its domain is."""
    return FILTER_PREFIX + vm_id


@dataclass(frozen=True)
class AllowRule:
    """Inbound traffic let in: from source/prefix (None: anywhere), to ports (tcp, udp).

    Raises: ValueError for a protocol, address or port range nwfilter would not take.
    """

    protocol: str
    source: str | None = None  # an IPv4 network address
    prefix: int = 0
    port_min: int | None = None
    port_max: int | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol {self.protocol!r} is not one of {PROTOCOLS}")
        if self.source is not None:
            ipaddress.IPv4Network(f"{self.source}/{self.prefix}")  # a network, or ValueError
        if (self.port_min is None) != (self.port_max is None):
            raise ValueError("a port range has both ends or none")
        if self.port_min is not None:
            if self.protocol not in _PORTED:
                raise ValueError(f"{self.protocol} has no ports")
            assert self.port_max is not None
            if not 1 <= self.port_min <= self.port_max <= 65535:
                raise ValueError(f"ports {self.port_min}-{self.port_max} are not a range")


@dataclass(frozen=True)
class FilterSpec:
    vm_id: str
    rules: tuple[AllowRule, ...] = ()

    @property
    def name(self) -> str:
        return filter_name(self.vm_id)


def render_filter(spec: FilterSpec) -> str:
    """The nwfilter XML of spec (its UUID is the VM's, so a redefinition replaces it).

    Raises: ValueError when vm_id is not a UUID.
    """
    uuid = str(uuid_module.UUID(spec.vm_id))
    return TEMPLATES.get_template(TEMPLATE_NAME).render(
        name=filter_name(uuid), uuid=uuid, rules=[asdict(rule) for rule in spec.rules])
