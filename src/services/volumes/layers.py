"""Volumes' files on their host: chains of qcow2 layers in the host's volume pool, made and
removed only through libvirt's storage pool API, so a remote host is served like this one.

A volume starts as one layer (empty, or a full copy of an image). A snapshot freezes the top
layer and puts a new top on it; a revert puts a new top on the snapshot's layer. A layer is
removed only when nothing needs it: no snapshot names it and no layer is backed by it, so
removing a snapshot never touches the layer below it.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from src import errors
from src.config import Config
from src.database import snapshots as snapshot_dao
from src.database import volumes as volume_dao
from src.database.db import Database
from src.hypervisor.storage import Pools
from src.services.hosts.files import PoolFiles
from src.services.hosts.registry import Host
from src.utils.clock import utc_now

GIB = 1024 ** 3
FORMAT = "qcow2"
# Snapshots one volume or VM root disk may keep: each holds a layer that may grow to the
# disk's full size and lengthens the chain every read walks (quotas count only the disk).
MAX_SNAPSHOTS = 32


@dataclass(frozen=True)
class Source:
    """A volume in some pool of the host to copy from: an image's file, or its copy."""

    pool: str
    volume: str


def layer_name(installation_id: str, owner: str, generation: int) -> str:
    """The pool volume of an owner's layer: <installation>-vol-<id>-<n>.qcow2 (its n-th since
    it was made); the installation's prefix tells our files from others' in a shared pool."""
    return f"{file_prefix(installation_id)}{owner}-{generation}.{FORMAT}"


def file_prefix(installation_id: str) -> str:
    return f"{installation_id[:8]}-vol-"


def owner_of(installation_id: str, name: str) -> str | None:
    """The volume id a pool volume of this installation belongs to (None: not a volume's)."""
    prefix = file_prefix(installation_id)
    if not name.startswith(prefix) or "-" not in name[len(prefix):]:
        return None
    return name[len(prefix):].rsplit("-", 1)[0]


def prune_layers(db: Database, owner: str, top: str | None,
                 remove: Callable[[str], None]) -> list[str]:
    """Remove (with remove) the owner's layers nothing needs: not its top, named by no
    snapshot, backing no other layer; children go before the parents they free. Their names."""
    removed: list[str] = []
    while True:
        with db.read() as conn:
            unused = snapshot_dao.unused_layers(conn, owner, top)
        if not unused:
            return removed
        for layer in unused:
            remove(layer.name)
            with db.write() as conn:
                snapshot_dao.remove_layer(conn, owner, layer.name)
            removed.append(layer.name)


def refuse_beyond_limit(conn: sqlite3.Connection, owner: str, named: str) -> None:
    """Raises: TooManySnapshots when the owner keeps MAX_SNAPSHOTS already."""
    if snapshot_dao.count_of(conn, owner) >= MAX_SNAPSHOTS:
        raise errors.TooManySnapshots(owner=named, limit=MAX_SNAPSHOTS)


def next_generation(db: Database, owner: str) -> int:
    """The number of the owner's next layer (names end in -<n>.qcow2)."""
    with db.read() as conn:
        names = [layer.name for layer in snapshot_dao.layers_of(conn, owner)]
    numbers = [int(name.rsplit("-", 1)[1].split(".")[0]) for name in names
               if name.rsplit("-", 1)[-1].split(".")[0].isdigit()]
    return max(numbers, default=0) + 1


def record_layer(db: Database, host: str, owner: str, name: str, parent: str | None,
                 size_gb: int) -> None:
    with db.write() as conn:
        snapshot_dao.add_layer(conn, snapshot_dao.LayerRow(
            host=host, name=name, owner=owner, parent=parent, size_gb=size_gb,
            created_at=utc_now()))


def serial_of(volume_id: str) -> str:
    """The serial the guest reads (virtio allows 20 bytes): /dev/disk/by-id/virtio-<serial>."""
    return "vol-" + volume_id.replace("-", "")[:16]


class VolumeLayers:
    """Make, stack and remove one owner's layers on its host, keeping disk_layers true."""

    def __init__(self, db: Database, config: Config, installation_id: str) -> None:
        self._db = db
        self._config = config
        self._installation_id = installation_id
        self._ready: set[str] = set()  # hosts whose volume pool is known to be there

    def pool_of(self, host: Host) -> str:
        """The pool volumes live in: a pool host's own pool, or this installation's volumes
        directory for a host that shares our files (made when missing)."""
        if host.row.storage == "pool":
            return host.row.storage_pool
        name = f"iaas-volumes-{self._installation_id[:8]}"
        if host.name not in self._ready:
            host.hypervisor.pools.ensure_dir_pool(name, str(self._config.volumes_dir))
            self._ready.add(host.name)
        return name

    def files(self, host: Host) -> PoolFiles:
        """The host's volume pool, file by file (a migration carries volumes through it)."""
        return PoolFiles(host.hypervisor.pools, self.pool_of(host))

    def orphans(self, host: Host, known: set[str]) -> list[str]:
        """This installation's volume files in the host's pool whose volume has no row."""
        return [name for name in self._pools(host).volumes(self.pool_of(host))
                if (owner := owner_of(self._installation_id, name)) is not None
                and owner not in known]

    def remove_file(self, host: Host, name: str) -> None:
        self._pools(host).delete_volume(self.pool_of(host), name)

    def path(self, host: Host, layer: str) -> str:
        pools = host.hypervisor.pools
        found = pools.volume_path(self.pool_of(host), layer)
        if found is None:
            raise FileNotFoundError(f"layer {layer} is not in its pool")
        return found

    def volume_path(self, host: Host, volume_id: str) -> str:
        """The path of the layer a volume takes its writes in.

        Raises: FileNotFoundError (no such volume, or not made yet), HypervisorError.
        """
        with self._db.read() as conn:
            row = volume_dao.get(conn, volume_id)
        if row is None or row.top_layer is None:
            raise FileNotFoundError(f"volume {volume_id} has no file")
        return self.path(host, row.top_layer)

    def make_first(self, host: Host, owner: str, size_gb: int,
                   source: Source | None) -> str:
        """The owner's first layer: empty, or a full copy of source grown to size_gb."""
        name = layer_name(self._installation_id, owner, 1)
        pools = self._pools(host)
        pool = self.pool_of(host)
        pools.delete_volume(pool, name)  # what a cut-short earlier attempt left
        if source is None:
            pools.create_volume(pool, name, size_gb * GIB, FORMAT)
        else:
            pools.clone_volume(pool, name, source.pool, source.volume, size_gb * GIB)
        record_layer(self._db, host.name, owner, name, None, size_gb)
        return name

    def stack(self, host: Host, owner: str, parent: str, size_gb: int) -> str:
        """A new top backed by parent; the next generation's name."""
        name = layer_name(self._installation_id, owner, next_generation(self._db, owner))
        pools = self._pools(host)
        pool = self.pool_of(host)
        parent_path = self.path(host, parent)
        pools.delete_volume(pool, name)
        pools.create_volume(pool, name, size_gb * GIB, FORMAT, backing=(parent_path, FORMAT))
        record_layer(self._db, host.name, owner, name, parent, size_gb)
        return name

    def grow(self, host: Host, layer: str, size_gb: int) -> None:
        self._pools(host).resize_volume(self.pool_of(host), layer, size_gb * GIB)

    def prune(self, host: Host, owner: str, top: str | None) -> list[str]:
        """Remove the owner's layers nothing needs any more; their names."""
        pool = self.pool_of(host)
        return prune_layers(self._db, owner, top,
                            lambda name: self._pools(host).delete_volume(pool, name))

    def remove_all(self, host: Host, owner: str) -> None:
        """Remove every layer of the owner (its snapshots are going with it)."""
        with self._db.read() as conn:
            layers = snapshot_dao.layers_of(conn, owner)
        for layer in reversed(layers):  # newest first: children before their parents
            self._pools(host).delete_volume(self.pool_of(host), layer.name)
        with self._db.write() as conn:
            snapshot_dao.remove_layers_of(conn, owner)

    @staticmethod
    def _pools(host: Host) -> Pools:
        return host.hypervisor.pools
