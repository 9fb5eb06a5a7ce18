"""Network XML: what a definition libvirt holds says (mode, subnet, bridge), and the definitions
the API makes (built as a tree: no value becomes markup)."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from src.hypervisor.networks import NetworkSpec, facts_of, network_xml


@pytest.mark.parametrize(("forward", "mode"), [
    ("", "isolated"), ("<forward/>", "nat"), ("<forward mode='nat'/>", "nat"),
    ("<forward mode='route'/>", "route"), ("<forward mode='open'/>", "open"),
    ("<forward mode='bridge'/>", "bridge"), ("<forward mode='passthrough'/>", "bridge"),
])
def test_the_mode_is_read_from_forward(forward: str, mode: str) -> None:
    xml = (f"<network><name>n</name>{forward}<bridge name='virbr9'/>"
           "<ip address='10.9.0.1' prefix='16'/><ip family='ipv6' address='fd00::1' prefix='64'/>"
           "</network>")
    facts = facts_of(xml, active=True)
    assert (facts.name, facts.mode, facts.subnet, facts.bridge, facts.active) == (
        "n", mode, "10.9.0.0/16", "virbr9", True)


def test_a_network_without_ipv4_has_no_subnet() -> None:
    assert facts_of("<network><name>lan</name><forward mode='bridge'/>"
                    "<bridge name='br0'/></network>", active=False).subnet is None


def test_definitions_of_each_mode() -> None:
    nat = ET.fromstring(network_xml(NetworkSpec("n", "nat", "10.60.0.0/29")))
    assert nat.find("forward").get("mode") == "nat"  # type: ignore[union-attr]
    assert [nat.find("ip").get(k) for k in ("address", "netmask")] == [  # type: ignore[union-attr]
        "10.60.0.1", "255.255.255.248"]
    assert [nat.find("ip/dhcp/range").get(k) for k in ("start", "end")] == [  # type: ignore[union-attr]
        "10.60.0.2", "10.60.0.6"]
    bridge = ET.fromstring(network_xml(NetworkSpec("lan", "bridge", bridge="br0")))
    assert bridge.find("ip") is None and bridge.find("bridge").get("name") == "br0"  # type: ignore[union-attr]
    odd = "a'/><forward mode='nat'/><x y='"
    isolated = ET.fromstring(network_xml(NetworkSpec(odd, "isolated", "10.61.0.0/24")))
    assert isolated.findtext("name") == odd and isolated.find("forward") is None


@pytest.mark.parametrize(("mode", "subnet", "bridge"), [
    ("bridge", None, None), ("bridge", "10.0.0.0/24", "br0"), ("isolated", None, None),
    ("nat", "10.0.0.0/24", "br0"), ("isolated", "10.0.0.1/24", None),
    ("isolated", "10.0.0.0/31", None), ("isolated", "10.0.0.0/7", None),
])
def test_parts_that_do_not_fit_the_mode_are_refused(mode: str, subnet: str | None,
                                                    bridge: str | None) -> None:
    with pytest.raises(ValueError):
        NetworkSpec("n", mode, subnet, bridge)
