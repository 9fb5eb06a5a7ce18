"""Domain XML: golden output, and no user value can change the document's structure."""
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from src.utils.domain_xml import METADATA_NS, DomainSpec, render_domain

GOLDEN = Path(__file__).parent / "golden" / "domain.xml"

SPEC = DomainSpec(
    uuid="6f1c9a52-6a38-4d0e-9a3e-1d5b8f4f2a10", name="vm-chulhee-01", domain_type="kvm", cpu=2,
    ram_mib=2048, disk_path="/var/lib/libvirt/images/iaas-instances/6f1c/disk.qcow2",
    disk_format="qcow2", network="default",
    console_log="/var/lib/libvirt/images/iaas-instances/6f1c/console.log",
    installation_id="0b8e2d1c-0000-4000-8000-000000000001", image_name="Ubuntu-Base-22.04",
    mac="52:54:00:12:ab:ef")

EXPECTED_DEVICES = ["disk", "interface", "serial", "console", "channel", "graphics", "video",
                    "memballoon"]
INJECTIONS = [
    "x'/><hostdev mode='subsystem'/><x a='",
    'x"/><disk type="file"/><y z="',
    "</name><devices><hostdev/></devices><name>",
    "<![CDATA[<hostdev/>]]>",
    "&lt;hostdev/&gt;&amp;",
    "{{ 7*7 }}{% raw %}",
]
STRING_FIELDS = ["name", "disk_path", "network", "console_log", "installation_id", "image_name",
                 "uuid", "domain_type", "disk_format", "mac"]


def test_matches_golden_file() -> None:
    assert render_domain(SPEC) == GOLDEN.read_text()


def test_has_the_devices_and_features_every_vm_needs() -> None:
    root = ET.fromstring(render_domain(SPEC))
    assert [child.tag for child in root.find("devices")] == EXPECTED_DEVICES
    assert root.find("features/acpi") is not None and root.find("features/apic") is not None
    assert root.find("devices/disk/target").get("bus") == "virtio"
    assert root.find("devices/interface/model").get("type") == "virtio"
    assert root.find("devices/graphics").get("listen") == "127.0.0.1"
    assert root.find("devices/serial/log").get("file") == SPEC.console_log
    assert root.find("devices/interface/mac").get("address") == SPEC.mac
    assert root.find("devices/channel/target").get("name") == "org.qemu.guest_agent.0"
    installation = root.find(f"metadata/{{{METADATA_NS}}}instance/{{{METADATA_NS}}}installation")
    assert installation.text == SPEC.installation_id


@pytest.mark.parametrize("field", STRING_FIELDS)
@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_stays_inert_text(field: str, payload: str) -> None:
    root = ET.fromstring(render_domain(replace(SPEC, **{field: payload})))
    assert [child.tag for child in root.find("devices")] == EXPECTED_DEVICES
    assert root.find(".//hostdev") is None
    assert len(root.findall("devices/disk")) == 1
    values = [element.text for element in root.iter()]
    values += [value for element in root.iter() for value in element.attrib.values()]
    assert payload in values  # round-trips as plain text, exactly as given
