"""The CLI's own small decisions: which console lines are new, ages, cells, and that it cannot
reach past HTTP (the import contract fails the build)."""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from src.client.output import age, cell_text, size
from src.client.vms import new_from
from tests.unit.test_layers import REPO, lint_with


def test_only_lines_after_what_was_printed_are_new() -> None:
    assert new_from([], ["a", "b"]) == 0
    assert new_from(["a", "b"], ["a", "b", "c"]) == 2  # the log grew
    assert new_from(["a", "b", "c"], ["b", "c", "d", "e"]) == 2  # the tail window slid
    assert new_from(["a", "b"], ["a", "b"]) == 2  # nothing new
    assert new_from(["x", "y"], ["p", "q"]) == 0  # rotated away: print it all
    assert new_from(["a", "a"], ["a", "a", "a"]) == 2


def test_ages_cells_and_sizes_read_as_people_say_them() -> None:
    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    assert age("2026-12-01T11:59:18Z", now) == "42s"
    assert age("2026-12-01T09:00:00Z", now) == "3h"
    assert age("2026-11-28T12:00:00Z", now) == "3d"
    assert age(None, now) == "-"
    assert cell_text(None) == "-" and cell_text(True) == "yes" and cell_text([]) == "-"
    assert cell_text(["10.0.0.2", "fe80::1"]) == "10.0.0.2, fe80::1"
    assert size(512) == "512 B" and size(64 * 1024 * 1024) == "64.0 MiB"


def test_a_client_module_importing_the_services_breaks_the_build(tmp_path: Path) -> None:
    result = lint_with(tmp_path, "src/client/output.py", "from src.vocabulary import ROLES")
    assert result.returncode == 1
    assert "src.client.output -> src.vocabulary" in result.stdout


def test_set_up_installs_iaas_as_a_console_script_of_the_client_package_only() -> None:
    import sys
    import tomllib
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["scripts"] == {"iaas": "src.client.main:main"}
    assert project["tool"]["setuptools"]["packages"] == ["src", "src.client"]
    assert project["project"]["dependencies"] == []  # requirements.txt holds them
    assert (Path(sys.executable).parent / "iaas").exists(), "run make setup: no .venv/bin/iaas"
    setup = (REPO / "scripts" / "setup.sh").read_text()
    # editable, from the checkout the venv lives in (a checkout linking to it keeps it)
    assert "pip\" install -q --disable-pip-version-check --no-deps -e \"$home\"" in setup
    assert 'home=$(cd -P "$VENV/.." && pwd -P)' in setup
