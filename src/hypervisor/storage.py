"""libvirt storage pools and volumes of one host: for hosts that keep VM disks in a pool."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import IO

import libvirt  # type: ignore[import-untyped]

from src.hypervisor.connection import Connection

CHUNK = 1024 * 1024
POOL_XML = ("<pool type='dir'><name>{name}</name><target><path>{path}</path>"
            "<permissions><mode>0711</mode></permissions></target></pool>")
VOLUME_XML = ("<volume><name>{name}</name><capacity unit='bytes'>{capacity}</capacity>"
              "<target><format type='{format}'/><permissions><mode>0600</mode></permissions>"
              "</target>{backing}</volume>")
BACKING_XML = "<backingStore><path>{path}</path><format type='{format}'/></backingStore>"


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
                pool = conn.storagePoolDefineXML(POOL_XML.format(name=name, path=path))
                pool.build(0)
            if not pool.isActive():
                pool.create(0)
            pool.setAutostart(1)
        self.connection.call(ensure, libvirt_calls=4)

    def capacity_bytes(self, pool: str) -> int:
        return int(self.connection.call(lambda c: c.storagePoolLookupByName(pool).info()[1]))

    def path(self, pool: str) -> str:
        xml = self.connection.call(lambda c: c.storagePoolLookupByName(pool).XMLDesc(0))
        return ET.fromstring(xml).findtext("./target/path") or ""

    def volume_path(self, pool: str, volume: str) -> str | None:
        """The volume's path on its host, or None when the pool has no such volume."""
        def look(conn: libvirt.virConnect) -> str | None:
            pool_ = conn.storagePoolLookupByName(pool)
            pool_.refresh(0)
            try:
                return str(pool_.storageVolLookupByName(volume).path())
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                    return None
                raise
        return self.connection.call(look, libvirt_calls=3)

    def create_volume(self, pool: str, name: str, capacity: int, fmt: str,
                      backing: tuple[str, str] | None = None) -> str:
        """Create a volume (a qcow2 overlay when backing = (path, format)); its path."""
        xml = VOLUME_XML.format(name=name, capacity=capacity, format=fmt, backing=BACKING_XML.format(
            path=backing[0], format=backing[1]) if backing else "")
        return str(self.connection.call(
            lambda c: c.storagePoolLookupByName(pool).createXML(xml, 0).path(), libvirt_calls=2))

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

    def download_tail(self, pool: str, name: str, limit: int) -> bytes:
        """The last `limit` bytes of a volume (b'' when it does not exist)."""
        def fetch(conn: libvirt.virConnect) -> bytes:
            pool_ = conn.storagePoolLookupByName(pool)
            pool_.refresh(0)
            try:
                volume = pool_.storageVolLookupByName(name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                    return b""
                raise
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
            pool_ = conn.storagePoolLookupByName(pool)
            pool_.refresh(0)
            try:
                pool_.storageVolLookupByName(name).delete(0)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                    raise
        self.connection.call(delete, libvirt_calls=3)

    def volumes(self, pool: str) -> list[str]:
        def names(conn: libvirt.virConnect) -> list[str]:
            pool_ = conn.storagePoolLookupByName(pool)
            pool_.refresh(0)
            return [str(name) for name in pool_.listVolumes()]
        return self.connection.call(names, libvirt_calls=3)

