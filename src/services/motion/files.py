"""A VM's files on its host (root disk and volume chains, seed, console log), where each goes on
another host, and carrying them there through this machine.

A chain's frozen layers are copied as they are stored, each pointed (qemu-img rebase -u, on the
copy here) at its parent's path on the target; a top layer is either copied too (a cold move)
or made empty over the same chain for libvirt to mirror into (a live one). Nothing is read or
written on a remote host but through libvirt's storage API.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from src.database import snapshots as snapshot_dao
from src.database import volumes as volume_dao
from src.database.db import Database
from src.hypervisor.disks import QemuImg
from src.services.hosts.files import HostFiles
from src.services.hosts.registry import Host
from src.services.vms.build_record import ImageRef
from src.services.vms.disks import Disks
from src.services.vms.root_disks import ROOT_DEVICE
from src.services.volumes.layers import FORMAT, VolumeLayers

SEED_DEVICE = "vdb"
ROOT, VOLUME = "root", "volume"  # whose files a chain's layers are: the VM's, or a volume's


@dataclass(frozen=True)
class Layer:
    source: str  # its name where the VM is
    target: str  # its name where the VM goes
    parent: str | None  # the target name of the layer below (None: the chain's bottom)


@dataclass(frozen=True)
class Chain:
    device: str  # vda, vdc, ...
    kind: str  # ROOT or VOLUME
    owner: str  # the VM's id, or the volume's
    layers: tuple[Layer, ...]  # bottom first; the last is the top, which takes the writes


@dataclass(frozen=True)
class Plan:
    """Every file the VM has, named on both hosts."""

    chains: tuple[Chain, ...]
    seed: tuple[str, str]  # (name on the source, name on the target)
    console: str  # the console log's name on the target
    image: ImageRef  # the root disk's bottom is backed by it
    renames: dict[str, str]  # the root disk's layers whose names differ on the target

    @property
    def volume_ids(self) -> list[str]:
        return [chain.owner for chain in self.chains if chain.kind == VOLUME]


class Sides:
    """The source's and the target's files of one VM, whichever kind of storage each has."""

    def __init__(self, vm_id: str, source: tuple[Host, Disks], target: tuple[Host, Disks],
                 layers: VolumeLayers) -> None:
        self.vm_id = vm_id
        self.source_host, self.source_disks = source
        self.target_host, self.target_disks = target
        self._layers = layers

    @property
    def shared(self) -> bool:
        """Both hosts see this machine's files at the same paths: nothing is carried."""
        return (self.source_host.row.storage == "shared"
                and self.target_host.row.storage == "shared")

    def files(self, kind: str, on_target: bool) -> HostFiles:
        host, disks = ((self.target_host, self.target_disks) if on_target
                       else (self.source_host, self.source_disks))
        return disks.files(self.vm_id) if kind == ROOT else self._layers.files(host)


def plan_of(db: Database, vm_id: str, image: ImageRef, sides: Sides) -> Plan:
    """The VM's files as its rows know them, named on the target. Raises: FileNotFoundError
    when a volume of it has no file yet."""
    source, target = sides.source_disks, sides.target_disks
    with db.read() as conn:
        root_top = snapshot_dao.root_top(conn, vm_id) or source.root_layer(vm_id)
        root_layers = {row.name: row.parent for row in snapshot_dao.layers_of(conn, vm_id)}
        attached = volume_dao.attachments_for_vms(conn, [vm_id]).get(vm_id, [])
        volumes = [(attachment.device, volume_dao.get(conn, attachment.volume_id),
                    {row.name: row.parent for row in snapshot_dao.layers_of(
                        conn, attachment.volume_id)}) for attachment in attached]
    rename = (lambda name: name) if sides.shared else (
        lambda name: _root_name(source, target, vm_id, name))
    chains = [_chain(ROOT_DEVICE, ROOT, vm_id, root_top, root_layers, rename)]
    for device, volume, layers in volumes:
        if volume is None or volume.top_layer is None:
            raise FileNotFoundError(f"a volume of VM {vm_id} has no file")
        chains.append(_chain(device, VOLUME, volume.id, volume.top_layer, layers,
                             lambda name: name))  # a volume's names are the same everywhere
    renames = {layer.source: layer.target for layer in chains[0].layers
               if layer.source != layer.target}
    return Plan(chains=tuple(chains),
                seed=(source.seed_name(vm_id), target.seed_name(vm_id)),
                console=target.console_name(vm_id), image=image, renames=renames)


def _chain(device: str, kind: str, owner: str, top: str, parents: dict[str, str | None],
           rename: Callable[[str], str]) -> Chain:
    names: list[str] = []
    name: str | None = top
    while name is not None and name not in names:
        names.append(name)
        name = parents.get(name)
    names.reverse()
    return Chain(device, kind, owner, tuple(
        Layer(name, rename(name), rename(names[index - 1]) if index else None)
        for index, name in enumerate(names)))


def _root_name(source: Disks, target: Disks, vm_id: str, name: str) -> str:
    """A root disk layer's name on the target: its bottom, or its n-th layer."""
    if name == source.root_layer(vm_id):
        return target.root_layer(vm_id)
    return target.layer_name(vm_id, int(name.rsplit("-", 1)[1].split(".")[0]))


class Carrier:
    """Carries a plan's files to the target; made(kind, name) is told before each is made."""

    def __init__(self, qemu_img: QemuImg, scratch: Path,
                 made: Callable[[str, str], None]) -> None:
        self._qemu_img = qemu_img
        self._scratch = scratch
        self._made = made

    def prepare(self, plan: Plan, sides: Sides, copy_tops: bool) -> dict[str, str]:
        """Every file the VM needs on the target, the tops copied (copy_tops) or made empty;
        the target path of each disk by device (seed included).

        Raises: HypervisorError, CommandFailed, OSError, ValueError (a bad image copy).
        """
        self._made(ROOT, "")  # the VM's place on the target (its folder, when it has one)
        sides.target_disks.prepare(sides.vm_id)
        base = sides.target_disks.base_of(plan.image)
        paths: dict[str, str] = {}
        self._scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".iaas-move-", dir=self._scratch) as work:
            for chain in plan.chains:
                paths[chain.device] = self._chain(chain, sides, base, plan.image.format,
                                                  copy_tops, Path(work))
            seed_source, seed_target = plan.seed
            self._made(ROOT, seed_target)
            scratch = Path(work) / "seed"
            sides.files(ROOT, on_target=False).read_to(seed_source, scratch)
            paths[SEED_DEVICE] = sides.files(ROOT, on_target=True).write_from(seed_target,
                                                                              scratch)
        return paths

    def carry_tops(self, plan: Plan, sides: Sides) -> None:
        """Copy every top layer over the empty one prepare made (a cold move, the VM off)."""
        with tempfile.TemporaryDirectory(prefix=".iaas-move-", dir=self._scratch) as work:
            for chain in plan.chains:
                base = sides.target_disks.base_of(plan.image) if chain.kind == ROOT else None
                self._carry(chain, chain.layers[-1], sides, base, plan.image.format, Path(work))

    def _chain(self, chain: Chain, sides: Sides, base: str, base_format: str, copy_tops: bool,
               work: Path) -> str:
        target = sides.files(chain.kind, on_target=True)
        path = ""
        for index, layer in enumerate(chain.layers):
            is_top = index == len(chain.layers) - 1
            backing = self._backing(chain, layer, target, base, base_format)
            self._made(chain.kind, layer.target)
            if is_top and not copy_tops:
                size = sides.files(chain.kind, on_target=False).virtual_size(layer.source)
                path = target.overlay(layer.target, size, backing)
            else:
                path = self._carry(chain, layer, sides, base, base_format, work)
        return path

    def _carry(self, chain: Chain, layer: Layer, sides: Sides, base: str | None,
               base_format: str, work: Path) -> str:
        target = sides.files(chain.kind, on_target=True)
        scratch = work / layer.target
        scratch.unlink(missing_ok=True)
        sides.files(chain.kind, on_target=False).read_to(layer.source, scratch)
        backing = self._backing(chain, layer, target, base or "", base_format)
        if backing is not None:
            self._qemu_img.rebase_unsafe(scratch, *backing)
        try:
            return target.write_from(layer.target, scratch)
        finally:
            scratch.unlink(missing_ok=True)

    @staticmethod
    def _backing(chain: Chain, layer: Layer, target: HostFiles, base: str,
                 base_format: str) -> tuple[str, str] | None:
        if layer.parent is not None:
            return target.where(layer.parent), FORMAT
        return (base, base_format) if chain.kind == ROOT else None
