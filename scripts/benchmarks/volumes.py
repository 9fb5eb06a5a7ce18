"""(k) Volumes on qemu:///system: a volume made from an image against `qemu-img convert` of the
same file, a snapshot and revert against `qemu-img snapshot`, and a hot-plug into a running VM.
Each API side is timed from the request to its task's end, through the live server."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import libvirt  # type: ignore[import-untyped]

from scripts.harness.host import (
    TINY_IMAGE_NAME,
    IsolatedNetwork,
    purge_domains,
    purge_pools,
)
from src.config import Config

from .common import (
    TARGETS,
    Section,
    call,
    live_app,
    median_ms,
    ms,
    percentile,
    side_by_side,
    wait_task,
)


def _full_qcow2(path: Path, gib: int) -> None:
    """A qcow2 with every byte allocated, so a copy really moves gib GiB."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=full",
                    str(path), f"{gib}G"], check=True)


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def _task(url: str, method: str, path: str, body: object) -> float:
    """Seconds from the request to the end of the task it answers with."""
    started = time.perf_counter()
    reply = call(url, method, path, body, status=202)
    wait_task(url, (reply.body.get("task") or reply.body)["id"])
    return time.perf_counter() - started


def run(conn: libvirt.virConnect, root: Path, net: IsolatedNetwork, gib: int,
        runs: int) -> list[Section]:
    config = Config(db_path=root / "iaas.db", libvirt_uri="qemu:///system", domain_type="qemu",
                    images_dir=root / "images", instances_dir=root / "instances",
                    network=net.name, max_builds=2)
    _full_qcow2(root / "images" / "big.qcow2", gib)
    with live_app(config) as (app, url):
        try:
            return _measure(url, root, gib, runs)
        finally:
            purge_domains(conn, [], app.installation_id)
            purge_pools(conn, app.installation_id)


def _measure(url: str, root: Path, gib: int, runs: int) -> list[Section]:
    call(url, "POST", "/v1/images", {"name": "big", "file": "big.qcow2", "format": "qcow2"},
         status=201)
    call(url, "POST", "/v1/images", {"name": TINY_IMAGE_NAME, "file": "tiny-linux.qcow2",
                                     "format": "qcow2"}, status=201)
    images = root / "images"
    api, raw = [], []
    for index in range(runs):  # interleaved, so that both sides see the same machine
        api.append(_task(url, "POST", "/v1/volumes", {"name": f"copy-{index}", "size_gb": gib,
                                                      "image_name": "big"}))
        raw.append(_timed(["qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", "-o",
                           "compat=1.1", str(images / "big.qcow2"), str(root / "raw.qcow2")]))
        (root / "raw.qcow2").unlink()
        if index:  # keep one volume for the snapshots below
            _task(url, "DELETE", f"/v1/volumes/copy-{index}", None)
    create = side_by_side(
        "Volume from an image against qemu-img convert",
        f"A {gib} GiB fully allocated qcow2 image. API: `POST /v1/volumes` with `image_name` "
        "until its task ends (libvirt clones the image's volume into the volume pool, then "
        "grows it). Raw: `qemu-img convert -O qcow2` of the same file into the same "
        f"filesystem. {runs} runs each, interleaved.", "side",
        {"qemu-img convert": raw, "API volume create": api}, "API / convert",
        TARGETS["volume_create"])

    snap_api, snap_raw = [], []
    plain = root / "plain.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "qcow2",
                    str(images / "big.qcow2"), str(plain)], check=True)
    for index in range(runs):
        started = time.perf_counter()
        _task(url, "POST", "/v1/volumes/copy-0/snapshots", {"name": f"s{index}"})
        _task(url, "POST", "/v1/volumes/copy-0/revert", {"snapshot": f"s{index}"})
        snap_api.append(time.perf_counter() - started)
        snap_raw.append(_timed(["qemu-img", "snapshot", "-c", f"s{index}", str(plain)])
                        + _timed(["qemu-img", "snapshot", "-a", f"s{index}", str(plain)]))
    plain.unlink()
    snapshot = side_by_side(
        "Volume snapshot and revert against qemu-img snapshot",
        f"The {gib} GiB volume made above. API: `POST …/snapshots` then `POST …/revert` to it, "
        "each until its task ends (a new qcow2 layer on top, through libvirt's pool API, as on "
        "a remote host). Raw: `qemu-img snapshot -c` then `-a` on a copy of the same file "
        f"(internal snapshots). {runs} runs each, interleaved.", "side",
        {"qemu-img snapshot -c + -a": snap_raw, "API snapshot + revert": snap_api},
        "API / qemu-img", TARGETS["volume_snapshot"])
    return [create, snapshot, _hotplug(url, runs)]


def _hotplug(url: str, runs: int) -> Section:
    """Attach and detach a volume on a running tiny guest through the API."""
    vm = call(url, "POST", "/v1/vms", {"name": "plug", "cpu": 1, "ram": 256,
                                       "image_name": TINY_IMAGE_NAME}, status=202).body
    wait_task(url, vm["task"]["id"])
    _task(url, "POST", "/v1/volumes", {"name": "plugged", "size_gb": 1})
    deadline = time.monotonic() + 120
    while "IAAS-TINY-READY" not in call(url, "GET", f"/v1/vms/{vm['id']}/console?tail=50").body:
        if time.monotonic() > deadline:
            raise RuntimeError("the bench guest never booted")
        time.sleep(0.5)
    attach, detach = [], []
    for _ in range(runs):
        attach.append(_task(url, "POST", f"/v1/vms/{vm['id']}/volumes", {"volume": "plugged"}))
        detach.append(_task(url, "DELETE", f"/v1/vms/{vm['id']}/volumes/plugged", None))
    _task(url, "DELETE", f"/v1/vms/{vm['id']}", None)
    return Section(
        title="Hot-plug of a volume into a running VM",
        method=("A running tiny guest (TCG, machine pc). API: `POST /v1/vms/{vm}/volumes` and "
                "`DELETE /v1/vms/{vm}/volumes/{volume}`, each until its task ends; the detach "
                f"waits until the guest has let go of the disk. {runs} runs."),
        header=["step", "median", "p95"],
        rows=[["attach (hot-plug)", median_ms(attach), ms(percentile(attach, 95))],
              ["detach (hot-unplug)", median_ms(detach), ms(percentile(detach, 95))]],
        notes=["The issue asks for the hot-plug's median, with no target."])
