"""libvirt storage pools and volumes of one host: pool hosts' VM disks, and every host's volumes.

Everything goes through libvirt's storage pool API, so a remote host (`qemu+tls://`) is served by
the same calls as this one and no file of a remote host is ever opened here.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO
from xml.sax.saxutils import escape

import libvirt  # type: ignore[import-untyped]

from src.hypervisor.connection import Connection
from src.hypervisor.errors import HypervisorError, LayerInUse, ShrinkRefused

CHUNK = 1024 * 1024
POOL_XML = ("<pool type='dir'><name>{name}</name><target><path>{path}</path>"
            "<permissions><mode>0711</mode></permissions></target></pool>")
# Over a directory that exists and is someone else's too (the images directory): no
# <permissions>, so neither defining nor starting the pool changes its owner or mode.
BARE_POOL_XML = "<pool type='dir'><name>{name}</name><target><path>{path}</path></target></pool>"
VOLUME_XML = ("<volume><name>{name}</name><capacity unit='bytes'>{capacity}</capacity>"
              "<target><format type='{format}'/>{compat}<permissions><mode>0600</mode>"
              "</permissions></target>{backing}</volume>")
BACKING_XML = "<backingStore><path>{path}</path><format type='{format}'/></backingStore>"
# libvirt makes qcow2 v2 (0.10) unless told; v3 is what qemu-img makes by default (zero
# clusters, discard), so pool hosts' files match those of shared hosts.
QCOW2_COMPAT = "<compat>1.1</compat>"
_NO_VOLUME = libvirt.VIR_ERR_NO_STORAGE_VOL


@dataclass(frozen=True)
class VolumeInfo:
    """One volume as its pool sees it now."""

    path: str
    format: str  # as libvirt probed the file: qcow2, raw, ...
    capacity_bytes: int  # the size the guest sees
    allocation_bytes: int  # what it takes on the host
    backing_path: str | None  # the file a qcow2 overlay is backed by


def _text(value: str | int) -> str:
    return escape(str(value), {"'": "&apos;", '"': "&quot;"})


def volume_xml(name: str, capacity: int, fmt: str,
               backing: tuple[str, str] | None = None) -> str:
    """A volume definition; a qcow2 volume over backing = (path, format) when given."""
    return VOLUME_XML.format(
        name=_text(name), capacity=int(capacity), format=_text(fmt),
        compat=QCOW2_COMPAT if fmt == "qcow2" else "",
        backing=BACKING_XML.format(path=_text(backing[0]), format=_text(backing[1]))
        if backing else "")


def _volume(conn: libvirt.virConnect, pool: str, name: str) -> libvirt.virStorageVol | None:
    """The volume after a refresh (files made or removed behind libvirt's back count), or None."""
    pool_ = conn.storagePoolLookupByName(pool)
    pool_.refresh(0)
    try:
        return pool_.storageVolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == _NO_VOLUME:
            return None
        raise


def _info(volume: libvirt.virStorageVol) -> VolumeInfo:
    root = ET.fromstring(volume.XMLDesc(0))
    fmt = root.find("./target/format")
    _kind, capacity, allocation = volume.info()
    return VolumeInfo(path=str(volume.path()), format=fmt.get("type", "") if fmt is not None
                      else "", capacity_bytes=int(capacity), allocation_bytes=int(allocation),
                      backing_path=root.findtext("./backingStore/path") or None)


def _start(pool: libvirt.virStoragePool) -> None:
    try:
        if not pool.isActive():
            pool.create(0)
    except libvirt.libvirtError:
        if not pool.isActive():
            raise  # (when it is active now, another process started it meanwhile)


def _abort(stream: libvirt.virStream) -> None:
    try:
        stream.abort()
    except libvirt.libvirtError:
        pass  # sendAll/recvAll aborted it already


class Pools:
    """Raises: HypervisorError from every call."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def ensure_dir_pool(self, name: str, path: str) -> None:
        """The `dir` pool name exists, is built, started and autostarted (made when missing)."""
        def ensure(conn: libvirt.virConnect) -> None:
            try:
                pool = conn.storagePoolLookupByName(name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                    raise
                pool = conn.storagePoolDefineXML(POOL_XML.format(name=_text(name),
                                                                 path=_text(path)))
                pool.build(0)
            if not pool.isActive():
                pool.create(0)
            pool.setAutostart(1)
        self.connection.call(ensure, libvirt_calls=4)

    def dir_pool(self, name: str, path: str) -> str:
        """The name of the running pool over the existing directory path: whichever pool is
        over it already (libvirt refuses a second one over one directory), else name, defined,
        started and autostarted without changing the directory's owner, mode or files.

        Raises: HypervisorError when the pool name is over another directory, or path is no
        directory.
        """
        wanted = os.path.normpath(path)

        def over_path(conn: libvirt.virConnect) -> str | None:
            named = None
            for pool in conn.listAllStoragePools(0):
                over = ET.fromstring(pool.XMLDesc(0)).findtext("./target/path") or ""
                if os.path.normpath(over) == wanted:
                    _start(pool)
                    return str(pool.name())
                named = over if pool.name() == name else named
            if named is not None:
                raise HypervisorError(f"storage pool {name} is over {named}, not {path}")
            return None

        def find(conn: libvirt.virConnect) -> str:
            found = over_path(conn)
            if found is not None:
                return found
            try:
                pool = conn.storagePoolDefineXML(BARE_POOL_XML.format(name=_text(name),
                                                                      path=_text(path)))
            except libvirt.libvirtError:
                found = over_path(conn)  # another process defined it meanwhile
                if found is None:
                    raise
                return found
            try:
                _start(pool)
            except libvirt.libvirtError:
                pool.undefine()  # never started: ours alone, and of no use
                raise
            pool.setAutostart(1)
            return name
        return self.connection.call(find, libvirt_calls=4)

    def capacity_bytes(self, pool: str) -> int:
        return int(self.connection.call(lambda c: c.storagePoolLookupByName(pool).info()[1]))

    def path(self, pool: str) -> str:
        xml = self.connection.call(lambda c: c.storagePoolLookupByName(pool).XMLDesc(0))
        return ET.fromstring(xml).findtext("./target/path") or ""

    def volume_path(self, pool: str, volume: str) -> str | None:
        """The volume's path on its host, or None when the pool has no such volume."""
        def look(conn: libvirt.virConnect) -> str | None:
            found = _volume(conn, pool, volume)
            return None if found is None else str(found.path())
        return self.connection.call(look, libvirt_calls=3)

    def volume_info(self, pool: str, name: str) -> VolumeInfo | None:
        """Path, format, capacity, allocation and backing file; None when there is no such
        volume."""
        def look(conn: libvirt.virConnect) -> VolumeInfo | None:
            found = _volume(conn, pool, name)
            return None if found is None else _info(found)
        return self.connection.call(look, libvirt_calls=5)

    def create_volume(self, pool: str, name: str, capacity: int, fmt: str,
                      backing: tuple[str, str] | None = None) -> str:
        """Create a volume (a qcow2 overlay when backing = (path, format)); its path."""
        xml = volume_xml(name, capacity, fmt, backing)
        return str(self.connection.call(
            lambda c: c.storagePoolLookupByName(pool).createXML(xml, 0).path(), libvirt_calls=2))

    def clone_volume(self, pool: str, name: str, source_pool: str, source_volume: str,
                     capacity_bytes: int) -> str:
        """A new qcow2 volume name in pool with a full copy of the source's content (its
        backing chain flattened: libvirt runs qemu-img convert), grown to capacity_bytes; its
        path. The pools may differ; a failure leaves no volume name.

        Raises: ShrinkRefused when the source is larger than capacity_bytes (nothing is made),
        HypervisorError.
        """
        xml = volume_xml(name, capacity_bytes, "qcow2")

        def clone(conn: libvirt.virConnect) -> str:
            # The refresh makes libvirt probe the source's format from its content (a copy
            # uploaded into a raw volume is qcow2 once it holds a qcow2 file).
            source = _volume(conn, source_pool, source_volume)
            if source is None:
                raise HypervisorError(f"no volume {source_volume} in storage pool {source_pool}")
            size = int(source.info()[1])
            if size > capacity_bytes:
                raise ShrinkRefused(f"{source_volume} holds {size} bytes, more than the "
                                    f"{capacity_bytes} asked for {name}")
            volume = conn.storagePoolLookupByName(pool).createXMLFrom(xml, source, 0)
            try:
                if int(volume.info()[1]) < capacity_bytes:  # the clone has the source's size
                    volume.resize(capacity_bytes, 0)
            except BaseException:
                volume.delete(0)
                raise
            return str(volume.path())
        return self.connection.call(clone, libvirt_calls=8)

    def resize_volume(self, pool: str, name: str, capacity_bytes: int) -> None:
        """Grow the volume to capacity_bytes; one that has that capacity already is left alone.

        Raises: ShrinkRefused when it is larger (it is never shrunk), HypervisorError.
        """
        def grow(conn: libvirt.virConnect) -> None:
            volume = _volume(conn, pool, name)
            if volume is None:
                raise HypervisorError(f"no volume {name} in storage pool {pool}")
            size = int(volume.info()[1])
            if size > capacity_bytes:
                raise ShrinkRefused(f"{name} has {size} bytes; it is never shrunk to "
                                    f"{capacity_bytes}")
            if size < capacity_bytes:
                volume.resize(capacity_bytes, 0)
        self.connection.call(grow, libvirt_calls=5)

    def upload(self, pool: str, name: str, source: IO[bytes], size: int,
               progress: Callable[[int], None] = lambda _done: None) -> None:
        """Stream source (size bytes) into the existing volume name, through libvirt."""
        def send(conn: libvirt.virConnect) -> None:
            volume = conn.storagePoolLookupByName(pool).storageVolLookupByName(name)
            stream = conn.newStream(0)
            volume.upload(stream, 0, size, 0)
            done = [0]

            def read(_stream: object, nbytes: int, _opaque: object) -> bytes:
                chunk = source.read(min(nbytes, CHUNK))
                done[0] += len(chunk)
                progress(done[0])
                return chunk
            try:
                stream.sendAll(read, None)
                stream.finish()
            except BaseException:
                stream.abort()
                raise
        self.connection.call(send, libvirt_calls=3)

    def download_to(self, pool: str, name: str, out: IO[bytes],
                    progress: Callable[[int], None] = lambda _done: None) -> int:
        """Write the volume's file as its host stores it (a qcow2 volume comes as its qcow2
        file) to out, through libvirt's stream; the bytes written.

        Raises: HypervisorError (also when there is no such volume).
        """
        def receive(conn: libvirt.virConnect) -> int:
            volume = _volume(conn, pool, name)
            if volume is None:
                raise HypervisorError(f"no volume {name} in storage pool {pool}")
            done = [0]

            def write(_stream: object, data: bytes, _opaque: object) -> None:
                out.write(data)
                done[0] += len(data)
                progress(done[0])
            stream = conn.newStream(0)
            volume.download(stream, 0, 0, 0)  # length 0: to the end
            try:
                stream.recvAll(write, None)
                stream.finish()
            except BaseException:
                _abort(stream)
                raise
            return done[0]
        return self.connection.call(receive, libvirt_calls=5)

    def download_tail(self, pool: str, name: str, limit: int) -> bytes:
        """The last `limit` bytes of a volume (b'' when it does not exist)."""
        def fetch(conn: libvirt.virConnect) -> bytes:
            volume = _volume(conn, pool, name)
            if volume is None:
                return b""
            size = int(volume.info()[2] or volume.info()[1])
            offset = max(0, size - limit)
            if size == 0:
                return b""
            stream = conn.newStream(0)
            volume.download(stream, offset, size - offset, 0)
            parts: list[bytes] = []
            stream.recvAll(lambda _stream, data, parts_: parts_.append(data), parts)
            stream.finish()
            return b"".join(parts)
        return self.connection.call(fetch, libvirt_calls=5)

    def delete_volume(self, pool: str, name: str) -> None:
        """Delete a volume; a missing one is fine."""
        def delete(conn: libvirt.virConnect) -> None:
            volume = _volume(conn, pool, name)
            if volume is not None:
                volume.delete(0)
        self.connection.call(delete, libvirt_calls=3)

    def delete_layer(self, pool: str, name: str) -> None:
        """Delete a layer of a qcow2 chain unless a volume of the pool is backed by it; a
        missing one is fine. Only the layer's own file goes: never the file it is backed by.

        Raises: LayerInUse (nothing is deleted), HypervisorError.
        """
        def delete(conn: libvirt.virConnect) -> None:
            pool_ = conn.storagePoolLookupByName(pool)
            pool_.refresh(0)
            volumes = pool_.listAllVolumes(0)
            self.connection.count(len(volumes))
            layer = next((volume for volume in volumes if volume.name() == name), None)
            if layer is None:
                return
            children = [volume.name() for volume in volumes
                        if ET.fromstring(volume.XMLDesc(0)).findtext("./backingStore/path")
                        == layer.path()]
            if children:
                raise LayerInUse(f"{name} is the backing file of {', '.join(sorted(children))}")
            layer.delete(0)
        self.connection.call(delete, libvirt_calls=3)

    def volumes(self, pool: str) -> list[str]:
        def names(conn: libvirt.virConnect) -> list[str]:
            pool_ = conn.storagePoolLookupByName(pool)
            pool_.refresh(0)
            return [str(name) for name in pool_.listVolumes()]
        return self.connection.call(names, libvirt_calls=3)
