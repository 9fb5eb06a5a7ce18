"""Request validation: strict types, DNS-label names, field-level messages, query parsing."""
from typing import Any

import pytest

from src import errors
from src.api.routes import ROUTES
from src.api.validation import parse_query, validate_body

GOOD = {"name": "vm-1", "cpu": 2, "ram": 2048, "image_name": "Ubuntu-Base-22.04"}


def test_good_body_passes() -> None:
    assert validate_body("VmCreate", dict(GOOD)) == GOOD
    assert validate_body("VmCreate", {**GOOD, "disk_gb": 20})["disk_gb"] == 20


@pytest.mark.parametrize("field, value", [
    ("cpu", "2"), ("cpu", True), ("cpu", 2.5), ("cpu", 0), ("cpu", 129),
    ("ram", 127), ("ram", 1048577), ("ram", None), ("disk_gb", 0), ("disk_gb", 16385),
    ("name", "vm1\n"), ("name", "-vm"), ("name", "vm-"), ("name", "VM"), ("name", "a" * 64),
    ("name", "vm_1"), ("name", ""), ("name", "vm.1"), ("image_name", "../etc"), ("image_name", 3),
])
def test_bad_field_is_named(field: str, value: Any) -> None:
    with pytest.raises(errors.ValidationFailed) as caught:
        validate_body("VmCreate", {**GOOD, field: value})
    assert [problem["field"] for problem in caught.value.details["errors"]] == [field]


def test_longest_dns_label_is_accepted() -> None:
    validate_body("VmCreate", {**GOOD, "name": "a" + "b" * 61 + "c"})


def test_unknown_and_missing_fields() -> None:
    with pytest.raises(errors.ValidationFailed) as caught:
        validate_body("VmCreate", {"name": "vm", "cpu": 1, "ram": 256, "image": "x"})
    fields = {problem["field"] for problem in caught.value.details["errors"]}
    assert fields == {"body", "image_name"}


@pytest.mark.parametrize("body", [[], "vm", 3, None])
def test_body_must_be_an_object(body: Any) -> None:
    with pytest.raises(errors.ValidationFailed):
        validate_body("VmCreate", body)


def test_query_is_typed_and_checked() -> None:
    operation = next(r.query for r in ROUTES if (r.method, r.pattern) == ("GET", "/v1/vms"))
    assert parse_query({"limit": ["5"], "status": ["running"]}, operation) == \
        {"limit": 5, "status": "running"}
    for bad in ({"limit": ["0"]}, {"limit": ["x"]}, {"limit": ["1001"]}, {"status": ["up"]},
                {"marker": ["not-a-uuid"]}, {"bogus": ["1"]}, {"limit": ["1", "2"]}):
        with pytest.raises(errors.InvalidQuery):
            parse_query(bad, operation)
