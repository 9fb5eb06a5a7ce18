"""The broker tier's harness: a RabbitMQ vhost and user of our own, Celery workers in
subprocesses on the same settings as an app (a broker to kill and restart: own_broker.py)."""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.config import SETTINGS, Config

REPO = Path(__file__).resolve().parents[2]
CONSUMER_TIMEOUT_MS = 2 * 3600 * 1000  # as scripts/broker.sh sets: above the longest task


@dataclass(frozen=True)
class Vhost:
    name: str
    user: str
    password: str
    host: str = "127.0.0.1"  # the machine's broker; own_broker.py's listen elsewhere

    @property
    def url(self) -> str:
        return f"amqp://{self.user}:{self.password}@{self.host}:5672/{self.name}"


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


def new_vhost(prefix: str, host: str = "127.0.0.1") -> Vhost:
    """Unique names and a random password (nothing made yet): two runs never share one."""
    tag = secrets.token_hex(4)
    return Vhost(f"{prefix}-{tag}", f"{prefix}-{tag}", secrets.token_hex(16), host)


def make_vhost(prefix: str = "iaas-test") -> Vhost:
    """A fresh vhost and a user allowed only there (random password), on the machine's broker."""
    vhost = new_vhost(prefix)
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
