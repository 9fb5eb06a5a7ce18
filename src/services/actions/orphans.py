"""Find and remove what this installation left on its hosts without a row: domains and
instance folders without a VM, volume files without a volume.

Rows are written before the host pieces exist and deleted after they are gone, so a piece
without a row is never a VM in flight. Nothing without our installation id is ever touched.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from src.database import vms as vm_dao
from src.database import volumes as volume_dao
from src.database.db import Database
from src.hypervisor.domain_xml import METADATA_NS
from src.hypervisor.nwfilter_xml import filter_name
from src.services.hosts.registry import HostRegistry
from src.services.vms.disks import OWNER_MARKER
from src.services.volumes.layers import VolumeLayers, owner_of


@dataclass(frozen=True)
class OrphanDomain:
    host: str
    uuid: str
    name: str


@dataclass(frozen=True)
class OrphanVolume:
    host: str
    file: str  # the pool volume's name


@dataclass(frozen=True)
class Orphans:
    domains: list[OrphanDomain] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)
    volumes: list[OrphanVolume] = field(default_factory=list)


class OrphanFinder:
    def __init__(self, db: Database, hosts: HostRegistry, instances_dir: Path,
                 installation_id: str, layers: VolumeLayers) -> None:
        self._db = db
        self._layers = layers
        self._hosts = hosts
        self._instances_dir = instances_dir
        self._installation_id = installation_id

    def ours(self) -> Orphans:
        """Every domain (on every host that answers) and instance folder of this installation,
        with a row or not."""
        domains = [OrphanDomain(host.name, uuid, name) for host in self._hosts.all()
                   if self._hosts.is_up(host.name) for uuid, name in
                   host.hypervisor.tagged(METADATA_NS, "installation", self._installation_id)]
        folders = []
        if self._instances_dir.is_dir():
            for folder in sorted(self._instances_dir.iterdir()):
                marker = folder / OWNER_MARKER
                if marker.is_file() and marker.read_text().strip() == self._installation_id:
                    folders.append(folder)
        return Orphans(domains=domains, folders=folders, volumes=self._volume_files(set()))

    def _volume_files(self, known: set[str]) -> list[OrphanVolume]:
        """This installation's volume files whose volume is not in known."""
        return [OrphanVolume(host.name, name) for host in self._hosts.all()
                if self._hosts.is_up(host.name) for name in self._layers.orphans(host, known)]

    def find(self) -> Orphans:
        everything = self.ours()
        with self._db.read() as conn:  # read after the host scan: a VM created meanwhile has a row
            known = set(vm_dao.list_ids(conn))
            volumes = {row.id for row in volume_dao.list_all(conn)}
        return Orphans(domains=[d for d in everything.domains if d.uuid not in known],
                       folders=[f for f in everything.folders if f.name not in known],
                       volumes=[v for v in everything.volumes
                                if owner_of(self._installation_id, v.file) not in volumes])

    def remove(self, orphans: Orphans) -> None:
        """Power off and undefine the domains (and their nwfilters), delete the folders."""
        for domain in orphans.domains:
            hypervisor = self._hosts.get(domain.host).hypervisor
            hypervisor.force_off(domain.uuid)
            hypervisor.undefine(domain.uuid)
            hypervisor.filters.undefine(filter_name(domain.uuid))  # its security groups
        for folder in orphans.folders:
            shutil.rmtree(folder, ignore_errors=True)
        for volume in orphans.volumes:
            self._layers.remove_file(self._hosts.get(volume.host), volume.file)
