"""DAO for security groups, their rules and the VMs each is attached to."""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class GroupRow:
    id: str
    project: str
    name: str
    description: str
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class RuleRow:
    id: str
    group_id: str
    direction: str
    protocol: str  # tcp, udp, icmp or all
    port_min: int | None
    port_max: int | None
    cidr: str | None  # exactly one of cidr and remote_group_id
    remote_group_id: str | None
    created_at: str


_GROUP = "id, project, name, description, created_at, updated_at"
_RULE = ("id, group_id, direction, protocol, port_min, port_max, cidr, remote_group_id, "
         "created_at")


def insert(conn: sqlite3.Connection, group: GroupRow) -> None:
    """Raises: sqlite3.IntegrityError when the project has a group of that name."""
    conn.execute(f"INSERT INTO security_groups ({_GROUP}) VALUES (?, ?, ?, ?, ?, ?)",
                 (group.id, group.project, group.name, group.description, group.created_at,
                  group.updated_at))


def get(conn: sqlite3.Connection, project: str | None, id_or_name: str) -> GroupRow | None:
    """The group by id, or by name in project (None: any project, by id only)."""
    row = conn.execute(
        f"SELECT {_GROUP} FROM security_groups WHERE (id = ? AND (? IS NULL OR project = ?)) "
        "OR (project = ? AND name = ?) ORDER BY id = ? DESC LIMIT 1",
        (id_or_name, project, project, project, id_or_name, id_or_name)).fetchone()
    return GroupRow(*row) if row else None


def list_all(conn: sqlite3.Connection, project: str | None) -> list[GroupRow]:
    """The project's groups (None: every project's), by project and name."""
    return [GroupRow(*row) for row in conn.execute(
        f"SELECT {_GROUP} FROM security_groups WHERE ? IS NULL OR project = ? "
        "ORDER BY project, name", (project, project))]


def count(conn: sqlite3.Connection, project: str) -> int:
    return int(conn.execute("SELECT count(*) FROM security_groups WHERE project = ?",
                            (project,)).fetchone()[0])


def delete(conn: sqlite3.Connection, group_id: str) -> None:
    conn.execute("DELETE FROM security_groups WHERE id = ?", (group_id,))


def touch(conn: sqlite3.Connection, group_id: str, now: str) -> None:
    conn.execute("UPDATE security_groups SET updated_at = ? WHERE id = ?", (now, group_id))


def add_rule(conn: sqlite3.Connection, rule: RuleRow) -> None:
    conn.execute(f"INSERT INTO security_group_rules ({_RULE}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 (rule.id, rule.group_id, rule.direction, rule.protocol, rule.port_min,
                  rule.port_max, rule.cidr, rule.remote_group_id, rule.created_at))


def rules_of(conn: sqlite3.Connection, group_ids: list[str]) -> list[RuleRow]:
    """The rules of the groups, each group's in the order they were added."""
    marks = ", ".join("?" for _ in group_ids)
    return [RuleRow(*row) for row in conn.execute(
        f"SELECT {_RULE} FROM security_group_rules WHERE group_id IN ({marks}) "
        "ORDER BY group_id, rowid", group_ids)]


def delete_rule(conn: sqlite3.Connection, group_id: str, rule_id: str) -> bool:
    return conn.execute("DELETE FROM security_group_rules WHERE group_id = ? AND id = ?",
                        (group_id, rule_id)).rowcount == 1


def delete_rules(conn: sqlite3.Connection, group_id: str) -> None:
    conn.execute("DELETE FROM security_group_rules WHERE group_id = ?", (group_id,))


def referencing(conn: sqlite3.Connection, group_id: str) -> list[str]:
    """The other groups with a rule that names this one as its source."""
    return [row[0] for row in conn.execute(
        "SELECT DISTINCT group_id FROM security_group_rules WHERE remote_group_id = ? "
        "AND group_id != ?", (group_id, group_id))]


def attach(conn: sqlite3.Connection, vm_id: str, group_id: str) -> bool:
    """False when the VM had it already."""
    return conn.execute("INSERT OR IGNORE INTO vm_security_groups (vm_id, group_id) "
                        "VALUES (?, ?)", (vm_id, group_id)).rowcount == 1


def detach(conn: sqlite3.Connection, vm_id: str, group_id: str) -> bool:
    return conn.execute("DELETE FROM vm_security_groups WHERE vm_id = ? AND group_id = ?",
                        (vm_id, group_id)).rowcount == 1


def groups_of(conn: sqlite3.Connection, vm_id: str) -> list[GroupRow]:
    return [GroupRow(*row) for row in conn.execute(
        f"SELECT {', '.join('g.' + c for c in _GROUP.split(', '))} FROM security_groups g "
        "JOIN vm_security_groups m ON m.group_id = g.id WHERE m.vm_id = ? ORDER BY g.name",
        (vm_id,))]


def members(conn: sqlite3.Connection, group_ids: list[str]) -> list[str]:
    """The VMs attached to any of the groups."""
    marks = ", ".join("?" for _ in group_ids)
    return [row[0] for row in conn.execute(
        f"SELECT DISTINCT vm_id FROM vm_security_groups WHERE group_id IN ({marks}) "
        "ORDER BY vm_id", group_ids)]


def watchers(conn: sqlite3.Connection, group_ids: list[str]) -> list[str]:
    """The groups whose rules let the members of any of these groups in."""
    marks = ", ".join("?" for _ in group_ids)
    return [row[0] for row in conn.execute(
        f"SELECT DISTINCT group_id FROM security_group_rules WHERE remote_group_id IN ({marks})",
        group_ids)]


def names_by_vm(conn: sqlite3.Connection, vm_ids: list[str]) -> dict[str, list[str]]:
    """Each VM's group names, by name. A row per group, its members joined, not one per
    membership: the sqlite3 module lets go of the GIL and takes it back at every row, and a
    page of 1,000 VMs in `default` made 1,000 rows of it."""
    found: dict[str, list[str]] = {vm_id: [] for vm_id in vm_ids}
    if not vm_ids:
        return found
    marks = ", ".join("?" * len(vm_ids))
    for name, members in conn.execute(
            f"SELECT g.name, group_concat(m.vm_id) FROM vm_security_groups m "
            f"JOIN security_groups g ON g.id = m.group_id WHERE m.vm_id IN ({marks}) "
            "GROUP BY g.id ORDER BY g.name", vm_ids):
        for vm_id in members.split(","):  # VM ids are UUIDs: never a comma in one
            found[vm_id].append(name)
    return found


def mark_pending(conn: sqlite3.Connection, vm_id: str) -> None:
    """The VM's filter waits for its current task to end before it is refreshed."""
    conn.execute("INSERT OR IGNORE INTO firewall_pending (vm_id) VALUES (?)", (vm_id,))


def take_pending(conn: sqlite3.Connection, vm_id: str) -> bool:
    """Whether the VM's filter was waiting (it waits no more)."""
    return conn.execute("DELETE FROM firewall_pending WHERE vm_id = ?", (vm_id,)).rowcount == 1


def watching_members(conn: sqlite3.Connection, project: str) -> list[str]:
    """The project's VMs in a group with a rule whose source is a group (members' addresses)."""
    return [row[0] for row in conn.execute(
        "SELECT DISTINCT m.vm_id FROM vm_security_groups m JOIN security_groups g "
        "ON g.id = m.group_id WHERE g.project = ? AND EXISTS (SELECT 1 FROM "
        "security_group_rules r WHERE r.group_id = g.id AND r.remote_group_id IS NOT NULL)",
        (project,))]


def pending(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT vm_id FROM firewall_pending ORDER BY vm_id")]
