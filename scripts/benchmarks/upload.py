"""(upload) Image upload over HTTP through each server against `cp` of the same file."""
from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path

from scripts.harness.uploads import ChildServer, child_on_test_driver, put_file

from .common import Section

SERVERS = ("wsgiref", "waitress")
MIB = 1024 * 1024


def _source(path: Path, gib: float) -> None:
    """A qcow2 with every byte allocated, so both ways really move its size."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=full",
                    str(path), f"{int(gib * 1024)}M"], check=True)


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def _copy(source: Path, target: Path) -> float:
    """Seconds of `cp --sparse=never` and `sync` (the upload's file is synced too)."""
    seconds = _timed(["sh", "-c", f"cp --sparse=never '{source}' '{target}' && sync"])
    target.unlink()
    return seconds


def _server(root: Path, kind: str) -> tuple[ChildServer, str]:
    root.mkdir(parents=True)
    return child_on_test_driver(root, kind, "iaas-bench")


def _upload(server: ChildServer, token: str, source: Path, name: str) -> float:
    """Seconds from the PUT to the active image (streamed, hashed, synced, inspected)."""
    image = server.call(token, "POST", "/v1/images", {"name": name, "format": "qcow2"}).body
    started = time.perf_counter()
    reply = put_file(server.url, token, image["id"], source, timeout_s=3600)
    elapsed = time.perf_counter() - started
    if reply.status != 200 or reply.body["status"] != "active":
        raise RuntimeError(f"upload failed: {reply.status} {reply.body}")
    server.call(token, "DELETE", f"/v1/images/{image['id']}")  # its file goes too
    return elapsed


def _rate(gib: float, seconds: float) -> str:
    return f"{gib * 1024 / seconds:.0f} MiB/s ({seconds:.2f} s)"


def run(root: Path, sizes_gib: tuple[float, ...], runs: int) -> Section:
    section = Section(
        title="Image upload over HTTP against cp",
        method=(f"Fully allocated qcow2 files of {', '.join(f'{g:g}' for g in sizes_gib)} GiB. "
                "Upload: `POST /v1/images` then `PUT /v1/images/{id}/file` with its "
                "Content-Length from a client process to `python -m src.serve` in a child "
                "process on 127.0.0.1, timed from the PUT to the answer (the image active: "
                "streamed to disk, SHA-256, fsync, `qemu-img info`). `cp`: `cp --sparse=never` "
                "of the same file then `sync`. `sha256sum` of the file for reference. Median "
                f"of {runs} runs each; the server's peak resident memory (VmHWM) after them."),
        header=["file", "cp + sync", "sha256sum", "upload, wsgiref", "upload, waitress",
                "time / cp (wsgiref, waitress)", "peak RSS wsgiref / waitress"])
    servers = {kind: _server(root / kind, kind) for kind in SERVERS}
    try:
        for gib in sizes_gib:
            source = root / f"source-{gib:g}g.qcow2"
            _source(source, gib)
            copy = statistics.median(_copy(source, root / "copy.qcow2") for _ in range(runs))
            digest = statistics.median(_timed(["sha256sum", str(source)]) for _ in range(runs))
            uploads = {kind: statistics.median(
                _upload(server, token, source, f"up-{gib:g}-{kind}-{i}") for i in range(runs))
                for kind, (server, token) in servers.items()}
            peaks = "/".join(f"{servers[kind][0].memory_kib()['VmHWM'] // 1024} MiB"
                             for kind in SERVERS)
            section.rows.append([f"{gib:g} GiB", _rate(gib, copy), _rate(gib, digest),
                                 _rate(gib, uploads["wsgiref"]), _rate(gib, uploads["waitress"]),
                                 (f"{uploads['wsgiref'] / copy:.1f}x, "
                                  f"{uploads['waitress'] / copy:.1f}x"), peaks])
            source.unlink()
    finally:
        for server, _ in servers.values():
            server.stop()
    section.notes.append("An upload reads the file once, sends it over loopback, hashes it and "
                         "writes it once (waitress writes it twice: its own spool file, then "
                         "ours); `cp` only reads and writes. The server's memory stays flat "
                         "whatever the size.")
    return section
