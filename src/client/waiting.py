"""Waiting for a task: long-polls that honour Retry-After, a live status line on a terminal and
plain lines elsewhere. Ctrl-C stops the waiting, never the task."""
from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, Protocol, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from src.client.http import Api
from src.client.output import size

FINISHED = ("succeeded", "failed")
TTY_POLL_S = 2  # short long-polls on a terminal, so the status line follows queued -> running
PLAIN_POLL_S = 30
T = TypeVar("T")


class StoppedWaiting(Exception):
    """Ctrl-C while waiting: the task goes on."""

    def __init__(self, task_id: str) -> None:
        super().__init__(task_id)
        self.task_id = task_id


class CtrlC:
    """Ctrl-C noted in a flag, and raised only while a blocking call waits (at most once).
    CPython drops an exception raised inside a finalizer (an HTTP response freed between two
    polls is one), so a KeyboardInterrupt alone can vanish; the flag, checked after every
    step, cannot. Raised anywhere else it could cut short the restore of the previous
    handler, and leave this one for good."""

    def __init__(self) -> None:
        self.pressed = False
        self._armed = False

    def handle(self, _signum: int, _frame: object) -> None:
        self.pressed = True
        if self._armed:
            self._armed = False
            raise KeyboardInterrupt

    def check(self) -> None:
        """Raises: KeyboardInterrupt if Ctrl-C came, even if its exception was lost."""
        if self.pressed:
            raise KeyboardInterrupt

    def during(self, call: Callable[[], T]) -> T:
        """call() (a long-poll, a sleep), cut short by Ctrl-C. Raises: KeyboardInterrupt."""
        self.check()
        self._armed = True
        try:
            return call()
        finally:
            self._armed = False
            self.check()


@contextmanager
def noted_ctrl_c() -> Iterator[CtrlC]:
    """SIGINT goes to a CtrlC for the duration (on the main thread; elsewhere only noted when
    it is raised there)."""
    ctrl_c = CtrlC()
    if threading.current_thread() is not threading.main_thread():
        yield ctrl_c
        return
    previous = signal.signal(signal.SIGINT, ctrl_c.handle)
    try:
        yield ctrl_c
    finally:
        signal.signal(signal.SIGINT, previous)


def without_ctrl_c(step: Callable[[], None]) -> None:
    """step() with SIGINT held back until it has ended (then it comes). No half-done start or
    stop of the status line, and threads it starts never take Ctrl-C: the kernel hands it to
    the main thread, whose blocking read it interrupts at once (taken by a drawing thread, it
    would wait until the long-poll answers)."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        step()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


class Display(Protocol):
    def start(self) -> None: ...

    def update(self, task: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def transfer_progress(console: Console) -> Progress:
    """A status line with a bar and bytes: uploads, and imports that report progress."""
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                    DownloadColumn(binary_units=True), TimeElapsedColumn(), console=console,
                    transient=False)


class LiveLine:
    """One line redrawn in place: what the task is doing, for how long, and bytes if any."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                  TimeElapsedColumn(), TextColumn("{task.fields[moved]}"),
                                  console=Console(file=sys.stderr), transient=False)
        self._id: TaskID = self._progress.add_task(f"{label}: queued", total=None, moved="")
        self._drawing = False

    def start(self) -> None:
        self._drawing = True  # first: a Ctrl-C inside start still finds a line to close
        without_ctrl_c(self._progress.start)  # Rich redraws from a thread of its own

    def update(self, task: dict[str, Any]) -> None:
        done, total = _bytes(task)
        moved = ""
        if done is not None:
            moved = f"{size(done)} of {size(total)}" if total else size(done)
        self._progress.update(self._id, description=f"{self._label}: {task['status']}",
                              moved=moved)

    def close(self) -> None:
        if self._drawing:
            without_ctrl_c(self._stop)  # a Ctrl-C mid-stop would leave its thread drawing

    def _stop(self) -> None:
        self._drawing = False
        self._progress.stop()


class PlainLines:
    """One line per change of status (or of progress), for logs and pipes."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._started = time.monotonic()
        self._last: tuple[Any, ...] | None = None

    def start(self) -> None:
        pass

    def update(self, task: dict[str, Any]) -> None:
        state = (task["status"], *_bytes(task))
        if state == self._last:
            return
        self._last = state
        done, total = state[1], state[2]
        moved = f" {done}/{total} bytes" if done is not None else ""
        elapsed = time.monotonic() - self._started
        print(f"{self._label}: {task['status']}{moved} ({elapsed:.0f}s)", file=sys.stderr,
              flush=True)

    def close(self) -> None:
        pass


def _bytes(task: dict[str, Any]) -> tuple[int | None, int | None]:
    progress = task.get("progress") or {}
    return progress.get("bytes_done"), progress.get("bytes_total")


def wait(api: Api, task: dict[str, Any], label: str, live: bool) -> dict[str, Any]:
    """The task once it has ended, following it on a status line (live) or in plain lines.

    Raises: StoppedWaiting (Ctrl-C), Refused, Unreachable.
    """
    display: Display = LiveLine(label) if live else PlainLines(label)
    try:
        with noted_ctrl_c() as ctrl_c:
            display.start()
            ended = _follow(api, task, display, TTY_POLL_S if live else PLAIN_POLL_S, ctrl_c)
            display.close()  # here, so that a Ctrl-C while it closes is still seen
        ctrl_c.check()  # a Ctrl-C noted up to the handler's restore
        return ended
    except KeyboardInterrupt:
        raise StoppedWaiting(task["id"]) from None
    finally:
        display.close()  # after an error or a Ctrl-C (a second close does nothing)


def _follow(api: Api, task: dict[str, Any], display: Display, poll: int,
            ctrl_c: CtrlC) -> dict[str, Any]:
    display.update(task)
    path = f"/v1/tasks/{task['id']}"
    while task["status"] not in FINISHED:
        answer = ctrl_c.during(lambda: api.send("GET", path, query={"wait": poll}))
        task = answer.json()
        display.update(task)
        retry = answer.headers.get("retry-after")
        if retry and task["status"] not in FINISHED:  # no wait slot was free: poll later
            ctrl_c.during(partial(time.sleep, float(retry)))
    return task
