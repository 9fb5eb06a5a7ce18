"""Security group rules: checking a requested rule, and showing a stored one."""
from __future__ import annotations

import ipaddress
import sqlite3
import uuid
from dataclasses import dataclass
from typing import Any

from src import errors
from src.database import security_groups as group_dao

PORTED = ("tcp", "udp")
MAX_RULES = 100  # per group: each is one iptables rule per source address on every member NIC


@dataclass(frozen=True)
class RuleRequest:
    """A validated rule of a request body: from a CIDR or from a group's members."""

    protocol: str
    direction: str = "ingress"
    port_min: int | None = None
    port_max: int | None = None
    cidr: str | None = None
    group: str | None = None  # a group of the same project, by name


def _bad(field: str, reason: str) -> errors.ApiError:
    return errors.ValidationFailed(f"{field}: {reason}", errors=[
        {"field": f"rules.{field}", "message": reason}])


def _ports(rule: RuleRequest) -> tuple[int | None, int | None]:
    """Raises: ValidationFailed for ports on icmp/all, a max alone, or min above max."""
    if rule.port_min is None and rule.port_max is None:
        return None, None
    if rule.protocol not in PORTED:
        raise _bad("port_min", f"{rule.protocol} has no ports")
    if rule.port_min is None:
        raise _bad("port_min", "port_max needs port_min")
    high = rule.port_max if rule.port_max is not None else rule.port_min
    if high < rule.port_min:
        raise _bad("port_max", f"{high} is below port_min {rule.port_min}")
    return rule.port_min, high


def _cidr(text: str) -> str:
    """An IPv4 network in its canonical form (host bits cleared). Raises: ValidationFailed."""
    try:
        return str(ipaddress.IPv4Network(text, strict=False))
    except ValueError as exc:
        raise _bad("cidr", f"{text!r} is not an IPv4 CIDR ({exc})") from None


def stored(conn: sqlite3.Connection, rule: RuleRequest, group: group_dao.GroupRow,
           now: str) -> group_dao.RuleRow:
    """The row of rule in group; a `group` source names a group of the same project (the
    group itself too).

    Raises: ValidationFailed, SecurityGroupNotFoundInRequest.
    """
    if (rule.cidr is None) == (rule.group is None):
        raise _bad("cidr", "give exactly one of cidr and group")
    port_min, port_max = _ports(rule)
    remote = None
    if rule.group is not None:
        source = (group if rule.group in (group.name, group.id)
                  else group_dao.get(conn, group.project, rule.group))
        if source is None:
            raise errors.SecurityGroupNotFoundInRequest(group=rule.group)
        remote = source.id
    return group_dao.RuleRow(
        id=str(uuid.uuid4()), group_id=group.id, direction=rule.direction,
        protocol=rule.protocol, port_min=port_min, port_max=port_max,
        cidr=_cidr(rule.cidr) if rule.cidr is not None else None, remote_group_id=remote,
        created_at=now)


def shown(rule: group_dao.RuleRow, names: dict[str, str]) -> dict[str, Any]:
    """A rule as the API shows it; names: group names by id."""
    return {"id": rule.id, "direction": rule.direction, "protocol": rule.protocol,
            "port_min": rule.port_min, "port_max": rule.port_max, "cidr": rule.cidr,
            "group": names.get(rule.remote_group_id or "") if rule.remote_group_id else None}


DEFAULT_NAME = "default"
DEFAULT_DESCRIPTION = "SSH from anywhere, and everything from members of this group"
DEFAULT_RULES = (RuleRequest(protocol="tcp", port_min=22, port_max=22, cidr="0.0.0.0/0"),
                 RuleRequest(protocol="all", group=DEFAULT_NAME))
