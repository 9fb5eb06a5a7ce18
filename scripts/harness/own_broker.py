"""A RabbitMQ of a test's own, to kill and restart as a crash would.

Its node runs in a netns, mount and UTS namespace of its own (scripts/harness/netns.py), with
its own /etc, /var/lib and /var/log of RabbitMQ, epmd and cookie; the AMQP port listens on the
netns's veth address. The machine's broker, which other test runs use meanwhile, is never
touched. Hosts whose starter died are removed by remote_layout.sweep_orphans, as test hosts are.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from scripts.harness import netns
from scripts.harness.broker import CONSUMER_TIMEOUT_MS, Vhost, new_vhost
from scripts.harness.remote_layout import Layout, make_netns, new_layout, sweep_orphans
from scripts.harness.undo import Undo

START_TIMEOUT_S = 120.0
PRIVATE_DIRS = {"etc": "/etc/rabbitmq", "lib": "/var/lib/rabbitmq", "log": "/var/log/rabbitmq"}
# epmd and the Erlang distribution stay on the netns's own loopback (rabbit@localhost resolves
# there); AMQP listens on the veth address, the only one we reach from outside.
ENV_CONF = """NODENAME=rabbit@localhost
NODE_IP_ADDRESS={address}
ERL_EPMD_ADDRESS=127.0.0.1
SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {{127,0,0,1}}"
"""


class BrokerError(netns.NamespaceError):
    """The broker could not be started; the message says which step and where its logs are."""


@dataclass
class OwnBroker:
    """A running RabbitMQ node of our own; stop() removes all it made and may be called twice."""

    layout: Layout
    holder: subprocess.Popen[bytes] | None = None
    server: subprocess.Popen[bytes] | None = None
    undo: Undo = field(default_factory=Undo)

    @property
    def address(self) -> str:
        return self.layout.address

    def ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """rabbitmqctl against this node (in its namespaces, with its cookie)."""
        assert self.holder is not None
        return subprocess.run(["nsenter", f"--target={self.holder.pid}", "--mount", "--net",
                               "--uts", "--", "rabbitmqctl", "-q", *args],
                              capture_output=True, text=True, check=False, timeout=timeout)

    def make_vhost(self, prefix: str = "iaas-test") -> Vhost:
        """A fresh vhost and a user allowed only there, on this node."""
        vhost = new_vhost(prefix, self.address)
        for args in (("add_vhost", vhost.name), ("add_user", vhost.user, vhost.password),
                     ("set_permissions", "-p", vhost.name, vhost.user, ".*", ".*", ".*")):
            done = self.ctl(*args)
            if done.returncode != 0:
                raise BrokerError(f"rabbitmqctl {args[0]} failed: {done.stderr.strip()}")
        return vhost

    def beam_pids(self) -> list[int]:
        """The node's Erlang VM (beam.smp); epmd lives on apart from it."""
        return [pid for pid in netns.pids_in_netns(self.layout.netns)
                if _comm(pid) == "beam.smp"]

    def kill(self) -> None:
        """SIGKILL the node, as a crash would."""
        for pid in self.beam_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        netns.wait_for(lambda: not self.beam_pids(), 30, "the broker's node survived SIGKILL")
        if self.server is not None:
            self.server.wait(timeout=30)  # its wrapper (su, sh) ends with the node

    def start(self) -> None:
        """Start the node (again) and wait until it is up. Raises: BrokerError."""
        if self.beam_pids():
            raise BrokerError(f"the broker of {self.layout.netns} still runs; kill() first")
        assert self.holder is not None
        self.server = netns.spawn_in(self.holder.pid, ["rabbitmq-server"],
                                     self.layout.root / "rabbitmq-server.log")
        deadline = time.monotonic() + START_TIMEOUT_S
        # The node registers with epmd a moment after it starts; await_startup fails at once
        # on a node epmd does not know yet, so it is asked again until the deadline.
        while not self._up():
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise BrokerError(f"RabbitMQ in {self.layout.netns} did not start within "
                                  f"{START_TIMEOUT_S:.0f} s; see {self.layout.root}/log")
            time.sleep(0.5)

    def _up(self) -> bool:
        try:
            return self.ctl("await_startup", "--timeout", "10", timeout=30).returncode == 0
        except subprocess.TimeoutExpired:  # a CLI slow to start on a loaded machine
            return False

    def stop(self) -> None:
        """Kill every process in the netns, delete it, its veth and the temp dir; idempotent.

        Raises: RuntimeError listing the steps that failed (after trying all).
        """
        self.undo.run(f"broker {self.layout.netns}")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def start_own_broker(name_prefix: str = "iaas-mq") -> OwnBroker:
    """Start a RabbitMQ node of our own and return it once it is up; use it with `with`.

    Whatever step fails, all that was made is removed before the error is raised.
    Raises: BrokerError (a HostUnavailable) saying what failed.
    """
    sweep_orphans()
    broker = OwnBroker(layout=new_layout(name_prefix))
    lay = broker.layout
    broker.undo.append(("temp dir", lambda: shutil.rmtree(lay.root, ignore_errors=True)))
    with broker.undo.on_failure(f"broker {lay.netns}"):
        make_netns(lay, broker.undo)
        _write_config(lay)
        broker.undo.append(("processes", lambda: netns.kill_netns_processes(lay.netns)))
        broker.holder = netns.start_holder(lay.netns, lay.root / "holder.log")
        for sub, mount_point in PRIVATE_DIRS.items():
            if not Path(mount_point).is_dir():
                raise BrokerError(f"{mount_point} is missing: install rabbitmq-server "
                                  "(scripts/broker.sh start)")
            netns.bind_mount(broker.holder.pid, lay.root / sub, mount_point)
        broker.start()
    return broker


def _write_config(lay: Layout) -> None:
    """Dirs of the node's own, owned by rabbitmq as the real ones are."""
    for sub in PRIVATE_DIRS:
        (lay.root / sub).mkdir()
    (lay.root / "etc" / "rabbitmq-env.conf").write_text(ENV_CONF.format(address=lay.address))
    (lay.root / "etc" / "rabbitmq.conf").write_text(
        f"consumer_timeout = {CONSUMER_TIMEOUT_MS}\n")
    for sub in PRIVATE_DIRS:
        shutil.chown(lay.root / sub, "rabbitmq", "rabbitmq")
        for path in (lay.root / sub).iterdir():
            shutil.chown(path, "rabbitmq", "rabbitmq")
