"""`make worker` (python -m src.worker without arguments): one worker process per host and one
for imports, a worker that dies started again, and a host added later gets its own."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from scripts.harness.broker import REPO, config_env
from scripts.harness.servers import host_xml
from src.config import Config
from tests.e2e.conftest import E2eAppFactory, served


def roles_of(supervisor: subprocess.Popen[bytes]) -> dict[str, int]:
    """The supervisor's live children: their role (e.g. '--hosts local') -> PID."""
    found = subprocess.run(["pgrep", "-P", str(supervisor.pid)], capture_output=True,
                           text=True, check=False).stdout.split()
    roles = {}
    for pid in found:
        try:
            words = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except FileNotFoundError:
            continue  # reaped since pgrep listed it
        if "src.worker" not in words:
            continue  # a dead child not reaped yet (its command line is gone)
        role = " ".join(words[words.index("src.worker") + 1:words.index("--concurrency")])
        roles[role] = int(pid)
    return roles


def wait_for(supervisor: subprocess.Popen[bytes], wanted: set[str], deadline_s: float = 30,
             gone: int | None = None) -> dict[str, int]:
    """The supervisor's children once their roles are wanted (and none is the PID gone: a
    child just SIGKILLed may still be dying, its command line still there)."""
    deadline = time.monotonic() + deadline_s
    while set(roles := roles_of(supervisor)) != wanted or gone in roles.values():
        assert time.monotonic() < deadline, roles
        time.sleep(0.2)
    return roles


def test_make_worker_runs_each_host_restarts_the_dead_and_adds_new_hosts(
        make_e2e_app: E2eAppFactory, e2e_config: Config, tmp_path: Path) -> None:
    app = make_e2e_app(e2e_config)
    env = {**os.environ, **config_env(e2e_config)}
    with (tmp_path / "supervisor.log").open("ab") as log:
        supervisor = subprocess.Popen([sys.executable, "-m", "src.worker", "--look-every", "1"],
                                      cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        first = wait_for(supervisor, {"--hosts local", "--images"})
        os.kill(first["--hosts local"], signal.SIGKILL)
        again = wait_for(supervisor, {"--hosts local", "--images"},
                         gone=first["--hosts local"])
        assert again["--hosts local"] != first["--hosts local"]
        host = tmp_path / "extra.xml"
        host.write_text(host_xml(e2e_config.network))  # libvirt's test driver
        with served(app) as client:
            reply = client.post("/v1/hosts", {"name": "later", "uri": f"test://{host}"})
            assert reply.status == 201, reply.body
        wait_for(supervisor, {"--hosts local", "--images", "--hosts later"})
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(timeout=60)
    assert roles_of(supervisor) == {}
