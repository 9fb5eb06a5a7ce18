"""What every command shares: the API, the printer, and running a task to its end."""
from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from src.client.http import Answer, Api
from src.client.output import Printer
from src.client.waiting import wait

WAIT_HELP = "Follow the task to its end (default on a terminal)."


class TaskFailed(Exception):
    """The task ended in failure (exit 1); its error has been printed."""


@dataclass
class Session:
    api: Api
    out: Printer

    def get(self, path: str, **query: Any) -> Answer:
        return self.api.send("GET", path, query=query)

    def show(self, answer: Answer, render: Callable[[Any], None]) -> None:
        self.out.answer(answer, render)

    def waits(self, wanted: bool | None) -> bool:
        """--wait/--no-wait as given, else wait when a person watches (stdout is a terminal)."""
        return sys.stdout.isatty() if wanted is None else wanted

    def run_task(self, task: dict[str, Any], label: str, wanted: bool | None,
                 final: Callable[[dict[str, Any]], Answer | None],
                 render: Callable[[Any], None], started: Answer) -> None:
        """Follow task (when waiting) and print the final object; else print what started it.

        Raises: TaskFailed, StoppedWaiting, Refused, Unreachable.
        """
        if not self.waits(wanted):
            self.show(started, render)
            self.out.note(f"task {task['id']} {task['status']}; wait for it with: "
                          f"iaas task wait {task['id']}")
            return
        ended = wait(self.api, task, label, live=sys.stderr.isatty())
        answer = final(ended) if ended["status"] == "succeeded" else None
        if answer is not None:
            self.show(answer, render)
        if ended["status"] != "succeeded":
            error = ended.get("error") or {}
            if self.out.json:  # the failed task, as the API tells it
                self.out.raw(self.get(f"/v1/tasks/{ended['id']}"))
            self.out.note(f"error: task {ended['id']} ({ended['action']}) failed: "
                          f"{error.get('code', 'unknown')}: {error.get('message', '')}")
            raise TaskFailed(ended["id"])


def session(ctx: click.Context) -> Session:
    obj = ctx.find_object(Session)
    if obj is None:  # pragma: no cover - the group always sets it
        raise click.UsageError("no session")
    return obj
