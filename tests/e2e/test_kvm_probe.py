"""The KVM probe of `make serve` on qemu:///system: its verdict agrees with what a real KVM VM
does on this machine, it writes IAAS_DOMAIN_TYPE=qemu only when that VM cannot run, and it
leaves no domain and no folder behind, even when it fails half-way or is killed."""
from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import libvirt  # type: ignore[import-untyped]
import pytest

from scripts.harness.host import REPO
from src.config import Config, load_config, read_env_file
from src.hypervisor.disks import QemuImg
from src.hypervisor.trial_boot import trial_boot
from src.services.hosts import kvm_probe
from tests.e2e.conftest import E2eAppFactory, register_tiny_image, served
from tests.e2e.http_client import HttpClient


def _kvm_vm_runs(client: HttpClient, app_sweep: object) -> tuple[bool, str]:
    """What a VM of IAAS_DOMAIN_TYPE=kvm does here, seen through the API: (runs, why)."""
    reply = client.post("/v1/vms", {"name": "kvm-truth", "cpu": 1, "ram": 128,
                                    "image_name": "tiny-linux"})
    assert reply.status == 202, reply.body
    vm_id = reply.body["id"]
    task = client.wait_task(reply.body["task"]["id"])
    if task["status"] != "succeeded":
        return False, f"it never started: {task['error']}"
    deadline = time.monotonic() + 120
    while True:
        shown = client.get(f"/v1/vms/{vm_id}").body
        if shown["status"] == "error":
            return False, f"{shown['error']['code']}: {shown['error']['message']}"
        console = client.get(f"/v1/vms/{vm_id}/console?tail=50").body
        if shown["status"] == "running" and kvm_probe.BOOT_MARKER.decode() in str(console):
            return True, "it booted"
        assert time.monotonic() < deadline, shown
        app_sweep.reconciler.request_sweep()  # type: ignore[attr-defined]
        time.sleep(0.5)


def _probe_env(config: Config, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("IAAS_")}
    return {**env, "IAAS_LIBVIRT_URI": "qemu:///system", "IAAS_IMAGES_DIR": str(config.images_dir),
            "IAAS_INSTANCES_DIR": str(config.instances_dir), **extra}


def _run_probe(config: Config, env_file: Path, **extra: str) -> str:
    done = subprocess.run([sys.executable, "-m", "src.cli", "probe-kvm", "--env-file",
                           str(env_file)], cwd=REPO, env=_probe_env(config, **extra),
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _ours(xml: str, config: Config) -> bool:
    """A probe of this test: its disk lies in the test's own instances dir (another run on
    this machine, or its `make serve`, may probe at the same time)."""
    return f"{config.instances_dir}/" in xml


def _probe_domains(conn: libvirt.virConnect, config: Config) -> list[str]:
    found = []
    for domain in conn.listAllDomains():
        if not domain.name().startswith(kvm_probe.PROBE_PREFIX):
            continue
        try:
            xml = domain.XMLDesc()
        except libvirt.libvirtError:
            continue  # gone meanwhile
        if _ours(xml, config):
            found.append(domain.name())
    return found


def _left_by_probes(config: Config) -> list[str]:
    """Probe domains of this test that `virsh list --all` shows, running, paused or defined."""
    listed = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
                            capture_output=True, text=True, timeout=60, check=True).stdout
    left = []
    for name in listed.split():
        if name.startswith(kvm_probe.PROBE_PREFIX):
            shown = subprocess.run(["virsh", "-c", "qemu:///system", "dumpxml", name],
                                   capture_output=True, text=True, timeout=60, check=False)
            if shown.returncode == 0 and _ours(shown.stdout, config):
                left.append(name)
    return left


@pytest.fixture(autouse=True)
def _repository_env_file_untouched() -> Iterator[None]:
    """Every probe here writes a temporary env file, never the repository's own."""
    real = REPO / "configs" / "iaas.env"
    before = real.read_bytes() if real.exists() else None
    yield
    assert (real.read_bytes() if real.exists() else None) == before, f"{real} was written"


def _probe_folders(config: Config) -> list[Path]:
    if not config.instances_dir.is_dir():
        return []
    return sorted(config.instances_dir.glob(kvm_probe.PROBE_PREFIX + "*"))


def test_the_probe_agrees_with_a_kvm_vm_here(make_e2e_app: E2eAppFactory, e2e_config: Config,
                                              tmp_path: Path) -> None:
    app = make_e2e_app(replace(e2e_config, domain_type="kvm"))
    with served(app) as client:
        register_tiny_image(client)
        runs, why = _kvm_vm_runs(client, app)
    env_file = tmp_path / "iaas.env"
    env_file.write_text("# the user's own file\nIAAS_PORT=8001\n")
    said = _run_probe(e2e_config, env_file)
    assert _left_by_probes(e2e_config) == [] and _probe_folders(e2e_config) == []
    written = read_env_file(env_file)
    if runs:
        assert "KVM works on qemu:///system" in said, (said, why)
        assert written == {"IAAS_PORT": "8001"}, (said, why)
    else:
        assert "KVM does not work on qemu:///system" in said, (said, why)
        assert written == {"IAAS_PORT": "8001", "IAAS_DOMAIN_TYPE": "qemu"}, (said, why)
        assert "an emulated (qemu) guest booted" in said
        if "paused_by_hypervisor" in why:  # the probe saw the same: QEMU paused the guest
            assert "halted: QEMU paused it" in said, (said, why)
        text = env_file.read_text()
        assert text.startswith("# the user's own file\nIAAS_PORT=8001\n# Written by the KVM")
        assert "delete these lines" in text
        assert load_config(environ={}, env_file=env_file).domain_type == "qemu"
    again = _run_probe(e2e_config, env_file)  # a chosen value is kept, and not probed again
    assert read_env_file(env_file) == written
    if not runs:
        assert f"IAAS_DOMAIN_TYPE=qemu is set in {env_file}: KVM not probed" in again


class Injected(Exception):
    """A failure in the middle of the probe's watch."""


def test_a_probe_that_fails_half_way_leaves_nothing(e2e_config: Config,
                                                    system_conn: libvirt.virConnect) -> None:
    seen: list[list[str]] = []

    def fail(_seconds: float) -> None:
        # the guest exists while it is watched
        seen.append(_probe_domains(system_conn, e2e_config))
        raise Injected

    image = e2e_config.images_dir / kvm_probe.TINY_FILE
    with pytest.raises(Injected):
        kvm_probe.probe(e2e_config, image, QemuImg(), functools.partial(trial_boot, pause=fail))
    assert len(seen) == 1 and len(seen[0]) == 1, seen
    assert _left_by_probes(e2e_config) == [] and _probe_folders(e2e_config) == []


def test_a_killed_probe_leaves_no_domain(e2e_config: Config, system_conn: libvirt.virConnect,
                                         tmp_path: Path) -> None:
    probe = subprocess.Popen([sys.executable, "-m", "src.cli", "probe-kvm", "--env-file",
                              str(tmp_path / "iaas.env")], cwd=REPO, env=_probe_env(e2e_config),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not _probe_domains(system_conn, e2e_config):
            assert probe.poll() is None and time.monotonic() < deadline, "no probe guest"
            time.sleep(0.1)
    finally:
        probe.send_signal(signal.SIGKILL)
        probe.wait(timeout=30)
    deadline = time.monotonic() + 30
    # libvirt destroys it with our connection
    while names := _probe_domains(system_conn, e2e_config):
        assert time.monotonic() < deadline, names
        time.sleep(0.2)
    assert _left_by_probes(e2e_config) == []
    assert not (tmp_path / "iaas.env").exists()
