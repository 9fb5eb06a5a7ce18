"""The build record: everything one VM's build needs, decided by the create and read back by
whichever process runs the build, as versioned JSON in the create task's payload.

The create writes it in the transaction that inserts the VM and its task, so the build reads
no VM, GPU or image row to learn what to make. A worker may read a task that an API of another
version wrote, so every version it ever wrote keeps a loader here:

- version 0 is the payload of the code before records (`{"args": {...}}` beside the VM's own
  columns and GPU rows): it is rebuilt from those rows, by the caller (`legacy`);
- version 1 is this record without volumes;
- version 2 is this record without GPU partitions (placement.mdevs);
- version 3 is this record without NICs beyond mac and network (nics);
- version 4 is this record without SR-IOV virtual functions (placement.vfs);
- version 5 is this record;
- a version this code does not know (a newer API's) fails the task, never the worker.

Adding to what a build needs (volumes to attach, say): give the field a type and a default,
write VERSION + 1, and keep the loader of every older version, which leaves the field at its
default. Readers refuse keys they do not know, so a record can never be built without a part
it asked for.
"""
from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from src.database import partitions as partition_dao
from src.database.gpus import GpuRow
from src.database.images import ImageRow
from src.database.vms import VmRow
from src.services.rules.placement import Claim
from src.services.tasks.runner import TaskFailed
from src.utils.nocloud import Seed
from src.vocabulary import VF_TYPE

VERSION = 5
KEY = "build"  # where the record sits in the task's payload
# Where a VM that waits for capacity keeps its record until placed: host, network and
# placement are empty there, and the placement (src/services/queue/placer.py) fills them.
WAITING_KEY = "waiting"
UNSUPPORTED = "build_record_unsupported"
INVALID = "build_record_invalid"


class UnreadableRecord(TaskFailed):
    """The task's record cannot be built from: a version this code does not know, or not the
    shape its version says. Nothing of the VM was made."""


@dataclass(frozen=True)
class ImageRef:
    """The base image as the create checked it."""

    id: str
    name: str
    path: str  # the base file, absolute (IAAS_IMAGES_DIR is the same for every process)
    format: str
    sha256: str | None = None  # pool hosts check their copy of the file against it


@dataclass(frozen=True)
class GpuClaim:
    address: str  # the GPU's PCI address on its host (its inventory id)
    functions: tuple[str, ...]  # every PCI function passed through with it, itself included


@dataclass(frozen=True)
class MdevClaim:
    """A GPU partition: the mediated device the build makes for the VM (and its delete
    removes), with the UUID the ledger holds it by."""

    uuid: str
    parent: str  # the GPU's PCI address
    type_id: str  # the mdev type, e.g. nvidia-700


@dataclass(frozen=True)
class VfClaim:
    """A GPU partition that is an SR-IOV virtual function: passed through as a PCI function of
    its own, held in the ledger by its address (and a UUID, the ledger's key)."""

    uuid: str
    address: str  # the VF's PCI address
    parent: str  # its physical function's PCI address


@dataclass(frozen=True)
class Placement:
    """What the scheduler gave the VM on its host, beyond vCPUs and RAM."""

    gpus: tuple[GpuClaim, ...] = ()
    mdevs: tuple[MdevClaim, ...] = ()
    vfs: tuple[VfClaim, ...] = ()
    numa_node: int | None = None
    node_cpus: tuple[int, ...] = ()  # the host CPUs of numa_node
    pinned_cpus: tuple[int, ...] = ()  # one host CPU per vCPU, in order


@dataclass(frozen=True)
class CloudInit:
    """What the VM's NoCloud seed adds to its id, name and MAC."""

    ssh_keys: tuple[str, ...] = ()  # checked at create
    user_data: str | None = None


@dataclass(frozen=True)
class VolumeDisk:
    """A volume the VM has from its first boot: which one, as which disk, and how."""

    volume_id: str
    device: str  # the target in the domain: vdc, vdd, ...
    read_only: bool = False
    shareable: bool = False  # a multiattach volume


@dataclass(frozen=True)
class Nic:
    """One NIC of the VM: the libvirt network of its host it joins, and its MAC."""

    network: str
    mac: str


@dataclass(frozen=True)
class BuildOptions:
    hugepages: bool = False


@dataclass(frozen=True)
class BuildRecord:
    vm_id: str
    name: str
    project: str
    domain_name: str
    host: str
    image: ImageRef
    cpu: int
    ram_mib: int
    disk_gb: int
    mac: str
    network: str
    placement: Placement = field(default_factory=Placement)
    cloud_init: CloudInit = field(default_factory=CloudInit)
    options: BuildOptions = field(default_factory=BuildOptions)
    volumes: tuple[VolumeDisk, ...] = ()
    # Every NIC in order, the first being (network, mac); empty: that one NIC alone (the
    # records before version 4, and a VM that asked for no networks).
    nics: tuple[Nic, ...] = ()

    @property
    def interfaces(self) -> tuple[Nic, ...]:
        """The NICs the domain gets, in order."""
        return self.nics or (Nic(self.network, self.mac),)

    @property
    def base_path(self) -> Path:
        return Path(self.image.path)

    @property
    def gpu_functions(self) -> list[str]:
        """PCI addresses to pass through: every function of every claimed GPU, and each VF."""
        return ([fn for gpu in self.placement.gpus for fn in gpu.functions]
                + [vf.address for vf in self.placement.vfs])

    @property
    def seed(self) -> Seed:
        return Seed(instance_id=self.vm_id, hostname=self.name,
                    ssh_keys=self.cloud_init.ssh_keys, user_data=self.cloud_init.user_data,
                    mac=self.mac)

    def to_payload(self) -> dict[str, Any]:
        """The task payload that carries this record (plain JSON)."""
        return {KEY: {"version": VERSION, **asdict(self)}}


def record_for(row: VmRow, image: ImageRow, base_path: Path, claim: Claim, network: str,
               cloud_init: CloudInit, options: BuildOptions,
               volumes: tuple[VolumeDisk, ...] = (), nics: tuple[Nic, ...] = ()) -> BuildRecord:
    """The record of the VM row's build on row.host, with what placement claimed for it;
    nics: the VM's NICs when it asked for networks (the first one is its network and MAC)."""
    if nics:
        network = nics[0].network
    return BuildRecord(
        vm_id=row.id, name=row.name, project=row.project, domain_name=row.domain_name,
        host=row.host, image=ImageRef(id=image.id, name=image.name, path=str(base_path),
                                      format=image.format, sha256=image.sha256),
        cpu=row.cpu, ram_mib=row.ram, disk_gb=row.disk_gb, mac=row.mac or "", network=network,
        placement=placement_of(claim), cloud_init=cloud_init, options=options, volumes=volumes,
        nics=nics)


def placement_of(claim: Claim) -> Placement:
    """The record's placement for claim; a partition gets the UUID of its mdev-to-be (or of
    its VF's ledger entry) here."""
    part = claim.partition
    vf = part.next_vf if part is not None else None
    return Placement(gpus=tuple(GpuClaim(gpu.id, tuple(gpu.functions)) for gpu in claim.gpus),
                     mdevs=(MdevClaim(str(uuid.uuid4()), part.parent, part.type_id),)
                     if part is not None and vf is None else (),
                     vfs=(VfClaim(str(uuid.uuid4()), vf, part.parent),)
                     if part is not None and vf is not None else (),
                     numa_node=claim.numa_node, node_cpus=tuple(claim.node_cpus),
                     pinned_cpus=tuple(claim.pinned_cpus))


def hold_partitions(conn: sqlite3.Connection, record: BuildRecord, now: str) -> None:
    """The ledger takes the record's mdevs and VFs for its VM, inside the placement's
    transaction.

    Raises: sqlite3.IntegrityError when a UUID, or a VF on the host, is taken.
    """
    for mdev in record.placement.mdevs:
        partition_dao.allocate(conn, partition_dao.MdevRow(
            mdev.uuid, record.host, mdev.parent, mdev.type_id, record.vm_id, now))
    for vf in record.placement.vfs:
        partition_dao.allocate(conn, partition_dao.MdevRow(
            vf.uuid, record.host, vf.parent, VF_TYPE, record.vm_id, now, vf.address))


def waiting_payload(record: BuildRecord) -> dict[str, Any]:
    """The payload of a create task whose VM waits for capacity: its record, not placed yet."""
    return {WAITING_KEY: record.to_payload()[KEY]}


def asked_networks(payload: dict[str, Any]) -> tuple[str, ...]:
    """The networks a queued create's waiting record asks for (none: its host's network)."""
    waiting = payload.get(WAITING_KEY)
    nics = waiting.get("nics", []) if isinstance(waiting, dict) else []
    return tuple(str(nic.get("network")) for nic in nics if isinstance(nic, dict))


def placed(payload: dict[str, Any], vm_id: str, host: str, network: str,
           claim: Claim) -> BuildRecord:
    """The waiting record of a queued create's payload, placed on host with claim.

    Raises: UnreadableRecord when the payload holds no waiting record it can read.
    """
    if not isinstance(payload.get(WAITING_KEY), dict):
        raise UnreadableRecord(INVALID, "The task's payload holds no waiting build record.")
    record = from_payload({KEY: payload[WAITING_KEY]}, vm_id, _no_legacy)
    if record.nics:  # the networks it asked for, which the placement checked host offers
        network = record.nics[0].network
    return replace(record, host=host, network=network, placement=placement_of(claim))


def _no_legacy(_args: dict[str, Any]) -> BuildRecord:
    raise KeyError("version")  # a waiting record always has its version


def legacy_record(row: VmRow, gpus: list[GpuRow], image: ImageRow, base_path: Path,
                  network: str, args: dict[str, Any]) -> BuildRecord:
    """Version 0: the record an unversioned payload's args and the VM's rows make together
    (what the build read before records).

    Raises: KeyError, TypeError, ValueError when args lack what version 0 always wrote.
    """
    claim = Claim(gpus=gpus, numa_node=row.numa_node, node_cpus=list(args["node_cpus"]),
                  pinned_cpus=row.pinned_cpus)
    return record_for(row, image, base_path, claim, network,
                      CloudInit(tuple(args["ssh_keys"]), args.get("user_data")),
                      BuildOptions(hugepages=bool(args.get("hugepages"))))


def from_payload(payload: dict[str, Any], vm_id: str,
                 legacy: Callable[[dict[str, Any]], BuildRecord]) -> BuildRecord:
    """The record of vm_id's build in a create task's payload, whichever version wrote it;
    legacy(args) rebuilds a version 0 one from the VM's rows.

    Raises: UnreadableRecord (build_record_unsupported, build_record_invalid), and what
    legacy raises besides.
    """
    data = payload.get(KEY)
    version = 0 if data is None else data.get("version") if isinstance(data, dict) else None
    try:
        record = legacy(payload.get("args", {})) if data is None else _loader(version)(data)
    except (KeyError, TypeError, ValueError) as exc:
        reason = f"the field {exc} is missing" if isinstance(exc, KeyError) else str(exc)
        raise UnreadableRecord(INVALID, f"The task's build record (version {version}) cannot "
                                        f"be read: {reason}.") from None
    if record.vm_id != vm_id:
        raise UnreadableRecord(INVALID, f"The task's build record is that of VM "
                                        f"{record.vm_id}, not {vm_id}.")
    return record


def _loader(version: object) -> Callable[[dict[str, Any]], BuildRecord]:
    """Raises: UnreadableRecord (build_record_unsupported) for a version this code lacks."""
    if not isinstance(version, int) or isinstance(version, bool) or version not in _LOADERS:
        raise UnreadableRecord(UNSUPPORTED, (
            f"The task's build record is version {version!r}; this server reads versions 0 to "
            f"{VERSION}. A newer API queued it: upgrade this worker, then create the VM again."))
    return _LOADERS[version]


def _only(data: dict[str, Any], kind: type[Any], extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """data, checked to hold no key kind (a dataclass) does not have.

    Raises: TypeError (data is no object), ValueError naming the first unknown key.
    """
    if not isinstance(data, dict):
        raise TypeError(f"expected an object, got {data!r}")
    known = {spec.name for spec in fields(kind)} | set(extra)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r}")
    return data


def _ints(values: list[Any]) -> tuple[int, ...]:
    """Raises: TypeError unless every value is a whole number."""
    return tuple(_int(value) for value in values)


def _int(value: Any) -> int:
    """Raises: TypeError unless value is a whole number (JSON's true is not one)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected a whole number, got {value!r}")
    return value


def _text(value: Any) -> str:
    """Raises: TypeError unless value is a string."""
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _maybe(check: Callable[[Any], Any], value: Any) -> Any:
    return None if value is None else check(value)


def _v1(data: dict[str, Any]) -> BuildRecord:
    """Raises: KeyError (a field is missing), TypeError, ValueError (an unknown field)."""
    if "volumes" in data:
        raise ValueError("unknown field 'volumes'")
    return _v2(data)


def _v2(data: dict[str, Any]) -> BuildRecord:
    """Raises: KeyError (a field is missing), TypeError, ValueError (an unknown field)."""
    if "mdevs" in (data.get("placement") or {}):
        raise ValueError("unknown field 'mdevs'")
    return _v3(data)


def _v3(data: dict[str, Any]) -> BuildRecord:
    """Raises: KeyError (a field is missing), TypeError, ValueError (an unknown field)."""
    if "nics" in data:
        raise ValueError("unknown field 'nics'")
    return _v4(data)


def _v4(data: dict[str, Any]) -> BuildRecord:
    """Raises: KeyError (a field is missing), TypeError, ValueError (an unknown field)."""
    if "vfs" in (data.get("placement") or {}):
        raise ValueError("unknown field 'vfs'")
    return _v5(data)


def _v5(data: dict[str, Any]) -> BuildRecord:
    """Raises: KeyError (a field is missing), TypeError, ValueError (an unknown field)."""
    _only(data, BuildRecord, ("version",))
    image = _only(data["image"], ImageRef)
    placement = _only(data.get("placement", {}), Placement)
    cloud_init = _only(data.get("cloud_init", {}), CloudInit)
    options = _only(data.get("options", {}), BuildOptions)
    return BuildRecord(
        vm_id=_text(data["vm_id"]), name=_text(data["name"]), project=_text(data["project"]),
        domain_name=_text(data["domain_name"]), host=_text(data["host"]),
        image=ImageRef(id=_text(image["id"]), name=_text(image["name"]),
                       path=_text(image["path"]), format=_text(image["format"]),
                       sha256=_maybe(_text, image.get("sha256"))),
        cpu=_int(data["cpu"]), ram_mib=_int(data["ram_mib"]), disk_gb=_int(data["disk_gb"]),
        mac=_text(data["mac"]), network=_text(data["network"]),
        placement=Placement(
            gpus=tuple(GpuClaim(_text(_only(gpu, GpuClaim)["address"]),
                                tuple(_text(fn) for fn in gpu["functions"]))
                       for gpu in placement.get("gpus", [])),
            mdevs=tuple(MdevClaim(_text(_only(mdev, MdevClaim)["uuid"]), _text(mdev["parent"]),
                                  _text(mdev["type_id"]))
                        for mdev in placement.get("mdevs", [])),
            vfs=tuple(VfClaim(_text(_only(vf, VfClaim)["uuid"]), _text(vf["address"]),
                              _text(vf["parent"])) for vf in placement.get("vfs", [])),
            numa_node=_maybe(_int, placement.get("numa_node")),
            node_cpus=_ints(placement.get("node_cpus", [])),
            pinned_cpus=_ints(placement.get("pinned_cpus", []))),
        cloud_init=CloudInit(ssh_keys=tuple(_text(key) for key in cloud_init.get("ssh_keys", [])),
                             user_data=_maybe(_text, cloud_init.get("user_data"))),
        options=BuildOptions(hugepages=options.get("hugepages", False) is True),
        volumes=tuple(_volume(_only(entry, VolumeDisk)) for entry in data.get("volumes", [])),
        nics=tuple(Nic(_text(_only(nic, Nic)["network"]), _text(nic["mac"]))
                   for nic in data.get("nics", [])))


def _volume(entry: dict[str, Any]) -> VolumeDisk:
    """Raises: KeyError, TypeError."""
    return VolumeDisk(volume_id=_text(entry["volume_id"]), device=_text(entry["device"]),
                      read_only=entry.get("read_only", False) is True,
                      shareable=entry.get("shareable", False) is True)


# Every version this code reads, but 0 (no record: the caller's legacy loader).
_LOADERS: dict[int, Callable[[dict[str, Any]], BuildRecord]] = {1: _v1, 2: _v2, 3: _v3, 4: _v4,
                                                              5: _v5}
