"""Storage through libvirt alone: a dir pool, uploads and downloads by stream, qcow2 overlays.

A remote host's files are reachable only through its libvirtd, so tests and benchmarks move
images and console logs with virStorageVol.upload/download rather than the filesystem.
"""
from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

import libvirt  # type: ignore[import-untyped]

POOL_NAME = "iaas"
POOL_PATH = "/var/lib/libvirt/iaas"  # as the host's libvirtd sees it
POOL_XML = """<pool type='dir'>
  <name>{name}</name>
  <target><path>{path}</path></target>
</pool>
"""
RAW_VOLUME_XML = """<volume>
  <name>{name}</name>
  <capacity unit='bytes'>{size}</capacity>
  <allocation unit='bytes'>0</allocation>
  <target><format type='raw'/></target>
</volume>
"""
OVERLAY_XML = """<volume>
  <name>{name}</name>
  <capacity unit='bytes'>{capacity}</capacity>
  <target><format type='qcow2'/></target>
  <backingStore>
    <path>{backing_path}</path>
    <format type='{backing_format}'/>
  </backingStore>
</volume>
"""
_CHUNK = 1 << 20


def start_dir_pool(conn: libvirt.virConnect, name: str = POOL_NAME,
                   path: str = POOL_PATH) -> libvirt.virStoragePool:
    """Define, build (mkdir) and start a dir pool with autostart; the API under test makes its
    own when missing, so only tests that need a pool before the API call this."""
    pool = conn.storagePoolDefineXML(POOL_XML.format(name=escape(name), path=escape(path)), 0)
    try:
        pool.build(0)
        pool.create(0)
        pool.setAutostart(1)
    except libvirt.libvirtError:
        pool.undefine()
        raise
    return pool


def remove_pool(conn: libvirt.virConnect, name: str = POOL_NAME) -> None:
    """Delete every volume of the pool, then its dir, then the pool; a missing pool is fine."""
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
            return
        raise
    if not pool.isActive():
        pool.create(0)
    pool.refresh(0)
    for volume in pool.listAllVolumes(0):
        volume.delete(0)
    pool.destroy()
    pool.delete(0)
    pool.undefine()


def upload_file(conn: libvirt.virConnect, pool: libvirt.virStoragePool, name: str,
                source: Path) -> libvirt.virStorageVol:
    """A new volume holding source's bytes, sent over the connection's stream.

    The volume is made raw and the pool refreshed after, so libvirt probes what was sent (a
    qcow2 file shows as qcow2, with its virtual size as capacity).
    """
    size = source.stat().st_size
    volume = pool.createXML(RAW_VOLUME_XML.format(name=escape(name), size=size), 0)
    stream = conn.newStream(0)
    try:
        volume.upload(stream, 0, size, 0)
        with source.open("rb") as data:
            stream.sendAll(lambda _stream, nbytes, handle: handle.read(min(nbytes, _CHUNK)),
                           data)
        stream.finish()
    except libvirt.libvirtError:
        _abort(stream)
        volume.delete(0)
        raise
    pool.refresh(0)
    return pool.storageVolLookupByName(name)


def download(conn: libvirt.virConnect, volume: libvirt.virStorageVol) -> bytes:
    """All of a volume's bytes, through the connection's stream."""
    chunks: list[bytes] = []
    stream = conn.newStream(0)
    try:
        volume.download(stream, 0, 0, 0)
        stream.recvAll(lambda _stream, data, sink: sink.append(data), chunks)
        stream.finish()
    except libvirt.libvirtError:
        _abort(stream)
        raise
    return b"".join(chunks)


def _abort(stream: libvirt.virStream) -> None:
    """Abort a stream that sendAll/recvAll may already have aborted."""
    try:
        stream.abort()
    except libvirt.libvirtError:
        pass


def create_overlay(pool: libvirt.virStoragePool, name: str, base: libvirt.virStorageVol,
                   base_format: str = "qcow2") -> libvirt.virStorageVol:
    """A qcow2 volume whose backing file is base (by path and format), as big as base."""
    capacity = base.info()[1]
    xml = OVERLAY_XML.format(name=escape(name), capacity=capacity,
                             backing_path=escape(base.path()), backing_format=base_format)
    return pool.createXML(xml, 0)
