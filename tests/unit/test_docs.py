"""The tables in docs/ that mirror code are the code's own: regenerating them changes nothing."""
from __future__ import annotations

from pathlib import Path

import pytest

from scripts.docs import BLOCK, BLOCKS, render

DOCS = sorted((Path(__file__).resolve().parents[2] / "docs").glob("*.md"))


@pytest.mark.parametrize("path", DOCS, ids=lambda path: path.name)
def test_generated_blocks_match_the_code(path: Path) -> None:
    text = path.read_text()
    assert render(text) == text, f"{path.name} is stale: run `make docs`"


def test_every_block_is_somewhere() -> None:
    found = {match.group(2) for path in DOCS for match in BLOCK.finditer(path.read_text())}
    assert found == set(BLOCKS)
