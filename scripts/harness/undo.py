"""What a harness object made, as the steps that remove it: run last first, all of them, once."""
from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Undo:
    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], None]]] = []
        self.done = False

    def append(self, step: tuple[str, Callable[[], None]]) -> None:
        """(what, how): how removes what, once what exists (or might)."""
        self._steps.append(step)

    def run(self, owner: str) -> None:
        """Try every step, last added first; a second run does nothing.

        Raises: RuntimeError naming owner and the steps that failed.
        """
        if self.done:
            return
        self.done = True
        failures = []
        for what, step in reversed(self._steps):
            try:
                step()
            except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
                failures.append(f"{what}: {exc}")
        if failures:
            raise RuntimeError(f"could not remove all of {owner}: {failures}")

    @contextmanager
    def on_failure(self, owner: str) -> Iterator[None]:
        """Run the steps if the block raises: a start that fails half-way leaves nothing (what
        could not be removed is noted on the error)."""
        try:
            yield
        except BaseException as exc:
            try:
                self.run(owner)
            except RuntimeError as cleanup:
                exc.add_note(str(cleanup))
            raise
