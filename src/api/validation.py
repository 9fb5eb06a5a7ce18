"""Validate request bodies and query strings against the schemas of the contract."""
from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator

from src import errors
from src.api.schemas import DNS_LABEL, SCHEMAS

_format_checker = jsonschema.FormatChecker()


@_format_checker.checks("dns-label")
def _is_dns_label(value: object) -> bool:
    # fullmatch: Python's "$" in the schema pattern would also accept a trailing newline.
    return not isinstance(value, str) or re.fullmatch(DNS_LABEL.strip("^$"), value) is not None


@cache
def _whole_string(pattern: str) -> re.Pattern[str]:
    """pattern with ECMA-262's `$` (end of input), which JSON Schema means; Python's `$` also
    matches before a final newline, so "name\n" would pass `^[a-z]+$`."""
    return re.compile(re.sub(r"(?<!\\)\$", r"\\Z", pattern))


def _pattern(validator: Any, pattern: str, instance: Any, _schema: Any) -> Iterator[Any]:
    if validator.is_type(instance, "string") and not _whole_string(pattern).search(instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


_Validator = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator, validators={"pattern": _pattern})


def validator(schema: dict[str, Any]) -> Any:
    """A JSON Schema validator for schema, which may refer to the contract's components."""
    return _Validator({**schema, "components": {"schemas": SCHEMAS}},
                      format_checker=_format_checker)


@cache
def _validator(schema_name: str) -> Any:
    return validator({"$ref": f"#/components/schemas/{schema_name}"})


def _field(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(part) for part in error.absolute_path)
    if error.validator == "additionalProperties":
        return path or "body"
    if error.validator == "required":
        return re.findall(r"'([^']+)'", error.message)[0] if "'" in error.message else path
    return path or "body"


def validate_body(schema_name: str, body: Any) -> dict[str, Any]:
    """Return body if it matches the named component schema.

    Raises: ValidationFailed with one message per offending field in details.errors.
    """
    problems = sorted(_validator(schema_name).iter_errors(body), key=lambda e: list(e.path))
    if problems:
        first: dict[str, str] = {}
        for error in problems:  # one message per field: pattern and format often both fire
            first.setdefault(_field(error), error.message)
        fields = [{"field": name, "message": message} for name, message in first.items()]
        summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        raise errors.ValidationFailed(f"Request body is invalid: {summary}", errors=fields)
    result: dict[str, Any] = body
    return result


def parse_query(query: dict[str, list[str]],
                declaration: tuple[tuple[str, dict[str, Any]], ...]) -> dict[str, Any]:
    """Typed query values for a route's declared parameters; a route that declares none
    ignores its query string.

    Raises: InvalidQuery for unknown, repeated or ill-typed parameters.
    """
    if not declaration:
        return {}
    declared = dict(declaration)
    values: dict[str, Any] = {}
    for name, raw in query.items():
        if name not in declared:
            raise errors.InvalidQuery(field=name, reason="unknown parameter")
        if len(raw) != 1:
            raise errors.InvalidQuery(field=name, reason="given more than once")
        schema = declared[name]
        value: Any = raw[0]
        if schema.get("type") == "integer":
            if not re.fullmatch(r"[0-9]{1,9}", value):
                raise errors.InvalidQuery(field=name, reason="must be a whole number")
            value = int(value)
        problem = jsonschema.exceptions.best_match(
            validator(schema).iter_errors(value))
        if problem is not None:
            raise errors.InvalidQuery(field=name, reason=problem.message)
        values[name] = value
    return values
