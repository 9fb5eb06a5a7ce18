"""(b) A copy-on-write overlay against a full copy of the same base, as the base grows."""
from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path

from src.hypervisor.disks import QemuImg
from src.services.vms.provisioning import GIB

from .common import Section, ms

OVERLAY_RUNS = 5


def _base(path: Path, gib: int) -> None:
    """A qcow2 base with every byte allocated, so a copy really moves gib GiB."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=full",
                    str(path), f"{gib}G"], check=True)


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def run(root: Path, sizes_gib: tuple[int, ...]) -> Section:
    qemu_img = QemuImg()
    section = Section(
        title="Copy-on-write overlay against a full copy",
        method=(f"Bases of {', '.join(map(str, sizes_gib))} GiB, fully allocated qcow2 in "
                "the images directory's filesystem. Overlay: what a create runs "
                f"(`qemu-img create -b`, median of {OVERLAY_RUNS}). Full copy: `cp "
                "--sparse=never` of the same base, then `sync`, once."),
        header=["base", "overlay", "overlay file", "full copy", "copy / overlay"])
    for gib in sizes_gib:
        base = root / f"base-{gib}g.qcow2"
        _base(base, gib)
        overlays = []
        for run_index in range(OVERLAY_RUNS):
            overlay = root / f"overlay-{gib}-{run_index}.qcow2"
            started = time.perf_counter()
            qemu_img.create_overlay(base, "qcow2", overlay, gib * GIB)
            overlays.append(time.perf_counter() - started)
        overlay_bytes = (root / f"overlay-{gib}-0.qcow2").stat().st_size
        copy = _timed(["sh", "-c", f"cp --sparse=never '{base}' '{root}/copy.qcow2' && sync"])
        for path in root.glob("*.qcow2"):
            path.unlink()
        overlay_s = statistics.median(overlays)
        section.rows.append([f"{gib} GiB", ms(overlay_s), f"{overlay_bytes // 1024} KiB",
                             ms(copy), f"{copy / overlay_s:.0f}x"])
    section.notes.append("The overlay's time and size stay flat as the base grows; the copy "
                         "grows with it.")
    return section
