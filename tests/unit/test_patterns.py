"""Every string pattern of the contract matches the whole string: a trailing newline is refused."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import find
from hypothesis import strategies as st

from src.api.openapi import DOCUMENT
from src.api.validation import validate_body, validator


def _patterns(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("pattern"), str):
            yield node["pattern"]
        for value in node.values():
            yield from _patterns(value)
    elif isinstance(node, list):
        for value in node:
            yield from _patterns(value)


PATTERNS = sorted(set(_patterns(DOCUMENT)))


def test_the_contract_has_patterns() -> None:
    assert len(PATTERNS) >= 4  # DNS labels, image names and files, GPU models, keys, codes


@pytest.mark.parametrize("pattern", PATTERNS)
def test_a_trailing_newline_never_matches(pattern: str) -> None:
    sample = find(st.from_regex(pattern, fullmatch=True), lambda _text: True)
    checker = validator({"type": "string", "pattern": pattern})
    assert checker.is_valid(sample), sample
    assert not checker.is_valid(sample + "\n"), repr(sample + "\n")


@pytest.mark.parametrize("schema, body", [
    ("ImageCreate", {"name": "nl\n", "file": "a.qcow2", "format": "qcow2"}),
    ("ImageCreate", {"name": "nl", "file": "a.qcow2\n", "format": "qcow2"}),
    ("FlavorCreate", {"name": "f", "cpu": 1, "ram": 128, "disk_gb": 1, "gpu_model": "H100\n"}),
])
def test_bodies_with_a_trailing_newline_are_refused(schema: str, body: dict[str, Any]) -> None:
    with pytest.raises(Exception, match="does not match"):
        validate_body(schema, body)
