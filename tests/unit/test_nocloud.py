"""NoCloud seed: keys are checked, every value is emitted inert, real cloud-init reads it all."""
from __future__ import annotations

import base64
import email
import io
import json
import shutil
import subprocess
from email.message import Message
from pathlib import Path

import pycdlib
import pytest
import yaml

from src.utils import nocloud
from src.utils.nocloud import (
    InvalidSshKey,
    Seed,
    cloud_config,
    meta_data,
    network_config,
    seed_files,
    user_data,
    user_data_content_type,
    validate_ssh_key,
    write_seed,
)

# A real key made by `ssh-keygen -t ed25519` (its private half was thrown away).
KNOWN_ED25519 = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDXFQOudCiQVYbZdQgpWxBUWJgNxv57VKU+4b3ONajJg"
                 " alice@example.org")
KNOWN_BLOB = base64.b64decode(KNOWN_ED25519.split()[1])
MAC = "52:54:00:12:34:56"  # all digits: unquoted, YAML 1.1 would read a base-60 integer


def make_seed(**changes: object) -> Seed:
    values: dict[str, object] = {"instance_id": "0f6c1a2e-5b7d-4c1e-9a43-2d5e8f1b7c90",
                                 "hostname": "web-1", "ssh_keys": (KNOWN_ED25519,),
                                 "user_data": None, "mac": MAC}
    values.update(changes)
    return Seed(**values)  # type: ignore[arg-type]


def ssh_string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def key_line(blob: bytes, kind: str = "ssh-ed25519") -> str:
    return f"{kind} {base64.b64encode(blob).decode()}"


def required_tool(name: str) -> str:
    """`make test` installs the test tools (scripts/setup.sh); a missing one is a failure."""
    path = shutil.which(name)
    assert path is not None, f"{name} is missing: run `make setup-dev`"
    return path


def cloud_init_python() -> str:
    """The interpreter cloud-init runs under, so tests can ask its own code."""
    with open(required_tool("cloud-init"), encoding="utf-8") as script:
        return script.readline().removeprefix("#!").strip()


def ask_cloud_init(code: str, payload: object) -> object:
    done = subprocess.run([cloud_init_python(), "-c", code], input=json.dumps(payload),
                          capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)


# --- SSH keys ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, bits", [("ed25519", None), ("rsa", "2048"), ("ecdsa", "256"),
                                        ("ecdsa", "384"), ("ecdsa", "521")])
def test_accepts_keys_made_by_ssh_keygen(tmp_path: Path, kind: str, bits: str | None) -> None:
    argv = [required_tool("ssh-keygen"), "-q", "-t", kind, "-N", "", "-C", "bob@host",
            "-f", str(tmp_path / "key")]
    subprocess.run(argv + (["-b", bits] if bits else []), check=True, timeout=60)
    line = (tmp_path / "key.pub").read_text().strip()
    assert validate_ssh_key(line) == line


def test_accepts_known_key_and_security_key_types() -> None:
    assert validate_ssh_key(KNOWN_ED25519) == KNOWN_ED25519
    sk_ed25519 = (ssh_string(b"sk-ssh-ed25519@openssh.com") + ssh_string(bytes(32))
                  + ssh_string(b"ssh:"))
    sk_ecdsa = (ssh_string(b"sk-ecdsa-sha2-nistp256@openssh.com") + ssh_string(b"nistp256")
                + ssh_string(b"\x04" + bytes(64)) + ssh_string(b"ssh:"))
    for kind, blob in [("sk-ssh-ed25519@openssh.com", sk_ed25519),
                       ("sk-ecdsa-sha2-nistp256@openssh.com", sk_ecdsa)]:
        assert validate_ssh_key(key_line(blob, kind)) == key_line(blob, kind)


def test_normalizes_outer_and_separating_spaces_only() -> None:
    kind, data, _ = KNOWN_ED25519.split(" ")
    assert validate_ssh_key(f"  {kind}   {data}   my  laptop ") == f"{kind} {data} my  laptop"
    assert validate_ssh_key(f"{kind} {data}") == f"{kind} {data}"


@pytest.mark.parametrize("key, reason", [
    (KNOWN_ED25519 + "\n" + KNOWN_ED25519, "line break"),
    (KNOWN_ED25519 + "\n  - evil", "line break"),
    (KNOWN_ED25519 + "\n", "line break"),
    (KNOWN_ED25519 + "\r", "line break"),
    (KNOWN_ED25519 + "\x00", "control"),
    (KNOWN_ED25519.replace(" ", "\t"), "control"),
    (KNOWN_ED25519 + "\u2028x", "non-printable"),
    (KNOWN_ED25519 + "\x85x", "non-printable"),
    ("", "needs a type"),
    ("ssh-ed25519", "needs a type"),
    ('command="sh" ' + KNOWN_ED25519, "unsupported key type"),
    ("- " + KNOWN_ED25519, "unsupported key type"),
    ('"' + KNOWN_ED25519 + '"', "unsupported key type"),
    ("ssh-dss " + KNOWN_ED25519.split()[1], "unsupported key type"),
    ("ssh-ed25519 not*base64", "not valid base64"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDXFQOudCiQVYbZdQgpWxBUWJgNxv57VKU+4b3ONajJ",
     "not valid base64"),
    (key_line(KNOWN_BLOB, "ssh-rsa"), "not a ssh-rsa key"),
    (key_line(KNOWN_BLOB, "ecdsa-sha2-nistp256"), "not a ecdsa-sha2-nistp256 key"),
    (key_line(KNOWN_BLOB[:-1]), "truncated"),
    (key_line(KNOWN_BLOB + ssh_string(b"extra")), "malformed"),
    (key_line(ssh_string(b"ssh-ed25519") + ssh_string(bytes(31))), "malformed"),
    (key_line(ssh_string(b"ecdsa-sha2-nistp256") + ssh_string(b"nistp384")
              + ssh_string(b"\x04" + bytes(96)), "ecdsa-sha2-nistp256"), "malformed"),
    (KNOWN_ED25519 + " " + "x" * 9000, "longer than 8192"),
])
def test_rejects_bad_keys_with_a_reason(key: str, reason: str) -> None:
    with pytest.raises(InvalidSshKey, match=reason):
        validate_ssh_key(key)


def test_a_comment_full_of_yaml_stays_one_list_item() -> None:
    tricky = validate_ssh_key(KNOWN_ED25519 + ' x": 1, "ssh_authorized_keys": [ ] # \\ &a *a !!str')
    config = yaml.safe_load(cloud_config(make_seed(ssh_keys=(tricky, KNOWN_ED25519))))
    assert config["ssh_authorized_keys"] == [tricky, KNOWN_ED25519]


# --- meta-data, cloud-config, network-config ---------------------------------------------------

NASTY = ["vm\ninstance-id: x", 'a"\nlocal-hostname: evil', "a: b", "- a", "{a: b}", "&x *x",
         "!!python/object:os.system", "#c", "a\u2028b\x85c", "nul\x00", "'", "\\", "x\r\ny: z",
         "caf\u00e9 \U0001F600", "--===============1==\nContent-Type: text/plain", ""]


@pytest.mark.parametrize("value", NASTY)
def test_meta_data_has_exactly_two_keys_whatever_the_values(value: str) -> None:
    seed = make_seed(instance_id=value, hostname=value + "h")
    text = meta_data(seed)
    assert text.isascii() and text.count("\n") == 2
    assert yaml.safe_load(text) == {"instance-id": value, "local-hostname": value + "h"}


@pytest.mark.parametrize("value", NASTY)
def test_cloud_config_keeps_its_shape_whatever_the_hostname(value: str) -> None:
    text = cloud_config(make_seed(hostname=value))
    assert text.isascii() and text.startswith("#cloud-config\n")
    assert yaml.safe_load(text) == {"hostname": value, "preserve_hostname": False,
                                    "ssh_authorized_keys": [KNOWN_ED25519]}


def test_cloud_config_without_keys_leaves_the_list_out() -> None:
    assert yaml.safe_load(cloud_config(make_seed(ssh_keys=()))) == {
        "hostname": "web-1", "preserve_hostname": False}


def test_cloud_config_passes_cloud_init_schema(tmp_path: Path) -> None:
    keys = [KNOWN_ED25519]
    for kind in ("rsa", "ecdsa"):
        subprocess.run([required_tool("ssh-keygen"), "-q", "-t", kind, "-N", "", "-C", "k",
                        "-f", str(tmp_path / kind)], check=True, timeout=60)
        keys.append(validate_ssh_key((tmp_path / f"{kind}.pub").read_text().strip()))
    config = tmp_path / "user-data"
    config.write_text(cloud_config(make_seed(ssh_keys=tuple(keys))))
    done = subprocess.run([required_tool("cloud-init"), "schema", "--config-file", str(config)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Valid cloud-config: {config}" in done.stdout


def test_network_config_matches_the_mac_and_uses_dhcp() -> None:
    for given in (MAC, MAC.upper()):
        assert yaml.safe_load(network_config(make_seed(mac=given))) == {
            "version": 2,
            "ethernets": {"nic0": {"match": {"macaddress": MAC}, "dhcp4": True}}}


@pytest.mark.parametrize("mac", ["52:54:00:12:34", "52-54-00-12-34-56", "zz:54:00:12:34:56",
                                 MAC + "\n    dhcp6: true", ""])
def test_network_config_refuses_what_is_not_a_mac(mac: str) -> None:
    with pytest.raises(ValueError, match="not a MAC"):
        network_config(make_seed(mac=mac))


def test_cloud_init_renders_the_network_config(tmp_path: Path) -> None:
    source = tmp_path / "network-config"
    source.write_text(network_config(make_seed()))
    out = tmp_path / "out"
    subprocess.run([required_tool("cloud-init"), "devel", "net-convert", "-p", str(source),
                    "-k", "yaml", "-d", str(out), "-D", "debian", "-O", "eni"],
                   capture_output=True, check=True, timeout=120)
    assert "inet dhcp" in (out / "etc/network/interfaces.d/50-cloud-init").read_text()
    assert f'ATTR{{address}}=="{MAC}"' in (out / "etc/udev/rules.d/70-persistent-net.rules"
                                           ).read_text()


# --- user-data ---------------------------------------------------------------------------------

USER_DATA = {
    "#!/bin/sh\necho hi\n": "text/x-shellscript",
    "#cloud-config\nruncmd: [ls]\n": "text/cloud-config",
    "  #Cloud-Config\npackages: [jq]": "text/cloud-config",
    "#cloud-config-archive\n- type: foo\n": "text/cloud-config-archive",
    "#cloud-boothook\n#!/bin/sh\n": "text/cloud-boothook",
    "#include\nhttp://example.invalid/a\n": "text/x-include-url",
    "#include-once\nhttp://example.invalid/a\n": "text/x-include-once-url",
    "#part-handler\n": "text/part-handler",
    "## template: jinja\n#cloud-config\n": "text/jinja2",
    "just words": "text/plain",
    "--===============1==\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n": "text/plain",
    "From nobody\n#!/bin/sh\n\x00\x7f caf\u00e9 \U0001F600 no newline at end": "text/plain",
}


def parse_archive(data: bytes) -> list[Message]:
    archive = email.message_from_bytes(data)
    assert archive.get_content_type() == "multipart/mixed"
    assert archive["MIME-Version"] == "1.0"  # cloud-init only takes it as MIME with this
    parts = archive.get_payload()
    assert isinstance(parts, list)
    return parts


def test_user_data_alone_is_the_cloud_config() -> None:
    for empty in (None, ""):
        seed = make_seed(user_data=empty)
        assert user_data(seed) == cloud_config(seed).encode()


@pytest.mark.parametrize("given, content_type", USER_DATA.items())
def test_user_part_travels_unchanged_beside_the_platform_part(given: str,
                                                              content_type: str) -> None:
    seed = make_seed(user_data=given, hostname="--===============1==")
    platform, user = parse_archive(user_data(seed))
    assert platform.get_content_type() == "text/cloud-config"
    # 7bit: the tiny test guest greps its keys from this part.
    assert platform["Content-Transfer-Encoding"] == "7bit"
    assert platform.get_payload(decode=True) == cloud_config(seed).encode()
    assert user.get_content_type() == content_type
    assert user.get_payload(decode=True) == given.encode()


def test_content_types_match_cloud_init_own_guess() -> None:
    code = ("import json, sys\nfrom cloudinit.handlers import type_from_starts_with\n"
            "print(json.dumps([type_from_starts_with(s, 'text/plain')"
            " for s in json.load(sys.stdin)]))")
    samples = [*USER_DATA, "#cloud-config-jsonp\n{}", "#!", "#cloud", "", " \n#!x"]
    assert ask_cloud_init(code, samples) == [user_data_content_type(s.encode()) for s in samples]


def test_cloud_init_splits_the_archive_into_both_parts_unchanged(tmp_path: Path) -> None:
    code = ("import json, sys\nfrom cloudinit import helpers, user_data\n"
            f"paths = helpers.Paths({{'cloud_dir': {str(tmp_path)!r}}})\n"
            "msg = user_data.UserDataProcessor(paths).process(json.load(sys.stdin).encode())\n"
            "print(json.dumps([[p.get_content_type(), p.get_payload(decode=True).decode()]"
            " for p in msg.walk() if not p.is_multipart()]))")
    shell = "#!/bin/sh\nprintf '%s\\n' '--===============1==' 'MIME-Version: 1.0'\r\n"
    seed = make_seed(user_data=shell)
    assert ask_cloud_init(code, user_data(seed).decode()) == [
        ["text/cloud-config", cloud_config(seed)], ["text/x-shellscript", shell]]


# --- the ISO -----------------------------------------------------------------------------------

def read_iso(path: Path) -> tuple[pycdlib.PyCdlib, dict[str, bytes]]:
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    files = {}
    for child in iso.list_children(rr_path="/"):
        if child.is_dot() or child.is_dotdot():
            continue
        name = child.rock_ridge.name().decode()
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
        files[name] = out.getvalue()
    return iso, files


def test_seed_iso_reads_back_with_label_names_and_contents(tmp_path: Path) -> None:
    seed = make_seed(user_data="#!/bin/sh\necho hi\n")
    path = tmp_path / "seed.iso"
    write_seed(seed, path)
    iso, files = read_iso(path)
    try:
        assert files == seed_files(seed)
        assert set(files) == {"meta-data", "user-data", "network-config"}
        assert iso.pvd.volume_identifier.decode().rstrip() == "cidata"
        for name in files:  # Joliet shows the same names and bytes
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, joliet_path=f"/{name}")
            assert out.getvalue() == files[name]
    finally:
        iso.close()
    probe = subprocess.run([required_tool("blkid"), "-o", "export", str(path)],
                           capture_output=True, text=True, check=True, timeout=30).stdout
    assert "LABEL=cidata" in probe.split() and "TYPE=iso9660" in probe.split()
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["seed.iso"]


def test_write_seed_replaces_whole_or_not_at_all(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "seed.iso"
    write_seed(make_seed(hostname="old"), path)
    old = path.read_bytes()
    with pytest.raises(ValueError):
        write_seed(make_seed(mac="nope"), path)

    def broken(files: dict[str, bytes], out: io.BufferedWriter) -> None:
        out.write(b"half an iso")
        raise OSError("disk full")

    monkeypatch.setattr(nocloud, "_write_iso", broken)
    with pytest.raises(OSError, match="disk full"):
        write_seed(make_seed(hostname="new"), path)
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["seed.iso"]
