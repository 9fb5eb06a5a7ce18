"""What the client prints: tables for people, or exactly the API's JSON (-o json).

Every value in a table is plain text to Rich (never markup: `[/bold]` in a description prints as
it is) with its control characters escaped (an ESC never reaches the terminal)."""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from src.client.http import Answer

Row = Sequence[object]
WIDE = 200  # without a terminal: wide enough that no column is cut


def _console(stream: Any) -> Console:
    tty = stream.isatty()
    return Console(file=stream, width=None if tty else WIDE, highlight=False,
                   soft_wrap=not tty, force_terminal=tty or None, no_color=not tty)


class Printer:
    """Prints answers in the chosen format: table (default) or json."""

    def __init__(self, fmt: str = "table") -> None:
        self.json = fmt == "json"
        self.console = _console(sys.stdout)
        self.errors = _console(sys.stderr)

    @property
    def tty(self) -> bool:
        return sys.stdout.isatty()

    def raw(self, answer: Answer) -> None:
        """The answer's body exactly as the API sent it."""
        sys.stdout.write(answer.text + ("" if answer.text.endswith("\n") else "\n"))
        sys.stdout.flush()

    def answer(self, answer: Answer, render: Callable[[Any], None]) -> None:
        """The API's JSON with -o json, else what render makes of it."""
        if self.json:
            self.raw(answer)
        else:
            render(answer.json())

    def table(self, headers: Sequence[str], rows: Iterable[Row], title: str | None = None) -> None:
        table = Table(*headers, box=box.SIMPLE_HEAD,  # the headers are ours, never data
                      title=Text(shown(title)) if title is not None else None,
                      title_justify="left", pad_edge=False)
        for row in rows:
            table.add_row(*(Text(cell_text(cell)) for cell in row))
        self.console.print(table)

    def fields(self, pairs: Iterable[tuple[str, object]]) -> None:
        """One object as a two-column table: field, value."""
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column(style="bold")
        table.add_column()
        for name, value in pairs:
            table.add_row(Text(shown(name)), Text(cell_text(value)))
        self.console.print(table)

    def line(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def note(self, text: str) -> None:
        """A message for people, on stderr so -o json output stays pure JSON."""
        self.errors.print(text, markup=False, highlight=False)


def cell_text(value: object) -> str:
    """A value as one line of plain text (control characters escaped)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(cell_text(item) for item in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{shown(key)}={cell_text(item)}" for key, item in value.items()) or "-"
    return shown(str(value))


def shown(text: str) -> str:
    """text as it is when every character is printable; else every character a terminal would
    act on (ESC, BEL, line breaks, bidi controls) written as its Python escape (`\\x1b`), with
    backslashes doubled so that the escaped form reads unambiguously, as repr writes it."""
    if text.isprintable():
        return text
    return "".join("\\\\" if char == "\\" else char if char.isprintable()
                   else repr(char)[1:-1] for char in text)


def age(stamp: str | None, now: datetime | None = None) -> str:
    """How long ago an ISO 8601 UTC time was: 42s, 5m, 3h, 2d."""
    if not stamp:
        return "-"
    then = datetime.fromisoformat(stamp)
    seconds = int(((now or datetime.now(UTC)) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def size(count: int | None) -> str:
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
