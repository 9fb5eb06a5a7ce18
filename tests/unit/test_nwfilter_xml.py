"""A VM's nwfilter XML: only checked values reach it."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from src.hypervisor.nwfilter_xml import (
    AllowRule,
    FilterSpec,
    filter_name,
    render_filter,
)

VM = "00000000-0000-4000-8000-000000000001"


def test_rules_render_as_inbound_accepts_before_the_final_drop() -> None:
    root = ET.fromstring(render_filter(FilterSpec(VM, (
        AllowRule("tcp", None, 0, 22, 22), AllowRule("udp", "10.0.0.0", 8, 53, 53),
        AllowRule("all", "192.168.1.7", 32)))))
    assert root.get("name") == filter_name(VM) and root.findtext("uuid") == VM
    rules = [(rule.get("action"), rule.get("direction"), int(rule.get("priority", "0")),
              rule[0].tag, dict(rule[0].attrib)) for rule in root.iter("rule")]
    assert ("accept", "in", 500, "udp", {"srcipaddr": "10.0.0.0", "srcipmask": "8",
                                          "dstportstart": "53", "dstportend": "53"}) in rules
    assert ("accept", "in", 500, "all", {"srcipaddr": "192.168.1.7", "srcipmask": "32"}) in rules
    assert rules[-1] == ("drop", "in", 1000, "all", {})
    assert max(priority for action, _, priority, _, _ in rules if action == "accept") < 1000


@pytest.mark.parametrize("args", [
    ("gre",), ("tcp", "10.0.0.1'/><rule", 32), ("tcp", "10.0.0.0", 33), ("icmp", None, 0, 1, 1),
    ("tcp", None, 0, 80, None), ("tcp", None, 0, 90, 80), ("udp", None, 0, 0, 10),
])
def test_values_nwfilter_would_not_take_are_refused(args: tuple[object, ...]) -> None:
    with pytest.raises(ValueError):
        AllowRule(*args)  # type: ignore[arg-type]


def test_a_filter_is_named_by_a_uuid_only() -> None:
    with pytest.raises(ValueError):
        render_filter(FilterSpec("x' name='other"))
