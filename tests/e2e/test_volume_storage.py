"""Volume files through libvirt's storage pool API on qemu:///system and on a qemu+tls:// host:
clones from an image are full copies, clones of an overlay are flat, growth only, downloads,
and a layer others are backed by is never deleted."""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt  # type: ignore[import-untyped]
import pytest

from scripts.harness.host import SYSTEM_URI, TINY_IMAGE
from scripts.harness.pools import remove_pool
from scripts.harness.remote_host import RemoteHost
from src.hypervisor.driver import Hypervisor
from src.hypervisor.errors import LayerInUse, ShrinkRefused
from src.hypervisor.storage import Pools

GIB = 1024 ** 3
TINY = TINY_IMAGE.name


def qemu_img(*argv: str) -> str:
    return subprocess.run(["qemu-img", *argv], capture_output=True, text=True,
                          check=True).stdout


def info(path: str | Path) -> dict[str, Any]:
    facts: dict[str, Any] = json.loads(qemu_img("info", "--output=json", "-U", str(path)))
    return facts


def same_content(first: str | Path, second: str | Path) -> bool:
    """What a guest reads from both is the same (the larger one is zero past the other's end)."""
    done = subprocess.run(["qemu-img", "compare", "-U", str(first), str(second)],
                          capture_output=True, text=True, check=False)
    return done.returncode == 0


def write_pattern(path: str, byte: int, offset: int) -> None:
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P {byte} {offset} 64k", path],
                   capture_output=True, check=True)


def reads_pattern(path: str, byte: int, offset: int) -> bool:
    done = subprocess.run(["qemu-io", "-r", "-U", "-f", "qcow2", "-c",
                           f"read -P {byte} {offset} 64k", path],
                          capture_output=True, text=True, check=True)
    return "Pattern verification failed" not in done.stdout


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def undefine_pool(conn: libvirt.virConnect, name: str) -> None:
    """Stop and forget a pool, leaving its directory and files (the images directory's)."""
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError:
        return
    if pool.isActive():
        pool.destroy()
    pool.undefine()


@dataclass(frozen=True)
class Store:
    pools: Pools
    images: str  # the pool over the images directory, with the tiny image
    volumes: str  # the volumes pool
    images_dir: Path


@pytest.fixture
def store(workspace: Path, system_conn: libvirt.virConnect) -> Iterator[Store]:
    tag = secrets.token_hex(4)
    hypervisor = Hypervisor(SYSTEM_URI)
    pools = hypervisor.pools
    images, volumes = f"iaas-e2e-images-{tag}", f"iaas-e2e-volumes-{tag}"
    try:
        assert pools.dir_pool(images, str(workspace / "images")) == images
        pools.ensure_dir_pool(volumes, str(workspace / "volumes"))
        yield Store(pools, images, volumes, workspace / "images")
    finally:
        remove_pool(system_conn, volumes)
        undefine_pool(system_conn, images)
        hypervisor.close()
    names = [pool.name() for pool in system_conn.listAllStoragePools()]
    assert images not in names and volumes not in names


def _facts(folder: Path) -> dict[str, tuple[int, int, int, int, str]]:
    return {path.name: (path.stat().st_mode, path.stat().st_uid, path.stat().st_gid,
                        path.stat().st_mtime_ns, sha256(path) if path.is_file() else "")
            for path in [folder, *folder.iterdir()]}


def test_a_pool_over_the_images_directory_changes_nothing_there(
        workspace: Path, system_conn: libvirt.virConnect) -> None:
    images = workspace / "images"
    os.chmod(images, 0o750)  # not the mode libvirt gives a pool it builds
    (images / "partial-upload").write_bytes(b"not an image yet")
    before = _facts(images)
    hypervisor, name = Hypervisor(SYSTEM_URI), f"iaas-e2e-images-{secrets.token_hex(4)}"
    try:
        assert hypervisor.pools.dir_pool(name, str(images)) == name
        assert hypervisor.pools.dir_pool("another-name", str(images)) == name  # the one there
        assert TINY in hypervisor.pools.volumes(name)
        assert _facts(images) == before
    finally:
        undefine_pool(system_conn, name)
        hypervisor.close()
    assert _facts(images) == before


def test_a_volume_from_an_image_is_a_full_copy_at_its_size(store: Store) -> None:
    started = time.monotonic()
    path = store.pools.clone_volume(store.volumes, "from-image.qcow2", store.images, TINY, GIB)
    print(f"clone of the tiny image into a 1 GiB volume: {time.monotonic() - started:.3f} s")
    facts = info(path)
    assert facts["format"] == "qcow2" and facts["virtual-size"] == GIB
    assert "backing-filename" not in facts  # depends on no image file
    assert facts["format-specific"]["data"]["compat"] == "1.1"
    assert same_content(path, store.images_dir / TINY)
    (store.images_dir / TINY).unlink()  # the image may go; the volume keeps its content
    volume = store.pools.volume_info(store.volumes, "from-image.qcow2")
    assert volume is not None and (volume.format, volume.capacity_bytes) == ("qcow2", GIB)
    with pytest.raises(ShrinkRefused):
        store.pools.clone_volume(store.volumes, "too-small.qcow2", store.volumes,
                                 "from-image.qcow2", GIB // 2)
    assert store.pools.volumes(store.volumes) == ["from-image.qcow2"]


def test_growing_keeps_the_content_and_never_shrinks(store: Store) -> None:
    path = store.pools.clone_volume(store.volumes, "grow.qcow2", store.images, TINY, GIB)
    store.pools.resize_volume(store.volumes, "grow.qcow2", 2 * GIB)
    assert info(path)["virtual-size"] == 2 * GIB
    with pytest.raises(ShrinkRefused, match="never shrunk"):
        store.pools.resize_volume(store.volumes, "grow.qcow2", GIB)
    assert info(path)["virtual-size"] == 2 * GIB
    assert same_content(path, store.images_dir / TINY)


def test_a_clone_of_an_overlay_is_flat_and_reads_the_same(store: Store, tmp_path: Path) -> None:
    pools = store.pools
    layer = pools.clone_volume(store.volumes, "layer-1.qcow2", store.images, TINY, GIB)
    write_pattern(layer, 0x61, 32 * 1024 ** 2)  # in the frozen layer only
    top = pools.create_volume(store.volumes, "layer-2.qcow2", GIB, "qcow2",
                              backing=(layer, "qcow2"))
    write_pattern(top, 0x62, 64 * 1024 ** 2)  # in the top only
    assert info(top)["backing-filename"] == layer
    flat = pools.clone_volume(store.volumes, "flat.qcow2", store.volumes, "layer-2.qcow2", GIB)
    assert "backing-filename" not in info(flat)
    assert same_content(flat, top)
    assert reads_pattern(flat, 0x61, 32 * 1024 ** 2) and reads_pattern(flat, 0x62, 64 * 1024 ** 2)
    done: list[int] = []
    with (tmp_path / "image.qcow2").open("wb") as out:
        written = pools.download_to(store.volumes, "flat.qcow2", out, done.append)
    assert written == done[-1] == (tmp_path / "image.qcow2").stat().st_size
    assert sha256(tmp_path / "image.qcow2") == sha256(Path(flat))
    assert "backing-filename" not in info(tmp_path / "image.qcow2")
    assert same_content(tmp_path / "image.qcow2", top)


def test_a_layer_a_volume_is_backed_by_is_never_deleted(store: Store) -> None:
    pools = store.pools
    layer = pools.create_volume(store.volumes, "snap.qcow2", GIB, "qcow2")
    pools.create_volume(store.volumes, "top.qcow2", GIB, "qcow2", backing=(layer, "qcow2"))
    before = sha256(Path(layer))
    with pytest.raises(LayerInUse, match="snap.qcow2 is the backing file of top.qcow2"):
        pools.delete_layer(store.volumes, "snap.qcow2")
    assert sha256(Path(layer)) == before
    pools.delete_layer(store.volumes, "top.qcow2")  # a child never takes its parent along
    assert Path(layer).exists() and sha256(Path(layer)) == before
    pools.delete_layer(store.volumes, "snap.qcow2")
    assert pools.volumes(store.volumes) == []


def test_volumes_on_a_remote_host_go_through_its_pools(remote_host: RemoteHost,
                                                       tmp_path: Path) -> None:
    hypervisor = Hypervisor(remote_host.uri)
    pool = f"iaas-e2e-vol-{secrets.token_hex(3)}"
    pools = hypervisor.pools
    try:
        pools.ensure_dir_pool(pool, f"/var/lib/libvirt/{pool}")
        # the base copy as pool hosts make it: a raw volume the image's bytes are sent into
        size = TINY_IMAGE.stat().st_size
        pools.create_volume(pool, "base.qcow2", size, "raw")
        with TINY_IMAGE.open("rb") as source:
            pools.upload(pool, "base.qcow2", source, size)
        started = time.monotonic()
        pools.clone_volume(pool, "vol-1.qcow2", pool, "base.qcow2", GIB)
        print(f"remote clone of the tiny image: {time.monotonic() - started:.3f} s")
        layer = pools.volume_path(pool, "vol-1.qcow2")
        assert layer is not None
        pools.create_volume(pool, "vol-2.qcow2", GIB, "qcow2", backing=(layer, "qcow2"))
        pools.resize_volume(pool, "vol-2.qcow2", 2 * GIB)
        pools.clone_volume(pool, "flat.qcow2", pool, "vol-2.qcow2", 2 * GIB)
        with (tmp_path / "flat.qcow2").open("wb") as out:
            pools.download_to(pool, "flat.qcow2", out)
        facts = info(tmp_path / "flat.qcow2")
        assert "backing-filename" not in facts and facts["virtual-size"] == 2 * GIB
        assert same_content(tmp_path / "flat.qcow2", TINY_IMAGE)
        with pytest.raises(LayerInUse):
            pools.delete_layer(pool, "vol-1.qcow2")
    finally:
        conn = remote_host.open()
        try:
            remove_pool(conn, pool)
        finally:
            conn.close()
        hypervisor.close()
