"""The cloud-init NoCloud seed of a VM: SSH key checks, the seed's three files and its ISO."""
from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import tempfile
from dataclasses import dataclass
from email import encoders
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.mime.text import MIMEText
from pathlib import Path
from typing import BinaryIO

import pycdlib

MAX_SSH_KEY_CHARS = 8192
SEED_LABEL = "cidata"


class InvalidSshKey(ValueError):
    """An SSH public key the platform refuses; str(exc) is a short human reason."""


@dataclass(frozen=True)
class _KeyShape:
    """What the decoded blob of one key type holds, after its leading type string."""

    strings: int                   # SSH wire strings in the blob, the type string included
    curve: str | None = None       # ECDSA: the second string names the curve
    point_bytes: int | None = None  # Ed25519: the second string is the point, of fixed size


# The key types OpenSSH's authorized_keys takes that are still worth having (no DSA).
_KEY_SHAPES: dict[str, _KeyShape] = {
    "ssh-ed25519": _KeyShape(2, point_bytes=32),
    "ssh-rsa": _KeyShape(3),  # exponent, modulus
    "ecdsa-sha2-nistp256": _KeyShape(3, curve="nistp256"),
    "ecdsa-sha2-nistp384": _KeyShape(3, curve="nistp384"),
    "ecdsa-sha2-nistp521": _KeyShape(3, curve="nistp521"),
    "sk-ssh-ed25519@openssh.com": _KeyShape(3, point_bytes=32),  # + application
    "sk-ecdsa-sha2-nistp256@openssh.com": _KeyShape(4, curve="nistp256"),  # + point, application
}
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def _ssh_strings(blob: bytes) -> list[bytes]:
    """Split an SSH wire-format blob into its uint32-length-prefixed strings."""
    strings, at = [], 0
    while at < len(blob):
        if at + 4 > len(blob):
            raise InvalidSshKey("key data is truncated")
        size = int.from_bytes(blob[at:at + 4], "big")
        at += 4
        if at + size > len(blob):
            raise InvalidSshKey("key data is truncated")
        strings.append(blob[at:at + size])
        at += size
    return strings


def _decode_base64(data: str) -> bytes:
    if _BASE64.fullmatch(data):
        try:
            return base64.b64decode(data, validate=True)
        except binascii.Error:
            pass
    raise InvalidSshKey("key data is not valid base64")


def _check_blob(kind: str, blob: bytes) -> None:
    shape = _KEY_SHAPES[kind]
    strings = _ssh_strings(blob)
    if not strings or strings[0] != kind.encode("ascii"):
        raise InvalidSshKey(f"key data is not a {kind} key")
    if (len(strings) != shape.strings
            or (shape.curve is not None and strings[1] != shape.curve.encode("ascii"))
            or (shape.point_bytes is not None and len(strings[1]) != shape.point_bytes)):
        raise InvalidSshKey(f"key data is malformed for {kind}")


def validate_ssh_key(key: str) -> str:
    """Check one OpenSSH public key line `type base64 [comment]`; return it with spaces trimmed.

    Raises: InvalidSshKey when the line is not a well-formed key of a supported type.
    """
    if len(key) > MAX_SSH_KEY_CHARS:
        raise InvalidSshKey(f"key is longer than {MAX_SSH_KEY_CHARS} characters")
    # Line breaks and control characters are how one key would smuggle in a second line.
    if not key.isprintable():
        raise InvalidSshKey("key contains a line break, control or other non-printable character")
    fields = re.split(" +", key.strip(" "), maxsplit=2)
    if len(fields) < 2:
        raise InvalidSshKey("key needs a type and base64 key data")
    kind, data = fields[0], fields[1]
    if kind not in _KEY_SHAPES:
        raise InvalidSshKey(f"unsupported key type {kind[:40]!r} (supported: "
                            f"{', '.join(_KEY_SHAPES)})")
    _check_blob(kind, _decode_base64(data))
    return " ".join(fields)


@dataclass(frozen=True)
class Seed:
    """Everything a VM's seed says; values are emitted quoted, so none can add structure."""

    instance_id: str          # the VM uuid
    hostname: str             # the VM name
    ssh_keys: tuple[str, ...]  # keys that passed validate_ssh_key
    user_data: str | None     # the user's own user-data, delivered unchanged
    mac: str                  # the VM's NIC, matched in network-config


def _yaml_string(value: str) -> str:
    """A YAML double-quoted scalar in plain ASCII: quotes, backslashes, line breaks and
    everything non-ASCII are escaped, so the value can neither end early nor add a line."""
    out = []
    for char in value:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def meta_data(seed: Seed) -> str:
    """The seed's meta-data: exactly instance-id and local-hostname."""
    return (f"instance-id: {_yaml_string(seed.instance_id)}\n"
            f"local-hostname: {_yaml_string(seed.hostname)}\n")


def cloud_config(seed: Seed) -> str:
    """The platform's #cloud-config: the hostname and the authorized SSH keys (plain ASCII)."""
    lines = ["#cloud-config",
             f"hostname: {_yaml_string(seed.hostname)}",
             "preserve_hostname: false"]
    # The schema wants at least one key when the list is there at all.
    if seed.ssh_keys:
        lines.append("ssh_authorized_keys:")
        lines += [f"  - {_yaml_string(key)}" for key in seed.ssh_keys]
    return "\n".join(lines) + "\n"


# cloud-init 22.4's own table (cloudinit/handlers/__init__.py, INCLUSION_TYPES_MAP): how it
# types a part by its start, the longest matching prefix winning.
_TYPE_BY_START: dict[str, str] = {
    "#include": "text/x-include-url",
    "#include-once": "text/x-include-once-url",
    "#!": "text/x-shellscript",
    "#cloud-config": "text/cloud-config",
    "#part-handler": "text/part-handler",
    "#cloud-boothook": "text/cloud-boothook",
    "#cloud-config-archive": "text/cloud-config-archive",
    "#cloud-config-jsonp": "text/cloud-config-jsonp",
    "## template: jinja": "text/jinja2",
    "text/x-shellscript-per-boot": "text/x-shellscript-per-boot",
    "text/x-shellscript-per-instance": "text/x-shellscript-per-instance",
    "text/x-shellscript-per-once": "text/x-shellscript-per-once",
}
_STARTS_LONGEST_FIRST = sorted(_TYPE_BY_START, key=len, reverse=True)


def user_data_content_type(data: bytes) -> str:
    """The MIME type cloud-init would give user-data that starts this way (else text/plain)."""
    try:
        start = data.decode("utf-8").lower().lstrip()
    except UnicodeDecodeError:
        return "text/plain"
    for prefix in _STARTS_LONGEST_FIRST:
        if start.startswith(prefix):
            return _TYPE_BY_START[prefix]
    return "text/plain"


def _user_part(data: bytes) -> MIMENonMultipart:
    maintype, subtype = user_data_content_type(data).split("/")
    part = MIMENonMultipart(maintype, subtype, charset="utf-8")
    part.set_payload(data)
    # base64 carries the bytes exactly and leaves nothing that could look like a boundary.
    encoders.encode_base64(part)
    return part


def user_data(seed: Seed) -> bytes:
    """The seed's user-data: the platform's cloud-config alone, or a multipart/mixed archive of
    it and the user's own user-data (bytes unchanged, typed the way cloud-init types it).

    Raises: UnicodeEncodeError if the user's user-data holds lone surrogates.
    """
    platform = cloud_config(seed)
    if not seed.user_data:
        return platform.encode("ascii")
    given = seed.user_data.encode("utf-8")
    # A boundary taken from the content: the same seed gives the same bytes, and no text can
    # hold the hash of itself, so the boundary never occurs inside a part.
    digest = hashlib.sha256(platform.encode("ascii") + b"\0" + given).hexdigest()
    archive = MIMEMultipart(boundary=f"iaas-seed-{digest[:32]}")
    # 7bit, not base64: the tiny test guest reads its keys from this part with sed.
    archive.attach(MIMEText(platform, "cloud-config", "us-ascii"))
    archive.attach(_user_part(given))
    return archive.as_bytes()


_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")


def network_config(seed: Seed) -> str:
    """Network config version 2: DHCPv4 on the NIC with the seed's MAC.

    Raises: ValueError if the MAC is not six colon-separated hex octets.
    """
    mac = seed.mac.lower()
    if not _MAC.fullmatch(mac):
        raise ValueError(f"not a MAC address: {seed.mac[:40]!r}")
    # Quoted: YAML 1.1 reads an all-digit unquoted MAC as a base-60 integer.
    return ("version: 2\n"
            "ethernets:\n"
            "  nic0:\n"
            "    match:\n"
            f"      macaddress: {_yaml_string(mac)}\n"
            "    dhcp4: true\n")


# (Rock Ridge / Joliet name, ISO 9660 level-1 name) as `genisoimage -rock -joliet` maps them.
_SEED_FILES = (("meta-data", "META_DAT.;1"),
               ("user-data", "USER_DAT.;1"),
               ("network-config", "NETWORK_.;1"))


def seed_files(seed: Seed) -> dict[str, bytes]:
    """The seed's files by name, as they go onto the ISO."""
    return {"meta-data": meta_data(seed).encode("ascii"),
            "user-data": user_data(seed),
            "network-config": network_config(seed).encode("ascii")}


def _write_iso(files: dict[str, bytes], out: BinaryIO) -> None:
    iso = pycdlib.PyCdlib()
    # Rock Ridge gives Linux (and so cloud-init) the lowercase names with dashes, Joliet
    # gives them to everyone else; the plain ISO 9660 names are 8.3 upper case.
    iso.new(interchange_level=1, vol_ident=SEED_LABEL, joliet=3, rock_ridge="1.09")
    try:
        for name, iso_name in _SEED_FILES:
            data = files[name]
            iso.add_fp(io.BytesIO(data), len(data), f"/{iso_name}", rr_name=name,
                       joliet_path=f"/{name}")
        iso.write_fp(out)
    finally:
        iso.close()


def write_seed(seed: Seed, path: Path) -> None:
    """Write the seed ISO (volume `cidata`) to path atomically, mode 0600 (user-data may
    hold secrets; libvirt hands the file to QEMU itself).

    Raises: ValueError for a bad MAC; OSError if the file cannot be written.
    """
    files = seed_files(seed)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            _write_iso(files, out)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def seed_bytes(seed: Seed) -> bytes:
    """The seed ISO in memory, for hosts whose disks live in a libvirt pool (no local file).

    Raises: ValueError for a bad MAC.
    """
    out = io.BytesIO()
    _write_iso(seed_files(seed), out)
    return out.getvalue()
