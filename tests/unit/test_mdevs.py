"""GPU partitions on the hypervisor side: mdev types read from node-device XML, and the node
device XML that asks libvirt for one mdev (nothing a caller passes can change its structure)."""
import xml.etree.ElementTree as ET

import pytest

from src.hypervisor.mdevs import MdevRequest, mdev_xml, node_device_name
from src.hypervisor.pci import MdevType, parse_node_device
from tests.integration.test_gpu_partitions import MDEV_TYPES, _gpu


def test_mdev_types_of_a_gpu_are_read_from_its_node_device() -> None:
    xml = _gpu("0000:3b:00.0", 12, MDEV_TYPES).replace("  <device>", "<device>", 1)
    device = parse_node_device(xml)
    assert device is not None and device.is_gpu
    assert device.mdev_types == (MdevType("nvidia-700", "NVIDIA H100-1-10C", "vfio-pci", 2),
                                 MdevType("nvidia-701", "NVIDIA H100-2-20C", "vfio-pci", 1))
    plain = parse_node_device(_gpu("0000:5e:00.0", 13))
    assert plain is not None and plain.mdev_types == ()


def test_the_mdev_request_names_parent_type_and_uuid() -> None:
    root = ET.fromstring(mdev_xml(MdevRequest("b1ae8bf6-38b0-4c81-9d44-78ce3f520496",
                                              "0000:3b:00.0", "nvidia-700")))
    assert root.findtext("parent") == "pci_0000_3b_00_0" == node_device_name("0000:3b:00.0")
    assert root.find("capability").get("type") == "mdev"
    assert root.find("capability/type").get("id") == "nvidia-700"
    assert root.findtext("capability/uuid") == "b1ae8bf6-38b0-4c81-9d44-78ce3f520496"


def test_a_type_id_cannot_add_markup_and_a_uuid_must_be_one() -> None:
    root = ET.fromstring(mdev_xml(MdevRequest("b1ae8bf6-38b0-4c81-9d44-78ce3f520496",
                                              "0000:3b:00.0", "x'/><uuid>evil</uuid><t a='")))
    assert len(root.findall("capability/uuid")) == 1
    with pytest.raises(ValueError):
        mdev_xml(MdevRequest("</uuid>", "0000:3b:00.0", "nvidia-700"))
