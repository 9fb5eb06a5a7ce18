"""Operator commands behind the Makefile: db-init, db-clean, vm-cleanup, install-image,
ensure-network, probe-kvm, token."""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

from src.config import DEFAULT_ENV_FILE, Config, load_config
from src.database import tasks as task_dao
from src.database import vms as vm_dao
from src.database import volumes as volume_dao
from src.database.db import Database
from src.database.meta import ensure_installation_id
from src.hypervisor.disks import QemuImg
from src.hypervisor.driver import Hypervisor
from src.services.accounts.auth import TokenService, new_project_limits
from src.services.actions.orphans import OrphanFinder
from src.services.hosts import kvm_probe
from src.services.hosts.registry import HostRegistry
from src.services.images.catalog import ImageService
from src.services.vms.flavors import FlavorService
from src.services.volumes.layers import VolumeLayers
from src.vocabulary import ROLES

SEED_IMAGE = ("Ubuntu-Base-22.04", "ubuntu-test.qcow2", "qcow2")
# Ubuntu's official cloud image of the seed's release; its checksum is in SHA256SUMS beside it.
UBUNTU_URL = ("https://cloud-images.ubuntu.com/releases/22.04/release/"
              "ubuntu-22.04-server-cloudimg-amd64.img")
# Debian's and Ubuntu's definition of libvirt's NAT network `default`.
DEFAULT_NETWORK_XML = Path("/usr/share/libvirt/networks/default.xml")


def _open_db(config: Config) -> tuple[Database, str]:
    db = Database(config.db_path)
    db.migrate()
    with db.write() as conn:
        return db, ensure_installation_id(conn)


def db_init(config: Config) -> None:
    """Create the schema and register the owner's seed image (its file may come later)."""
    db, installation_id = _open_db(config)
    images = ImageService(db, config.images_dir, QemuImg())
    name, file, fmt = SEED_IMAGE
    added = images.seed(name, file, fmt)
    flavors = FlavorService(db).seed()
    HostRegistry(db, config).ensure_local()  # a single host is a cluster of one: `local`
    print(f"database {config.db_path} ready (installation {installation_id}); "
          f"image {name} -> {images.path_of(file)} {'registered' if added else 'already registered'}; "
          f"{flavors} flavor(s) added")
    if not images.has_file(name):
        print(how_to_import(name, config))
    secret = TokenService(db, new_project_limits(config.default_quota)).first_admin_token()
    if secret is not None:  # shown once: only its hash is kept
        _write_private(config.admin_token_file, secret + "\n")
        print(f"admin token of project default written to {config.admin_token_file} (mode 0600)")
        print(f"IAAS_ADMIN_TOKEN={secret}")


def how_to_import(name: str, config: Config) -> str:
    """What to run when the seed image has no file: import Ubuntu's cloud image in its place
    (nothing is downloaded here)."""
    api = f"localhost:{config.port}/v1/images"
    body = (f'{{"name":"{name}","format":"qcow2","url":"{UBUNTU_URL}",'
            f'"sha256":"\'"$SUM"\'"}}')
    folder, file = UBUNTU_URL.rsplit("/", 1)
    return "\n".join([
        (f"image {name} has no file yet (status missing_file): a VM from it answers 409 "
         "image_file_missing until it has. Import Ubuntu's cloud image in its place (with the "
         "server running, AUTH as in docs/api.md):"),
        f"  SUM=$(curl -s {folder}/SHA256SUMS | awk '$2 == \"*{file}\" {{print $1}}')",
        f'  curl -s -H "$AUTH" -X DELETE {api}/{name}',
        f'  curl -s -H "$AUTH" -X POST {api} -H \'Content-Type: application/json\' -d \'{body}\'',
        "  (or place the file at " + str(config.images_dir / SEED_IMAGE[1]) + "; see "
        "docs/operations.md#the-ubuntu-base-image)"])


def _write_private(path: Path, text: str) -> None:
    """Write text to a new file only its owner can read (never widened, even for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    partial.rename(path)


def token_command(config: Config, args: argparse.Namespace) -> None:
    """token create / list / revoke."""
    db, _ = _open_db(config)
    tokens = TokenService(db, new_project_limits(config.default_quota))
    if args.action == "create":
        try:
            row, secret = tokens.issue(args.project, args.role, args.expires_in_days * 86400
                                       if args.expires_in_days is not None else None,
                                       args.description)
        except ValueError as exc:
            raise SystemExit(f"token create: {exc}") from None
        print(f"token {row.id} (project {row.project}, role {row.role}, "
              f"expires {row.expires_at or 'never'})")
        print(secret)
    elif args.action == "list":
        for row in tokens.list():
            state = "revoked" if row.revoked_at else f"expires {row.expires_at or 'never'}"
            print(f"{row.id}  {row.project}  {row.role}  {state}  {escaped(row.description)}")
    else:
        count = tokens.revoke(args.token_id)
        if not count:
            raise SystemExit(f"no active token {args.token_id}")
        made = f" and {count - 1} token(s) made from it" if count > 1 else ""
        print(f"revoked {args.token_id}{made}")


def escaped(text: str) -> str:
    """text as it is when every character is printable; else as repr writes it (`\\x1b`,
    `\\n`, backslashes doubled), so that a description made before they were checked cannot
    move the cursor, clear the screen, link or forge a line on the operator's terminal."""
    if text.isprintable():
        return text
    return "".join("\\\\" if char == "\\" else char if char.isprintable()
                   else repr(char)[1:-1] for char in text)


def install_image(config: Config, name: str, source: Path) -> None:
    """Copy a local qcow2 into the images dir (never over an existing file) and register it."""
    db, _ = _open_db(config)
    target = config.images_dir / source.name
    if not target.exists():
        config.images_dir.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        shutil.copyfile(source, partial)
        partial.rename(target)
    added = ImageService(db, config.images_dir, QemuImg()).seed(name, target.name, "qcow2")
    print(f"image {name} -> {target} {'registered' if added else 'already registered'}")


def db_clean(config: Config) -> None:
    """Delete VM rows and their tasks only; libvirt and files are untouched."""
    db, _ = _open_db(config)
    with db.write() as conn:
        ids = vm_dao.delete_all(conn)
        task_dao.delete_for_vms(conn, ids)
    print(f"removed {len(ids)} VM record(s)")


def vm_cleanup(config: Config, hosts: HostRegistry | None = None,
               everything: bool = False) -> None:
    """Remove this installation's orphans: domains and instance folders without a VM row.

    With everything, also force off, undefine and delete every VM of this installation with its
    rows (the owner's "start from scratch"). Domains and folders of others are never touched.
    """
    db, installation_id = _open_db(config)
    own = hosts is None
    if hosts is None:
        hosts = HostRegistry(db, config)
        hosts.ensure_local()
        hosts.check_all()
    finder = OrphanFinder(db, hosts, config.instances_dir, installation_id,
                          VolumeLayers(db, config, installation_id))
    found = finder.ours() if everything else finder.find()
    finder.remove(found)
    if own:
        hosts.close()
    for domain in found.domains:
        print(f"removed domain {domain.name} ({domain.uuid}) on host {domain.host}")
    removed_rows: list[str] = []
    if everything:
        with db.write() as conn:
            removed_rows = vm_dao.delete_all(conn)
            task_dao.delete_for_vms(conn, removed_rows)
            removed_rows += volume_dao.delete_all(conn)
    for volume in found.volumes:
        print(f"removed volume file {volume.file} on host {volume.host}")
    print(f"removed {len(found.domains)} domain(s), {len(found.folders)} instance folder(s), "
          f"{len(found.volumes)} volume file(s), {len(removed_rows)} VM and volume record(s)")


def ensure_network(config: Config, hypervisor: Hypervisor) -> int:
    """Make IAAS_NETWORK exist (only `default`, from libvirt's own definition), run and autostart.

    Returns the exit status: 1 when the network does not exist and cannot be made here.
    """
    name = config.network
    state = hypervisor.networks.state(name)
    if state == "missing" and name == "default" and DEFAULT_NETWORK_XML.is_file():
        hypervisor.networks.define(DEFAULT_NETWORK_XML.read_text())
        print(f"network default defined from {DEFAULT_NETWORK_XML}")
        state = "inactive"
    if state == "missing":
        print(f"network {name!r} does not exist on {config.libvirt_uri}: define it "
              f"(`virsh net-define <file>`) or set IAAS_NETWORK to a network that does",
              file=sys.stderr)
        return 1
    if state == "inactive":
        hypervisor.networks.start(name)
        print(f"network {name} was not running: started it and marked it autostart")
    else:
        print(f"network {name} is active")
    return 0


def probe_kvm(env_file: Path, image: Path | None) -> None:
    """Boot a throw-away KVM guest; where only emulation works, write IAAS_DOMAIN_TYPE=qemu."""
    config = load_config(env_file=env_file)
    tiny = image or config.images_dir / kvm_probe.TINY_FILE
    print(kvm_probe.settle_domain_type(config, env_file, os.environ,
                                       lambda: kvm_probe.probe(config, tiny, QemuImg())))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(prog="python -m src.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("db-init")
    sub.add_parser("db-clean")
    sub.add_parser("ensure-network", help="start IAAS_NETWORK (and autostart it) if it is not")
    cleanup = sub.add_parser("vm-cleanup", help="remove orphaned domains and instance folders")
    cleanup.add_argument("--all", action="store_true", dest="everything",
                         help="also remove every VM of this installation and its records")
    install = sub.add_parser("install-image", help="copy a qcow2 into IAAS_IMAGES_DIR and register it")
    install.add_argument("name")
    install.add_argument("source", type=Path)
    probe = sub.add_parser("probe-kvm", help="boot a test guest with KVM; where it does not "
                           "run, set IAAS_DOMAIN_TYPE=qemu in the env file")
    probe.add_argument("--env-file", type=Path, default=DEFAULT_ENV_FILE)
    probe.add_argument("--image", type=Path, help="the tiny guest (default: "
                       "$IAAS_IMAGES_DIR/tiny-linux.qcow2)")
    token = sub.add_parser("token", help="manage API tokens")
    actions = token.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="print a new token (shown only once)")
    create.add_argument("--project", required=True)
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--expires-in-days", type=float, default=None)
    create.add_argument("--description", default="")
    actions.add_parser("list")
    revoke = actions.add_parser("revoke")
    revoke.add_argument("token_id")
    args = parser.parse_args(argv)
    if args.command == "probe-kvm":  # before load_config: it reads its own env file
        probe_kvm(args.env_file, args.image)
        return 0
    config = load_config()
    if args.command == "install-image":
        install_image(config, args.name, args.source)
    elif args.command == "token":
        token_command(config, args)
    elif args.command == "ensure-network":
        return ensure_network(config, Hypervisor(config.libvirt_uri))
    elif args.command == "vm-cleanup":
        vm_cleanup(config, everything=args.everything)
    else:
        {"db-init": db_init, "db-clean": db_clean}[args.command](config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
