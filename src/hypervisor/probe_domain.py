"""Render the KVM probe's throw-away domain (configs/probe_template.xml), apart from the VMs'
template: it has no network and nothing a VM's definition may grow."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from src.hypervisor.domain_xml import TEMPLATES

PROBE_TEMPLATE_NAME = "probe_template.xml"


@dataclass(frozen=True)
class ProbeSpec:
    """What the probe's template uses; values are escaped, never trusted as markup."""

    uuid: str
    name: str  # iaas-kvm-probe-<uuid>: never a VM's iaas-<uuid>
    title: str
    domain_type: str  # kvm, or qemu for the control boot
    ram_mib: int
    disk_path: str  # a qcow2 overlay of the tiny guest
    console_log: str


def render_probe(spec: ProbeSpec) -> str:
    """The probe domain's XML.

    Raises: jinja2.UndefinedError if the template uses a value the spec lacks.
    """
    return TEMPLATES.get_template(PROBE_TEMPLATE_NAME).render(**asdict(spec))
