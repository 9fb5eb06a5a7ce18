"""qemu-img: inspect images and create copy-on-write overlays, always via an argument list."""
from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 120


class CommandFailed(RuntimeError):
    """A command exited non-zero or could not run; carries its stderr."""

    def __init__(self, argv: Sequence[str], detail: str) -> None:
        self.argv = list(argv)
        self.detail = detail.strip()
        super().__init__(f"{argv[0]} failed: {self.detail}")


# The seam tests use to inject failures: anything that runs argv and returns stdout.
Runner = Callable[[Sequence[str]], str]


def run_command(argv: Sequence[str]) -> str:
    """Run argv without a shell and return its stdout.

    Raises: CommandFailed on a non-zero exit, a timeout or a missing binary.
    """
    log.debug("run: %s", " ".join(argv))
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CommandFailed(argv, str(exc)) from exc
    if done.returncode != 0:
        raise CommandFailed(argv, done.stderr or f"exit status {done.returncode}")
    return done.stdout


class QemuImg:
    """The qemu-img operations the platform needs."""

    def __init__(self, run: Runner = run_command) -> None:
        self._run = run

    def info(self, path: Path, fmt: str | None) -> dict[str, Any]:
        """Image facts as qemu-img reports them; fmt=None lets qemu-img probe the format.

        Raises: CommandFailed when qemu-img cannot read the file as that format.
        """
        argv = ["qemu-img", "info", "--output=json", "-U"]
        if fmt is not None:
            argv += ["-f", fmt]
        info: dict[str, Any] = json.loads(self._run([*argv, "--", str(path)]))
        return info

    def create_overlay(self, base: Path, base_format: str, overlay: Path,
                       size_bytes: int | None) -> None:
        """Create a qcow2 overlay backed by base; never overwrites an existing file.

        Raises: FileExistsError if overlay exists; CommandFailed if qemu-img fails.
        """
        if not base.is_absolute():
            raise ValueError(f"backing file must be absolute: {base}")
        if overlay.exists():
            raise FileExistsError(str(overlay))
        argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", base_format,
                str(overlay)]
        if size_bytes is not None:
            argv.append(str(size_bytes))
        self._run(argv)

    def create(self, path: Path, size_bytes: int) -> None:
        """Create an empty qcow2 of size_bytes with no backing file; never overwrites.

        Raises: FileExistsError if path exists; CommandFailed if qemu-img fails.
        """
        if path.exists():
            raise FileExistsError(str(path))
        self._run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), str(size_bytes)])

    def convert(self, source: Path, source_format: str, dest: Path, dest_format: str) -> None:
        """Write source's content (its backing chain flattened) to a new file dest.

        Raises: FileExistsError if dest exists; CommandFailed if qemu-img fails.
        """
        if dest.exists():
            raise FileExistsError(str(dest))
        self._run(["qemu-img", "convert", "-q", "-f", source_format, "-O", dest_format,
                   str(source), str(dest)])

    def rebase_unsafe(self, image: Path, backing: str, backing_format: str) -> None:
        """Point the qcow2 image at another backing file without reading either (the layer is
        on its way to a host where backing is the same content under another path).

        Raises: CommandFailed.
        """
        if not backing.startswith("/"):
            raise ValueError(f"backing file must be absolute: {backing}")
        self._run(["qemu-img", "rebase", "-q", "-u", "-f", "qcow2", "-b", backing, "-F",
                   backing_format, str(image)])
