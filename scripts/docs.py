#!/usr/bin/env python3
"""`make docs`: fill the generated blocks of docs/*.md from the code, so tables cannot drift.

Blocks: errors (src/errors.py), settings (src/config.py), routes (src/api/routes.py) and
lifecycle (src/services/rules/lifecycle.py). `--check` only reports a stale file (the tests use it).
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from src import errors
from src.api.routes import ROUTES
from src.config import DERIVED, SETTINGS
from src.services.rules.lifecycle import ALLOWED

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"(<!-- BEGIN GENERATED: (\w+) -->\n)(.*?)(<!-- END GENERATED: \2 -->)", re.DOTALL)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def errors_table() -> str:
    kinds = sorted({kind for kind in vars(errors).values()
                    if isinstance(kind, type) and issubclass(kind, errors.ApiError)},
                   key=lambda kind: (kind.status, kind.code))
    return _table(["status", "code", "message"],
                  [[str(kind.status), f"`{kind.code}`", kind.template] for kind in kinds])


def settings_table() -> str:
    return _table(["variable", "default", "meaning"], [
        [f"`{s.env}`", f"`{s.default}`" if s.default != DERIVED else "(derived)", s.description]
        for s in SETTINGS])


def routes_table() -> str:
    return _table(["method", "path", "operationId", "who"], [
        [route.method, f"`{route.pattern}`", route.operation_id, route.access]
        for route in ROUTES])


def lifecycle_table() -> str:
    return _table(["status", "actions allowed"], [
        [f"`{status}`", ", ".join(f"`{action}`" for action in actions) or "none (a task owns it)"]
        for status, actions in ALLOWED.items()])


BLOCKS: dict[str, Callable[[], str]] = {"errors": errors_table, "settings": settings_table,
                                        "routes": routes_table, "lifecycle": lifecycle_table}


def render(text: str) -> str:
    """text with every generated block rewritten. Raises: KeyError for an unknown block."""
    return BLOCK.sub(lambda m: m.group(1) + BLOCKS[m.group(2)]() + m.group(4), text)


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/docs.py")
    parser.add_argument("--check", action="store_true", help="fail if a file is out of date")
    stale = []
    for path in sorted(DOCS.glob("*.md")):
        text = path.read_text()
        fresh = render(text)
        if fresh != text:
            stale.append(path.name)
            if not parser.parse_args().check:
                path.write_text(fresh)
    if stale and parser.parse_args().check:
        print(f"out of date (run make docs): {', '.join(stale)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
