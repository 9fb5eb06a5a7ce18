"""The broker tier's harness: a RabbitMQ vhost and user of our own, Celery workers in
subprocesses on the same settings as an app, and RabbitMQ's own process (to kill and restart)."""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.config import SETTINGS, Config

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Vhost:
    name: str
    user: str
    password: str

    @property
    def url(self) -> str:
        return f"amqp://{self.user}:{self.password}@127.0.0.1:5672/{self.name}"


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


def make_vhost(prefix: str = "iaas-test") -> Vhost:
    """A fresh vhost and a user allowed only there (random password)."""
    tag = secrets.token_hex(4)
    vhost = Vhost(f"{prefix}-{tag}", f"{prefix}-{tag}", secrets.token_hex(16))
    _rabbitmqctl("add_vhost", vhost.name)
    _rabbitmqctl("add_user", vhost.user, vhost.password)
    _rabbitmqctl("set_permissions", "-p", vhost.name, vhost.user, ".*", ".*", ".*")
    return vhost


def remove_vhost(vhost: Vhost) -> None:
    """Delete the vhost (its queues and messages) and its user; gone already is fine."""
    for args in (("delete_vhost", vhost.name), ("delete_user", vhost.user)):
        subprocess.run(["rabbitmqctl", "-q", *args], check=False, capture_output=True,
                       timeout=120)


def config_env(config: Config) -> dict[str, str]:
    """The IAAS_* environment that makes a process load exactly this config."""
    env: dict[str, str] = {}
    for setting in SETTINGS:
        value: Any = getattr(config, setting.field)
        if setting.index is not None:
            value = value[setting.index]
        if isinstance(value, bool):
            env[setting.env] = "on" if value else "off"
        elif value is None:
            env[setting.env] = "unlimited"
        else:
            env[setting.env] = str(value)
    return env


def start_worker(config: Config, hosts: list[str], log: Path, concurrency: int = 2,
                 images: bool = False) -> subprocess.Popen[bytes]:
    """One worker process on config's settings for the hosts' queues (and the imports' with
    images); its output goes to log."""
    env = {**os.environ, **config_env(config)}
    command = [sys.executable, "-m", "src.worker", "--together", "--hosts", ",".join(hosts),
               "--concurrency", str(concurrency), *(["--images"] if images else [])]
    with log.open("ab") as out:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def stop_worker(worker: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    """SIGTERM (Celery's warm shutdown), then SIGKILL if it will not go."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=10)


def rabbitmq_pid() -> int:
    """The running broker's process (beam.smp). Raises: RuntimeError when none runs."""
    found = subprocess.run(["pgrep", "-f", "beam.smp.*rabbit"], capture_output=True, text=True,
                           check=False).stdout.split()
    if not found:
        raise RuntimeError("RabbitMQ is not running (scripts/broker.sh start)")
    return int(found[0])


def kill_rabbitmq() -> None:
    """SIGKILL the broker, as a crash would."""
    pid = rabbitmq_pid()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def start_rabbitmq() -> None:
    """Start the broker again and wait until it answers."""
    subprocess.run([str(REPO / "scripts" / "broker.sh"), "start"], check=True,
                   capture_output=True, timeout=180)
