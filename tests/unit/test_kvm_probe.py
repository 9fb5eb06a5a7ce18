"""The KVM probe without libvirt: its domain XML, the verdict from two trial boots, and what it
writes to the env file (never over a value someone chose, never without being asked)."""
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from scripts.harness.host import REPO
from src.config import Config, load_config, read_env_file
from src.hypervisor.disks import QemuImg, run_command
from src.hypervisor.domain_xml import domain_name
from src.hypervisor.probe_domain import ProbeSpec, render_probe
from src.hypervisor.trial_boot import TrialBoot
from src.services.hosts import kvm_probe
from src.services.hosts.kvm_probe import Verdict

PROBE_ID = "6f1c9a52-6a38-4d0e-9a3e-1d5b8f4f2a10"
SPEC = ProbeSpec(uuid=PROBE_ID, name=kvm_probe.PROBE_PREFIX + PROBE_ID, title="KVM probe",
                 domain_type="kvm", ram_mib=128, disk_path="/var/lib/x/disk.qcow2",
                 console_log="/var/lib/x/console.log")
USERS_FILE = "# the user's own file\nIAAS_PORT=8001\n"
LOCAL = Config(db_path=Path("/nonexistent/iaas.db"))  # qemu:///system, kvm


def test_the_probe_domain_has_no_network_and_passes_libvirts_schema(tmp_path: Path) -> None:
    xml = render_probe(SPEC)
    root = ET.fromstring(xml)
    assert root.get("type") == "kvm"
    assert [device.tag for device in root.find("devices")] == ["disk", "serial", "console"]
    assert root.find("devices/serial/log").get("file") == SPEC.console_log
    path = tmp_path / "probe.xml"
    path.write_text(xml)
    checked = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True,
                             text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_probe_domain_is_never_named_as_a_vm() -> None:
    assert SPEC.name != domain_name(PROBE_ID)
    assert not SPEC.name.removeprefix("iaas-")[0] in "0123456789abcdef"  # a VM's: iaas-<uuid>


def test_values_cannot_change_the_probe_documents_structure() -> None:
    hostile = "x'/><interface type='network'/><x a='"
    root = ET.fromstring(render_probe(ProbeSpec(**{**SPEC.__dict__, "title": hostile,
                                                   "disk_path": hostile})))
    assert root.find("devices/interface") is None
    assert root.find("title").text == hostile


class Boots:
    """Trial boots that end as told, by domain type; remembers what it was asked to boot."""

    def __init__(self, **outcomes: str) -> None:
        self.outcomes = outcomes
        self.booted: list[tuple[str, str, bool]] = []

    def __call__(self, uri: str, xml: str, console: Path, marker: bytes,
                 deadline_s: float) -> TrialBoot:
        root = ET.fromstring(xml)
        disk = Path(root.find("devices/disk/source").get("file"))
        self.booted.append((root.get("type"), root.find("name").text, disk.is_file()))
        assert console.parent == disk.parent and marker == kvm_probe.BOOT_MARKER
        assert deadline_s == kvm_probe.DEADLINE_S[root.get("type")]
        return TrialBoot(self.outcomes[root.get("type")], "as told", 1.5)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    images = tmp_path / "images"
    images.mkdir()
    run_command(["qemu-img", "create", "-q", "-f", "qcow2", str(images / kvm_probe.TINY_FILE),
                 "16M"])
    return Config(db_path=tmp_path / "iaas.db", images_dir=images,
                  instances_dir=tmp_path / "instances")


def _probe(config: Config, boots: Boots) -> Verdict:
    return kvm_probe.probe(config, config.images_dir / kvm_probe.TINY_FILE, QemuImg(), boots)


@pytest.mark.parametrize("kvm, qemu, verdict, emulated", [
    ("booted", "booted", "kvm", False),  # the control is not booted at all
    ("halted", "booted", "qemu", True),
    ("silent", "booted", "qemu", True),
    ("refused", "booted", "qemu", True),
    ("halted", "halted", None, True),  # not KVM's fault: nothing to write
    ("refused", "refused", None, True),
])
def test_the_verdict_comes_from_the_kvm_boot_and_its_emulated_control(
        config: Config, kvm: str, qemu: str, verdict: str | None, emulated: bool) -> None:
    boots = Boots(kvm=kvm, qemu=qemu)
    assert _probe(config, boots).domain_type == verdict
    assert [booted[0] for booted in boots.booted] == ["kvm", "qemu"][:1 + emulated]
    for _type, name, disk_made in boots.booted:
        assert name.startswith(kvm_probe.PROBE_PREFIX) and disk_made
    assert len({name for _type, name, _disk in boots.booted}) == len(boots.booted)
    assert list(config.instances_dir.iterdir()) == []  # each trial's folder went with it


def test_a_missing_tiny_guest_cannot_tell(config: Config) -> None:
    boots = Boots()
    verdict = kvm_probe.probe(config, config.images_dir / "absent.qcow2", QemuImg(), boots)
    assert verdict.domain_type is None and "absent.qcow2 is missing" in verdict.reason
    assert boots.booted == []


def test_a_killed_probes_folder_is_removed_by_the_next_and_a_running_ones_kept(
        config: Config) -> None:
    config.instances_dir.mkdir()
    stale, running, vm = (config.instances_dir / name for name in (
        kvm_probe.PROBE_PREFIX + "killed", kvm_probe.PROBE_PREFIX + "running", PROBE_ID))
    for folder in (stale, running, vm):
        folder.mkdir()
        old = os.stat(folder).st_mtime - kvm_probe.STALE_S - 1
        os.utime(folder, (old, old) if folder != running else None)
    _probe(config, Boots(kvm="booted"))
    assert sorted(config.instances_dir.iterdir()) == sorted([running, vm])


def _never() -> Verdict:
    raise AssertionError("probed though IAAS_DOMAIN_TYPE was chosen")


@pytest.mark.parametrize("environ, file_line", [
    ({"IAAS_DOMAIN_TYPE": "kvm"}, ""),
    ({"IAAS_DOMAIN_TYPE": ""}, ""),  # empty: it would hide what the probe wrote
    ({}, "IAAS_DOMAIN_TYPE=kvm\n"),
    ({}, "IAAS_DOMAIN_TYPE='qemu'\n"),
    ({}, "IAAS_DOMAIN_TYPE=\n"),
])
def test_a_chosen_domain_type_is_kept_and_not_probed(tmp_path: Path, environ: dict[str, str],
                                                      file_line: str) -> None:
    env_file = tmp_path / "iaas.env"
    env_file.write_text(USERS_FILE + file_line)
    said = kvm_probe.settle_domain_type(LOCAL, env_file, environ, _never)
    assert "KVM not probed" in said
    assert env_file.read_text() == USERS_FILE + file_line


def test_a_remote_libvirt_is_not_probed(tmp_path: Path) -> None:
    env_file = tmp_path / "iaas.env"
    said = kvm_probe.settle_domain_type(Config(db_path=LOCAL.db_path, libvirt_uri="test:///default"), env_file, {},
                                        _never)
    assert "is not a local QEMU: KVM not probed" in said and not env_file.exists()


@pytest.mark.parametrize("verdict", [Verdict("kvm", "it booted"), Verdict(None, "no answer")])
def test_only_a_qemu_verdict_writes(tmp_path: Path, verdict: Verdict) -> None:
    env_file = tmp_path / "iaas.env"
    env_file.write_text(USERS_FILE)
    said = kvm_probe.settle_domain_type(LOCAL, env_file, {}, lambda: verdict)
    assert verdict.reason in said and "IAAS_DOMAIN_TYPE" in said
    assert env_file.read_text() == USERS_FILE


@pytest.mark.parametrize("before", [None, USERS_FILE, USERS_FILE.rstrip("\n")])
def test_a_qemu_verdict_is_written_after_the_users_lines_with_why_and_how_to_undo(
        tmp_path: Path, before: str | None) -> None:
    env_file = tmp_path / "iaas.env"
    if before is not None:
        env_file.write_text(before)
    said = kvm_probe.settle_domain_type(LOCAL, env_file, {},
                                        lambda: Verdict("qemu", "QEMU paused the KVM guest"))
    assert "KVM does not work on qemu:///system: QEMU paused the KVM guest" in said
    assert str(env_file) in said
    text = env_file.read_text()
    assert text.startswith((before or "").rstrip("\n"))
    assert read_env_file(env_file) == {**({"IAAS_PORT": "8001"} if before else {}),
                                       "IAAS_DOMAIN_TYPE": "qemu"}
    assert "QEMU paused the KVM guest" in text and "delete these lines" in text
    assert load_config({}, env_file=env_file).domain_type == "qemu"
    again = kvm_probe.settle_domain_type(LOCAL, env_file, {}, _never)
    assert "IAAS_DOMAIN_TYPE=qemu is set in" in again and env_file.read_text() == text


def test_the_cli_probes_the_env_file_it_is_given_only(tmp_path: Path) -> None:
    env_file = tmp_path / "iaas.env"
    env_file.write_text("IAAS_LIBVIRT_URI=test:///default\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("IAAS_")}
    done = subprocess.run([sys.executable, "-m", "src.cli", "probe-kvm", "--env-file",
                           str(env_file)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "IAAS_LIBVIRT_URI=test:///default is not a local QEMU" in done.stdout
    assert env_file.read_text() == "IAAS_LIBVIRT_URI=test:///default\n"
