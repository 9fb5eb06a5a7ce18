"""Whether KVM guests run on this machine's libvirt, asked at set-up: the tiny guest booted
without a network with type='kvm' (when it does not run, with type='qemu' too, to show that the
fault is KVM's) and, when only QEMU's emulation works, IAAS_DOMAIN_TYPE=qemu written where it
shows."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from src.config import Config, add_to_env_file, read_env_file
from src.hypervisor.disks import CommandFailed, QemuImg
from src.hypervisor.errors import HypervisorError
from src.hypervisor.probe_domain import ProbeSpec, render_probe
from src.hypervisor.trial_boot import TrialBoot, trial_boot

KEY = "IAAS_DOMAIN_TYPE"
# Never a VM's domain name (iaas-<uuid>), and unique per probe.
PROBE_PREFIX = "iaas-kvm-probe-"
TINY_FILE = "tiny-linux.qcow2"  # `make serve` installs it before it probes
BOOT_MARKER = b"IAAS-TINY-BOOT-OK"  # the tiny guest's first line on its serial console
# A working KVM gets there in about a second; a broken one pauses the guest within seconds.
# Emulation (the control) is slower, all the more on a busy machine.
DEADLINE_S = {"kvm": 30.0, "qemu": 120.0}
# A probe folder this old lost its probe (killed before it could remove it): far longer than
# a probe runs, so a probe that runs beside this one keeps its folder.
STALE_S = 3600.0
Boot = Callable[[str, str, Path, bytes, float], TrialBoot]


@dataclass(frozen=True)
class Verdict:
    """The domain type that works (None: the probe could not tell) and why."""

    domain_type: str | None
    reason: str


def probe(config: Config, image: Path, qemu_img: QemuImg, boot: Boot = trial_boot) -> Verdict:
    """Boot the tiny guest with type='kvm' and, if it does not run, with type='qemu'."""
    if not image.is_file():
        return Verdict(None, f"the tiny guest {image} is missing (`make image` builds it)")
    try:
        kvm = _trial(config, image, "kvm", qemu_img, boot)
        if kvm.ran:
            return Verdict("kvm", f"a KVM guest booted in {kvm.seconds:.1f} s")
        control = _trial(config, image, "qemu", qemu_img, boot)
    except HypervisorError as exc:
        return Verdict(None, f"libvirt at {config.libvirt_uri} did not answer: {exc.summary}")
    except CommandFailed as exc:
        return Verdict(None, f"qemu-img could not make the probe's disk: {exc.detail[:300]}")
    failed = f"a KVM guest did not run ({kvm.outcome}: {kvm.detail}, after {kvm.seconds:.1f} s)"
    if not control.ran:
        return Verdict(None, f"{failed}, and an emulated (qemu) guest did not either "
                             f"({control.outcome}: {control.detail}): the fault is not KVM's")
    return Verdict("qemu", f"{failed}, while an emulated (qemu) guest booted in "
                           f"{control.seconds:.1f} s")


def _trial(config: Config, image: Path, domain_type: str, qemu_img: QemuImg,
           boot: Boot) -> TrialBoot:
    """One boot in a folder of its own under IAAS_INSTANCES_DIR, removed whatever happens."""
    config.instances_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
    remove_stale_folders(config.instances_dir, time.time())
    folder = Path(tempfile.mkdtemp(prefix=PROBE_PREFIX, dir=config.instances_dir))
    try:
        os.chmod(folder, 0o711)  # QEMU's user passes through, as for a VM's folder
        disk, console = folder / "disk.qcow2", folder / "console.log"
        qemu_img.create_overlay(image.resolve(), "qcow2", disk, None)
        os.chmod(disk, 0o600)
        probe_id = str(uuid.uuid4())
        spec = ProbeSpec(uuid=probe_id, name=PROBE_PREFIX + probe_id, title="KVM probe (set-up)",
                         domain_type=domain_type, ram_mib=128, disk_path=str(disk),
                         console_log=str(console))
        return boot(config.libvirt_uri, render_probe(spec), console, BOOT_MARKER,
                    DEADLINE_S[domain_type])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def remove_stale_folders(instances_dir: Path, now: float) -> None:
    """Remove the folders of probes that were killed (libvirt removed their guests)."""
    for folder in instances_dir.glob(PROBE_PREFIX + "*"):
        if folder.is_dir() and now - folder.stat().st_mtime > STALE_S:
            shutil.rmtree(folder, ignore_errors=True)


def settle_domain_type(config: Config, env_file: Path, environ: Mapping[str, str],
                       run_probe: Callable[[], Verdict]) -> str:
    """Probe unless someone chose IAAS_DOMAIN_TYPE already (in the environment or env_file);
    when only emulation works, append IAAS_DOMAIN_TYPE=qemu to env_file, saying why and how to
    undo it. Returns what to tell the operator."""
    if KEY in environ:  # even empty: it would hide a value written to env_file
        return f"{KEY}={environ[KEY]} is set in the environment: KVM not probed"
    written = read_env_file(env_file)
    if KEY in written:
        return (f"{KEY}={written[KEY]} is set in {env_file}: KVM not probed (delete that line "
                "to probe again)")
    if not config.libvirt_uri.startswith("qemu:///"):
        return f"IAAS_LIBVIRT_URI={config.libvirt_uri} is not a local QEMU: KVM not probed"
    verdict = run_probe()
    if verdict.domain_type == "kvm":
        return f"KVM works on {config.libvirt_uri}: {verdict.reason}; VMs use {KEY}=kvm"
    if verdict.domain_type is None:
        return (f"KVM probe could not tell ({verdict.reason}); {KEY} stays "
                f"{config.domain_type}")
    add_to_env_file(env_file, KEY, "qemu", [
        f"Written by the KVM probe of `make serve` on {date.today().isoformat()}.",
        f"On {config.libvirt_uri}, {verdict.reason}.",
        "VMs use QEMU's software emulation instead (slower, but they run).",
        "To use KVM again once it works: delete these lines (the next `make serve` probes",
        f"again), or set {KEY}=kvm here or in the environment."])
    return (f"KVM does not work on {config.libvirt_uri}: {verdict.reason}. VMs use {KEY}=qemu "
            f"(software emulation), written to {env_file}; delete it there to probe again")
