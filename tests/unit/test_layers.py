"""The layer contracts in .importlinter hold, and a wrong import makes `make lint` fail."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--config", str(root / ".importlinter"),
                           "--no-cache"], cwd=root, capture_output=True, text=True, check=False,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def lint_with(tmp_path: Path, module: str, line: str) -> subprocess.CompletedProcess[str]:
    """lint-imports on a copy of the tree in which module (a path under the root) has line
    added at its end."""
    for package in ("src", "scripts", "tests"):
        shutil.copytree(REPO / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.qcow2"))
    shutil.copy(REPO / ".importlinter", tmp_path)
    planted = tmp_path / module
    planted.write_text(planted.read_text() + f"\n{line}  # noqa\n")
    return _lint(tmp_path)


def test_the_tree_keeps_every_contract() -> None:
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_api_module_importing_the_database_breaks_the_build(tmp_path: Path) -> None:
    result = lint_with(tmp_path, "src/api/handlers.py", "from src.database import vms")
    assert result.returncode == 1
    assert "src.api.handlers -> src.database.vms" in result.stdout
