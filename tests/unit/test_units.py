"""The systemd units start commands that exist, with options those commands accept."""
from __future__ import annotations

import configparser
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = sorted((REPO / "configs").glob("*.service"))


def test_there_is_a_unit_for_the_api_the_hosts_workers_and_the_imports_worker() -> None:
    assert {unit.name for unit in UNITS} >= {"iaas.service", "iaas-worker@.service",
                                              "iaas-worker-images.service"}


@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
def test_the_units_command_runs(unit: Path) -> None:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read(unit)
    command = shlex.split(parser["Service"]["ExecStart"].replace("%i", "local"))
    assert command[0] == "/opt/iaas/.venv/bin/python" and command[1] == "-m"
    assert parser["Service"]["WorkingDirectory"] == "/opt/iaas"
    run = subprocess.run([sys.executable, "-m", command[2], "--help"], check=False, cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    options = [word for word in command[3:] if word.startswith("--")]
    assert options and all(option in run.stdout for option in options), run.stdout
