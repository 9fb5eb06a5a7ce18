#!/usr/bin/env python3
"""`make bench`: measure side by side in one run and write BENCHMARKS.md (machine, versions, date).

Sections: create through the API against raw libvirt; overlay against full copy; listing as VMs
grow; concurrent create throughput; make serve against make serve-prod (throughput, slow clients,
load); image upload over HTTP against cp; volumes (from an image against qemu-img convert,
snapshot and revert against qemu-img snapshot, hot-plug); live migration to a second libvirtd
over TLS against `virsh migrate` by hand, and the downtime; GPU scarcity (placing from a queue
of 1,000, a booking beside 10,000 reservations). --quick shrinks every size for a smoke run.
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import libvirt  # type: ignore[import-untyped]

from scripts.benchmarks import (
    broker,
    create,
    disk,
    hosts,
    listing,
    migration,
    scarcity,
    servers,
    task_history,
    throughput,
    upload,
    volumes,
)
from scripts.benchmarks.common import Section
from scripts.harness.host import (
    SYSTEM_URI,
    HostUnavailable,
    IsolatedNetwork,
    make_workspace,
    open_system,
    remove_network,
    start_isolated_network,
)
from scripts.harness.remote_host import start_remote_host
from src.config import Config

REPO = Path(__file__).resolve().parent.parent
SECTIONS = ("create", "disk", "throughput", "remote", "migration", "listing", "history", "hosts",
            "servers", "broker", "upload", "volumes", "scarcity")


def _first_line(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True,
                              check=True).stdout.splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "unknown"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


def describe_machine(conn: libvirt.virConnect) -> str:
    os_name = "unknown"
    if Path("/etc/os-release").exists():
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    version = conn.getLibVersion()
    rows = [
        ("date (UTC)", datetime.now(UTC).strftime("%Y-%m-%d %H:%M")),
        ("machine", f"{_cpu_model()}, {os.cpu_count()} CPUs, {_memory_gib():.1f} GiB"),
        ("system", f"{os_name}, kernel {platform.release()}"),
        ("libvirt", (f"daemon {version // 1000000}.{version // 1000 % 1000}.{version % 1000}, "
                    f"libvirt-python {metadata.version('libvirt-python')}")),
        ("QEMU", _first_line(["qemu-system-x86_64", "--version"])),
        ("Python", platform.python_version()),
        ("SQLite", sqlite3.sqlite_version),
        ("servers", f"wsgiref (stdlib), waitress {metadata.version('waitress')}"),
        ("commit", _first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])),
    ]
    return "\n".join(["| | |", "|---|---|", *[f"| {key} | {value} |" for key, value in rows]])


def _remote(root: Path, net: IsolatedNetwork, runs: int) -> Section:
    """Create-to-running on a second libvirtd reached over TLS, against the local host."""
    config = Config(db_path=root / "iaas.db", libvirt_uri=SYSTEM_URI, domain_type="qemu",
                    images_dir=root / "images", instances_dir=root / "instances",
                    network=net.name, max_builds=2)
    with start_remote_host("iaas-bench-rh") as remote:
        conn = remote.open()
        try:
            remote_net = start_isolated_network(conn, "iaas-bench-rn")
            try:
                return hosts.remote_create(replace(config, host_credentials_dir=remote.pkipath),
                                           remote, remote_net, runs)
            finally:
                remove_network(conn, remote_net)
        finally:
            conn.close()


def _migration(conn: libvirt.virConnect, root: Path, net: IsolatedNetwork,
               rounds: int) -> Section:
    """Live migration to a second libvirtd over TLS, through the API and by hand.

    Raises: HostUnavailable when the second host cannot be made (no network namespaces).
    """
    with start_remote_host("iaas-bench-mh") as remote:
        remote_conn = remote.open()
        try:
            remote_net = start_isolated_network(remote_conn, "iaas-bench-mn")
            try:
                return migration.run(conn, root, net, remote, remote_net, rounds)
            finally:
                remove_network(remote_conn, remote_net)
        finally:
            remote_conn.close()


def stamped(sections: list[Section]) -> list[Section]:
    """Mark each section with when and under what load it was measured, and print each
    target's figure and verdict (the figures of a shared machine mean little without it)."""
    load = ", ".join(Path("/proc/loadavg").read_text().split()[:3])
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    for section in sections:
        section.stamp = (f"Measured {when}, load average {load} (1, 5, 15 min) on "
                         f"{os.cpu_count()} CPUs.")
        for line in section.summary() or [f"{section.title}: no target"]:
            print(f"bench: {line}", flush=True)
    return sections


def write_report(path: Path, machine: str, sections: list[Section], seconds: float,
                 quick: bool, partial: bool) -> None:
    """Write the report; a partial run (--only) replaces just its sections in the file."""
    kept: dict[str, str] = {}
    if partial and path.exists():
        for chunk in path.read_text().split("\n## ")[1:]:
            kept["## " + chunk.split("\n", 1)[0]] = "## " + chunk.rstrip() + "\n"
    for section in sections:
        kept[f"## {section.title}"] = section.markdown()
    intro = ("# Benchmarks\n\nWritten by `make bench` (`scripts/bench.py`"
             f"{' --quick' if quick else ''}) in {seconds:.0f} s. Each comparison is measured "
             "side by side in one run on this shared, noisy machine, so ratios mean more than "
             "absolute times; each section says when it was measured and the load average "
             "then. Every target is stated as its issue set it, beside the figure and the "
             "verdict: **NOT met** wherever the figure misses (a target is never moved to "
             "fit a figure). Guests run under TCG here (`IAAS_DOMAIN_TYPE=qemu`).\n")
    if partial:
        intro += ("\nThis file was last updated by a partial run (`--only`) that re-measured: "
                  + ", ".join(section.title for section in sections) + ". The machine table "
                  "below is that run's.\n")
    body = "\n".join(kept.values())
    path.write_text(f"{intro}\n{machine}\n\n{body}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--output", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--only", choices=SECTIONS, action="append",
                        help="run only these sections (repeatable); default: all")
    args = parser.parse_args(argv)
    quick = args.quick
    wanted = set(args.only or SECTIONS)
    # Bursts of 50 clients deliberately queue behind waitress's workers; it warns at each one.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    started = time.monotonic()
    try:
        conn = open_system()
    except HostUnavailable as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    net = start_isolated_network(conn, "iaas-bench")
    sections: list[Section] = []
    unable: list[str] = []
    try:
        machine = describe_machine(conn)
        if "broker" in wanted:  # RabbitMQ installed and running (what the broker tier needs)
            subprocess.run([str(REPO / "scripts" / "broker.sh"), "start"], check=True)
        measures: tuple[tuple[str, Callable[[Path], list[Section]]], ...] = (
                ("create", lambda root: [create.run(conn, root, net, 3 if quick else 10)]),
                ("disk", lambda root: [disk.run(root, (1,) if quick else (1, 4, 16))]),
                ("throughput", lambda root: [throughput.run(
                    conn, root, net, (1, 4) if quick else (1, 4, 8), 4 if quick else 8)]),
                ("remote", lambda root: [_remote(root, net, 2 if quick else 5)]),
                ("migration", lambda root: [_migration(conn, root, net, 2 if quick else 7)]),
                ("broker", lambda root: [
                    broker.create(conn, root, net, 3 if quick else 10),
                    broker.redelivery(conn, root, net, 2 if quick else 5),
                    broker.throughput(root, 2 if quick else 8, 1 if quick else 3)]),
                ("volumes", lambda root: volumes.run(conn, root, net, 1 if quick else 4,
                                                     3 if quick else 5)),
                ("listing", lambda root: [listing.run(root / "list", (10, 100) if quick else
                                                      (10, 100, 1000, 5000),
                                                      20 if quick else 200)]),
                ("history", lambda root: [task_history.run(root / "history",
                                                           100 if quick else 1000,
                                                           10_000 if quick else 1_000_000,
                                                           20 if quick else 200)]),
                ("hosts", lambda root: [
                    hosts.scheduling(root, (10, 100) if quick else (10, 100, 1000),
                                     10 if quick else 30),
                    hosts.listing(root, 100 if quick else 1000, 20 if quick else 200)]),
                ("scarcity", lambda root: [
                    scarcity.placement(root / "queue", 10 if quick else 100,
                                       100 if quick else 1000, 5 if quick else 30),
                    scarcity.booking(root / "ledger", 10 if quick else 100,
                                     1000 if quick else 10_000, 5 if quick else 20)]),
                ("servers", lambda root: servers.run(root, 200 if quick else 2000,
                                                     500 if quick else 2000)),
                ("upload", lambda root: [upload.run(root, (0.25,) if quick else (1, 4),
                                                    1 if quick else 3)]))
        for label, measure in measures:
            if label not in wanted:
                continue
            root = make_workspace(f"iaas-bench-{label}-")
            try:
                print(f"bench: {label}", flush=True)
                sections += stamped(measure(root))
            except HostUnavailable as exc:  # said, and the run fails: never a made-up figure
                print(f"bench: {label} cannot run here: {exc}", file=sys.stderr, flush=True)
                unable.append(label)
            except Exception:  # noqa: BLE001 - the other sections still run; what they measured is kept
                traceback.print_exc()
                print(f"bench: {label} failed (above); not measured", file=sys.stderr,
                      flush=True)
                unable.append(label)
            finally:
                shutil.rmtree(root, ignore_errors=True)
    finally:
        remove_network(conn, net)
        conn.close()
    if not sections:
        print(f"bench: nothing measured; {args.output} left as it was", file=sys.stderr)
        return 1
    write_report(args.output, machine, sections, time.monotonic() - started, quick,
                 partial=bool(args.only))
    print(args.output.read_text())
    for section in sections:  # the verdicts again, last, where a reader of the run looks
        for line in section.summary():
            print(f"bench: {line}")
    if unable:
        print(f"bench: NOT measured (could not run here, or failed): {', '.join(unable)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
