"""Domain XML: golden output, and no user value can change the document's structure."""
import subprocess
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from src.hypervisor.domain_xml import (
    HOTPLUG_ROOT_PORTS,
    METADATA_NS,
    DiskSpec,
    DomainSpec,
    NicSpec,
    domain_name,
    has_agent_channel,
    render_disk,
    render_domain,
    root_ports,
    template_has_agent_channel,
)
from src.hypervisor.pci import split_address
from src.services.vms.build_record import Placement, VfClaim

GOLDEN = Path(__file__).parent / "golden" / "domain.xml"

VM_ID = "6f1c9a52-6a38-4d0e-9a3e-1d5b8f4f2a10"
SPEC = DomainSpec(
    uuid=VM_ID, name=domain_name(VM_ID), title="vm-chulhee-01", domain_type="kvm", cpu=2,
    ram_mib=2048, disk_path="/var/lib/libvirt/images/iaas-instances/6f1c/disk.qcow2",
    disk_format="qcow2", nics=(NicSpec("default", "52:54:00:12:ab:ef"),),
    console_log="/var/lib/libvirt/images/iaas-instances/6f1c/console.log",
    installation_id="0b8e2d1c-0000-4000-8000-000000000001", image_name="Ubuntu-Base-22.04",
    seed_path="/var/lib/libvirt/images/iaas-instances/6f1c/seed.iso")

EXPECTED_DEVICES = ["disk", "disk", "interface", "serial", "console", "channel", "graphics", "video",
                    "memballoon"]
INJECTIONS = [
    "x'/><hostdev mode='subsystem'/><x a='",
    'x"/><disk type="file"/><y z="',
    "</name><devices><hostdev/></devices><name>",
    "<![CDATA[<hostdev/>]]>",
    "&lt;hostdev/&gt;&amp;",
    "{{ 7*7 }}{% raw %}",
]
STRING_FIELDS = ["name", "title", "disk_path", "console_log", "installation_id", "image_name",
                 "uuid", "domain_type", "disk_format", "seed_path"]


Golden = Callable[[Path, str], None]


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Golden:
    """check(path, rendered): rendered must be the golden file's text; with
    --regenerate-golden, the file is rewritten instead (and a warning names it)."""
    regenerate = bool(request.config.getoption("--regenerate-golden"))

    def check(path: Path, rendered: str) -> None:
        if not regenerate:
            assert rendered == path.read_text(), f"{path.name} differs (--regenerate-golden)"
        elif not path.exists() or path.read_text() != rendered:
            path.write_text(rendered)
            warnings.warn(f"rewrote {path}: review it with git diff", stacklevel=2)

    return check


def test_matches_golden_file(golden: Golden) -> None:
    golden(GOLDEN, render_domain(SPEC))


def test_has_the_devices_and_features_every_vm_needs() -> None:
    root = ET.fromstring(render_domain(SPEC))
    assert [child.tag for child in root.find("devices")] == EXPECTED_DEVICES
    assert root.find("features/acpi") is not None and root.find("features/apic") is not None
    assert root.find("devices/disk/target").get("bus") == "virtio"
    assert root.find("devices/interface/model").get("type") == "virtio"
    assert root.find("devices/graphics").get("listen") == "127.0.0.1"
    assert root.find("devices/serial/log").get("file") == SPEC.console_log
    assert root.find("devices/interface/mac").get("address") == SPEC.nics[0].mac
    assert root.find("devices/channel/target").get("name") == "org.qemu.guest_agent.0"
    seed = root.findall("devices/disk")[1]
    assert seed.get("device") == "disk" and seed.find("readonly") is not None
    assert seed.find("target").attrib == {"dev": "vdb", "bus": "virtio"}
    assert seed.find("source").get("file") == SPEC.seed_path
    installation = root.find(f"metadata/{{{METADATA_NS}}}instance/{{{METADATA_NS}}}installation")
    assert installation.text == SPEC.installation_id


def test_domain_is_named_by_its_uuid_and_titled_with_the_vm_name() -> None:
    root = ET.fromstring(render_domain(SPEC))
    assert root.findtext("name") == "iaas-6f1c9a52-6a38-4d0e-9a3e-1d5b8f4f2a10"
    assert root.findtext("uuid") == SPEC.uuid
    assert root.findtext("title") == "vm-chulhee-01"  # what `virsh list --title` shows
    assert [child.tag for child in root][:3] == ["name", "title", "uuid"]


@pytest.mark.parametrize("field", STRING_FIELDS)
@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_stays_inert_text(field: str, payload: str) -> None:
    root = ET.fromstring(render_domain(replace(SPEC, **{field: payload})))
    assert [child.tag for child in root.find("devices")] == EXPECTED_DEVICES
    assert root.find(".//hostdev") is None
    assert len(root.findall("devices/disk")) == 2
    values = [element.text for element in root.iter()]
    values += [value for element in root.iter() for value in element.attrib.values()]
    assert payload in values  # round-trips as plain text, exactly as given


@pytest.mark.parametrize("field", ["network", "mac"])
@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_into_a_nic_stays_inert_text(field: str, payload: str) -> None:
    nic = replace(SPEC.nics[0], **{field: payload})
    root = ET.fromstring(render_domain(replace(SPEC, nics=(nic,))))
    assert [child.tag for child in root.find("devices")] == EXPECTED_DEVICES
    values = [value for element in root.iter() for value in element.attrib.values()]
    assert payload in values


def test_each_nic_is_an_interface_in_order() -> None:
    nics = (NicSpec("lab", "52:54:00:00:00:0a"), NicSpec("data", "52:54:00:00:00:0b"))
    root = ET.fromstring(render_domain(replace(SPEC, nics=nics)))
    found = [(i.find("source").get("network"), i.find("mac").get("address"))
             for i in root.findall("devices/interface")]
    assert found == [("lab", "52:54:00:00:00:0a"), ("data", "52:54:00:00:00:0b")]
    assert root_ports(replace(SPEC, nics=nics, machine="q35")) == root_ports(
        replace(SPEC, machine="q35")) + 1  # the second NIC takes a root port of its own


GPU_GOLDEN = Path(__file__).parent / "golden" / "domain-gpu.xml"
GPU_SPEC = replace(SPEC, machine="q35", cpu_mode="host-passthrough",
                   hostdevs=((0, 0x3b, 0, 0), (0, 0x3b, 0, 1)), numa_node=1, cpuset="8-15",
                   pinned_cpus=(8, 9), hugepages=True)


def test_gpu_vm_matches_golden_file(golden: Golden) -> None:
    golden(GPU_GOLDEN, render_domain(GPU_SPEC))


def test_gpu_vm_has_passthrough_numa_and_hugepages() -> None:
    root = ET.fromstring(render_domain(GPU_SPEC))
    assert root.find("os/type").get("machine") == "q35"
    assert root.find("cpu").get("mode") == "host-passthrough"
    hostdevs = root.findall("devices/hostdev")
    assert [h.get("managed") for h in hostdevs] == ["yes", "yes"]
    assert [h.find("source/address").get("function") for h in hostdevs] == ["0x0", "0x1"]
    assert root.find("devices/hostdev/source/address").get("bus") == "0x3b"
    assert root.find("numatune/memory").attrib == {"mode": "strict", "nodeset": "1"}
    assert root.find("vcpu").get("cpuset") == "8-15"
    assert [(p.get("vcpu"), p.get("cpuset")) for p in root.iterfind("cputune/vcpupin")] == [
        ("0", "8"), ("1", "9")]
    assert root.find("memoryBacking/hugepages") is not None


def test_cpu_only_vm_has_none_of_it() -> None:
    root = ET.fromstring(render_domain(SPEC))
    for absent in ("cpu", "numatune", "cputune", "memoryBacking", "devices/hostdev"):
        assert root.find(absent) is None, absent
    assert root.find("vcpu").get("cpuset") is None
    assert root.find("os/type").get("machine") == "pc"


DATASET = DiskSpec(path="/var/lib/libvirt/images/iaas-volumes/0b8e2d1c-vol-5e2f-1.qcow2",
                   format="qcow2", target_dev="vdc", serial="vol-5e2f04a1c3d94b7e",
                   read_only=True, shareable=True)
SCRATCH = DiskSpec(path="/var/lib/libvirt/images/iaas-volumes/0b8e2d1c-vol-77aa-3.qcow2",
                   format="qcow2", target_dev="vdd", serial="vol-77aa0c1e9b0f4d21")
VOLUMES_SPEC = replace(SPEC, volumes=(DATASET, SCRATCH))
VOLUMES_GOLDEN = Path(__file__).parent / "golden" / "domain-volumes.xml"
DISK_GOLDEN = Path(__file__).parent / "golden" / "disk.xml"


@pytest.mark.parametrize("spec", [SPEC, GPU_SPEC, replace(GPU_SPEC, domain_type="qemu",
                                                         cpu_mode="maximum"),
                                  VOLUMES_SPEC, replace(GPU_SPEC, volumes=(DATASET, SCRATCH))],
                         ids=["cpu-only", "gpu-kvm", "gpu-tcg", "volumes", "gpu-volumes"])
def test_passes_libvirts_own_schema(spec: DomainSpec, tmp_path: Path) -> None:
    path = tmp_path / "domain.xml"
    path.write_text(render_domain(spec))
    result = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_our_template_gives_every_guest_an_agent_channel() -> None:
    assert has_agent_channel(render_domain(SPEC))
    assert template_has_agent_channel()


def test_a_domain_without_an_agent_channel_is_told_apart() -> None:
    root = ET.fromstring(render_domain(SPEC))
    devices = root.find("devices")
    assert devices is not None
    for channel in devices.findall("channel"):
        devices.remove(channel)
    assert not has_agent_channel(ET.tostring(root, encoding="unicode"))
    other = "<domain><devices><channel type='unix'><target type='virtio' name='org.example.0'/>" \
            "</channel></devices></domain>"
    assert not has_agent_channel(other)


def test_vm_with_volumes_matches_golden_file() -> None:
    assert render_domain(VOLUMES_SPEC) == VOLUMES_GOLDEN.read_text()


def test_a_volume_disk_alone_matches_golden_file() -> None:
    assert render_disk(DATASET) == DISK_GOLDEN.read_text()


def test_volumes_follow_the_root_and_the_seed_with_their_serials_and_modes() -> None:
    root = ET.fromstring(render_domain(VOLUMES_SPEC))
    disks = root.findall("devices/disk")
    assert [disk.find("target").get("dev") for disk in disks] == ["vda", "vdb", "vdc", "vdd"]
    dataset, scratch = disks[2:]
    assert dataset.find("source").get("file") == DATASET.path
    assert dataset.findtext("serial") == DATASET.serial
    assert dataset.find("readonly") is not None and dataset.find("shareable") is not None
    assert scratch.findtext("serial") == SCRATCH.serial
    assert scratch.find("readonly") is None and scratch.find("shareable") is None
    assert [disk.find("target").get("bus") for disk in disks] == ["virtio"] * 4
    assert [disk.find("driver").get("type") for disk in disks[2:]] == ["qcow2", "qcow2"]


def test_a_hot_plug_disk_is_the_same_element_the_vm_template_renders() -> None:
    in_domain = ET.fromstring(render_domain(VOLUMES_SPEC)).findall("devices/disk")[2]
    in_domain.tail = None
    assert ET.canonicalize(render_disk(DATASET), strip_text=True) == ET.canonicalize(
        ET.tostring(in_domain, encoding="unicode"), strip_text=True)


@pytest.mark.parametrize("payload", [p for p in INJECTIONS if not p.startswith("{{")])
def test_injection_into_a_volume_path_stays_inert_text(payload: str) -> None:
    spec = replace(VOLUMES_SPEC, volumes=(replace(SCRATCH, path="/" + payload),))
    root = ET.fromstring(render_domain(spec))
    assert root.find(".//hostdev") is None
    assert len(root.findall("devices/disk")) == 3
    assert root.findall("devices/disk")[2].find("source").get("file") == "/" + payload
    alone = ET.fromstring(render_disk(spec.volumes[0]))
    assert [child.tag for child in alone] == ["driver", "source", "target", "serial"]
    assert alone.find("source").get("file") == "/" + payload


@pytest.mark.parametrize(("field", "value"), [
    ("format", "vmdk"), ("format", "qcow2'/><x a='"), ("target_dev", "sda"),
    ("target_dev", "vdc'/>"), ("target_dev", "vd"), ("serial", "x" * 21), ("serial", ""),
    ("serial", "vol 1"), ("serial", "vol<1>"), ("path", "relative/disk.qcow2"), ("path", ""),
])
def test_a_disk_spec_refuses_what_libvirt_or_the_guest_would_not_take(field: str,
                                                                     value: str) -> None:
    with pytest.raises(ValueError, match=field.replace("_dev", "")):
        replace(SCRATCH, **{field: value})


def test_q35_gets_a_root_port_per_device_and_spares_for_hot_plug() -> None:
    for spec in (GPU_SPEC, replace(GPU_SPEC, volumes=(DATASET, SCRATCH)),
                 replace(GPU_SPEC, seed_path=None, hostdevs=())):
        root = ET.fromstring(render_domain(spec))
        controllers = [c.get("model") for c in root.iterfind("devices/controller")]
        assert controllers[0] == "pcie-root"
        assert controllers[1:] == ["pcie-root-port"] * root_ports(spec)
        # NIC, balloon, virtio-serial, USB; each disk; each GPU function; then the spares
        disks = len(root.findall("devices/disk"))
        assert root_ports(spec) == 4 + disks + len(spec.hostdevs) + HOTPLUG_ROOT_PORTS
    assert root_ports(replace(GPU_SPEC, hotplug_root_ports=0)) == 4 + 2 + 2


def test_pc_needs_no_root_ports() -> None:
    assert root_ports(VOLUMES_SPEC) == 0
    assert ET.fromstring(render_domain(VOLUMES_SPEC)).find("devices/controller") is None


MDEV_UUID = "b1ae8bf6-38b0-4c81-9d44-78ce3f520496"
MDEV_GOLDEN = Path(__file__).parent / "golden" / "domain-mdev.xml"
MDEV_SPEC = replace(SPEC, machine="q35", cpu_mode="host-passthrough", mdevs=(MDEV_UUID,))


def test_gpu_partition_vm_matches_golden_file(golden: Golden) -> None:
    golden(MDEV_GOLDEN, render_domain(MDEV_SPEC))


def test_gpu_partition_is_an_mdev_hostdev_by_uuid() -> None:
    root = ET.fromstring(render_domain(MDEV_SPEC))
    (hostdev,) = root.findall("devices/hostdev")
    assert hostdev.attrib == {"mode": "subsystem", "type": "mdev", "model": "vfio-pci",
                              "managed": "no"}
    assert hostdev.find("source/address").attrib == {"uuid": MDEV_UUID}
    assert root_ports(MDEV_SPEC) == root_ports(replace(MDEV_SPEC, mdevs=())) + 1


VF_GOLDEN = Path(__file__).parent / "golden" / "domain-vf.xml"
# What a VF flavor's build record passes through: the VF's own PCI function, nothing else.
VF_RECORD_PLACEMENT = Placement(vfs=(VfClaim("0b7d1e0e-5c4a-4f59-9d0f-3f1b7a2c9e11",
                                             "0000:3b:00.4", "0000:3b:00.0"),))
VF_SPEC = replace(SPEC, machine="q35", cpu_mode="host-passthrough", hostdevs=tuple(
    split_address(vf.address) for vf in VF_RECORD_PLACEMENT.vfs))


def test_virtual_function_vm_matches_golden_file(golden: Golden) -> None:
    golden(VF_GOLDEN, render_domain(VF_SPEC))


def test_a_virtual_function_is_a_managed_pci_hostdev_of_its_own_address(tmp_path: Path) -> None:
    root = ET.fromstring(render_domain(VF_SPEC))
    (hostdev,) = root.findall("devices/hostdev")
    assert hostdev.attrib == {"mode": "subsystem", "type": "pci", "managed": "yes"}
    assert hostdev.find("source/address").attrib == {
        "domain": "0x0000", "bus": "0x3b", "slot": "0x00", "function": "0x4"}
    path = tmp_path / "domain.xml"
    path.write_text(render_domain(VF_SPEC))
    result = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
