"""qemu-img: overlays are made with an argument list, an absolute backing file and -F, never over a file."""
from collections.abc import Sequence
from pathlib import Path

import pytest

from src.hypervisor.disks import CommandFailed, QemuImg, run_command


class Recorder:
    """Runs commands for real and remembers their argv."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> str:
        self.calls.append(list(argv))
        return run_command(argv)


def test_overlay_backs_onto_absolute_base_with_format(tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    run_command(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"])
    recorder = Recorder()
    qemu_img = QemuImg(recorder)
    overlay = tmp_path / "overlay.qcow2"
    qemu_img.create_overlay(base, "qcow2", overlay, 2 * 1024 ** 3)
    assert recorder.calls[0][:2] == ["qemu-img", "create"]
    assert ["-b", str(base), "-F", "qcow2"] == recorder.calls[0][5:9]
    info = qemu_img.info(overlay, "qcow2")
    assert info["backing-filename"] == str(base)
    assert info["backing-filename-format"] == "qcow2"
    assert info["virtual-size"] == 2 * 1024 ** 3


def test_never_overwrites_and_never_takes_relative_base(tmp_path: Path) -> None:
    existing = tmp_path / "taken.qcow2"
    existing.write_bytes(b"keep me")
    qemu_img = QemuImg()
    with pytest.raises(FileExistsError):
        qemu_img.create_overlay(tmp_path / "base", "qcow2", existing, None)
    assert existing.read_bytes() == b"keep me"
    with pytest.raises(ValueError):
        qemu_img.create_overlay(Path("base.qcow2"), "qcow2", tmp_path / "new.qcow2", None)


def test_failure_carries_stderr(tmp_path: Path) -> None:
    with pytest.raises(CommandFailed, match="qemu-img failed"):
        QemuImg().info(tmp_path / "missing.qcow2", "qcow2")
