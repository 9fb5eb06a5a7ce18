"""`iaas` on a terminal (a pseudo-terminal): it waits by default with a live status line, Ctrl-C
stops the waiting and never the task, and a server that declines to hold a long-poll is polled
no faster than its Retry-After."""
from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from src.app import App
from src.client.http import Api
from src.client.waiting import StoppedWaiting, wait
from src.config import Config
from tests.cli.conftest import IAAS, Iaas, cli_env
from tests.conftest import AppFactory, make_qcow2
from tests.integration.test_vm_failures import GatedQemuImg
from tests.support import LiveServer, fetch

VM = ("--image", "base", "--cpu", "1", "--ram", "128")
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def plain(text: str) -> str:
    """What a person sees of text, without colour and cursor codes."""
    return ESCAPES.sub("", text)


class Terminal:
    """`iaas` with a pseudo-terminal as stdin, stdout and stderr, read as it writes."""

    def __init__(self, cli: Iaas, *args: str) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self._master = master
        self.proc = subprocess.Popen([str(IAAS), *args], cwd=cli.cwd, stdin=slave,
                                     stdout=slave, stderr=slave, start_new_session=True,
                                     env=cli_env(cli.url, cli.token, TERM="xterm"))
        os.close(slave)
        self.output = ""

    def read_until(self, pattern: str, timeout: float = 30) -> str:
        """Everything read so far once pattern shows up. Raises: AssertionError at timeout."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.output):
            assert time.monotonic() < deadline, f"no {pattern!r} in {self.output!r}"
            ready, _, _ = select.select([self._master], [], [], 0.2)
            if ready:
                try:
                    self.output += os.read(self._master, 65536).decode("utf-8", "replace")
                except OSError:  # the child closed the terminal
                    assert re.search(pattern, self.output), self.output
        return self.output

    def finish(self, timeout: float = 30) -> int:
        code = self.proc.wait(timeout)
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:
                break
            if not chunk:
                break
            self.output += chunk.decode("utf-8", "replace")
        os.close(self._master)
        return code


@pytest.fixture
def gated() -> Iterator[GatedQemuImg]:
    gate = GatedQemuImg()
    yield gate
    gate.gate.set()  # never leave a build held


@pytest.fixture
def slow_iaas(make_app: AppFactory, config: Config, gated: GatedQemuImg,
              tmp_path: Path) -> Iterator[Iaas]:
    """The CLI against a server whose builds wait for the test to open a gate."""
    app = make_app(config, run=gated)
    server = LiveServer(app)
    make_qcow2(config.images_dir / "base.qcow2")
    work = tmp_path / "cwd"
    work.mkdir()
    cli = Iaas(server.url, server.token, work)
    cli.api("POST", "/v1/images", {"name": "base", "file": "base.qcow2", "format": "qcow2"})
    yield cli
    server.stop()


def test_on_a_terminal_create_waits_with_a_live_status_line(iaas: Iaas) -> None:
    term = Terminal(iaas, "vm", "create", "tty1", *VM)  # no --wait: a terminal waits anyway
    assert term.finish() == 0, term.output
    seen = plain(term.output)
    assert re.search(r"create tty1: (queued|running|succeeded) +0:00:\d\d", seen), seen
    assert "\x1b[2K" in term.output  # the line is redrawn in place
    assert re.search(r"status +running", seen), seen  # then the final VM
    assert iaas.api("GET", "/v1/vms/tty1").body["status"] == "running"


def test_ctrl_c_stops_waiting_never_the_task(slow_iaas: Iaas, gated: GatedQemuImg) -> None:
    term = Terminal(slow_iaas, "vm", "create", "held", *VM)
    term.read_until(r"create held: running")
    assert gated.entered.acquire(timeout=10)
    term.proc.send_signal(signal.SIGINT)
    assert term.finish() == 130, term.output
    task_id = re.search(r"Stopped waiting; task (\S+) goes on", term.output)
    assert task_id, term.output
    assert f"iaas task wait {task_id[1]}" in term.output and "Traceback" not in term.output
    assert slow_iaas.api("GET", f"/v1/tasks/{task_id[1]}").body["status"] == "running"
    gated.gate.set()
    resumed = slow_iaas("task", "wait", task_id[1])
    assert resumed.returncode == 0 and "succeeded" in resumed.stdout, resumed.stderr
    assert slow_iaas.api("GET", "/v1/vms/held").body["status"] == "running"


RICH = os.sep + "rich" + os.sep


class SigintAt:
    """Sends SIGINT to this process at the point-th line the main thread runs (every frame,
    finalizers included; Rich's own lines are not counted, there are too many to visit each),
    or counts the lines when point is None."""

    def __init__(self, point: int | None) -> None:
        self.point = point
        self.lines = 0

    def __call__(self, frame: FrameType, event: str, _arg: Any) -> SigintAt:
        if (event == "line" and threading.current_thread() is threading.main_thread()
                and RICH not in frame.f_code.co_filename):
            self.lines += 1
            if self.lines == self.point:
                signal.raise_signal(signal.SIGINT)
        return self


def _outcome(api: Api, task_id: str, point: int | None, live: bool) -> tuple[str, int]:
    """How wait() ended with SIGINT at that point: stopped, late (the KeyboardInterrupt came
    after wait() had stopped listening), returned (nothing came: the Ctrl-C was lost), or
    unsent (this run ended before that line: the last lines vary a little from run to run)."""
    sigint = SigintAt(point)
    # The CLI's own process starts with Python's handler; this one has run other tests.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        try:
            sys.settrace(sigint)
            wait(api, {"id": task_id, "action": "create", "status": "running"}, "sweep", live)
        finally:
            sys.settrace(None)
        _run_pending_handlers()
    except StoppedWaiting:
        outcome = "stopped"
    except KeyboardInterrupt:
        outcome = "late"
    else:
        outcome = "returned" if point is None or sigint.lines >= point else "unsent"
    restored = signal.getsignal(signal.SIGINT)
    assert restored is signal.default_int_handler, f"SIGINT at line {point} left {restored}"
    return outcome, sigint.lines


def _still_drawing(deadline_s: float) -> list[threading.Thread]:
    """Rich's status-line threads alive after deadline_s. A stopped one ends at its next
    wake-up (a busy machine may delay that); one never stopped redraws for ever."""
    deadline = time.monotonic() + deadline_s
    threads = [thread for thread in threading.enumerate()
               if type(thread).__name__ == "_RefreshThread"]
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    return [thread for thread in threads if thread.is_alive()]


def _run_pending_handlers() -> None:
    """A few bytecodes, where CPython runs a signal handler that is due."""
    for _ in range(3):
        time.sleep(0)


@pytest.mark.parametrize("status_line", [False, True], ids=["plain", "status-line"])
def test_ctrl_c_at_every_point_of_a_poll_stops_the_waiting(iaas: Iaas, status_line: bool) -> None:
    """The race of the flaky Ctrl-C test, made on purpose: one wait() of one real long-poll
    (the task has ended, so the server answers at once), with SIGINT delivered at each line
    it runs in turn. A KeyboardInterrupt raised inside a finalizer (the HTTP response freed
    after its read) used to vanish: wait() went on as if no Ctrl-C had come."""
    created = iaas.api("POST", "/v1/vms", {"name": "swept", "image_name": "base", "cpu": 1,
                                           "ram": 128})
    task_id = created.body["task"]["id"]
    ended = iaas.api("GET", f"/v1/tasks/{task_id}?wait=60").body
    assert ended["status"] == "succeeded", ended
    api = Api(iaas.url, iaas.token)
    _outcome(api, task_id, None, status_line)  # imports and first-time set-up, uncounted
    undisturbed, lines = _outcome(api, task_id, None, status_line)
    assert undisturbed == "returned" and lines > 100, (undisturbed, lines)
    outcomes = {point: _outcome(api, task_id, point, status_line)[0]
                for point in range(1, lines + 1)}
    lost = [point for point, outcome in outcomes.items() if outcome == "returned"]
    assert lost == [], f"SIGINT at lines {lost} of {lines} of wait() was lost"
    drawing = _still_drawing(deadline_s=30)
    assert drawing == [], f"{len(drawing)} status lines were left drawing"
    # Most lines lie inside the waiting (the rest build the status line, before wait()
    # listens for Ctrl-C: there the CLI says `interrupted`, exit 130 too).
    assert list(outcomes.values()).count("stopped") > lines // 2, outcomes


def _task_polls(url: str) -> float:
    metrics = fetch(url, "GET", "/metrics").body
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("iaas_http_requests_total{")
               and 'route="/v1/tasks/{task}"' in line)


def test_a_long_poll_answered_at_once_is_retried_after_retry_after(
        make_app: AppFactory, config: Config, gated: GatedQemuImg, tmp_path: Path) -> None:
    app: App = make_app(replace(config, max_waits_per_token=0), run=gated)  # no waiting slots
    server = LiveServer(app)
    try:
        make_qcow2(config.images_dir / "base.qcow2")
        cli = Iaas(server.url, server.token, tmp_path)
        cli.api("POST", "/v1/images", {"name": "base", "file": "base.qcow2", "format": "qcow2"})
        waiting = subprocess.Popen([str(IAAS), "vm", "create", "polled", *VM, "--wait"],
                                   cwd=tmp_path, env=cli_env(cli.url, cli.token),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert gated.entered.acquire(timeout=10)
        time.sleep(3)
        gated.gate.set()
        _out, err = waiting.communicate(timeout=30)
        assert waiting.returncode == 0, err
        polls = _task_polls(server.url)
        assert 2 <= polls <= 6, f"{polls} polls in about 3 s: Retry-After: 1 was not honoured"
    finally:
        gated.gate.set()
        server.stop()
