"""DAO for vm_nics: each VM's NICs in order (network, MAC) and the addresses learned for each."""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field

import orjson

from src.database.rows import field_names, filled


@dataclass(frozen=True)
class NicRow:
    vm_id: str
    position: int  # 0: the first NIC (the guest's eth0)
    network: str
    mac: str
    addresses: list[dict[str, str]] = field(default_factory=list)


_FIELDS = field_names(NicRow)


def _row(found: tuple[str, int, str, str, str]) -> NicRow:
    """A NicRow without its dataclass __init__ (one or more per VM listed)."""
    return filled(NicRow, _FIELDS, (*found[:4], [] if found[4] == "[]" else orjson.loads(found[4])))


def put(conn: sqlite3.Connection, vm_id: str, nics: list[tuple[str, str]]) -> None:
    """The VM's NICs, (network, mac) in order, replacing those it had."""
    conn.execute("DELETE FROM vm_nics WHERE vm_id = ?", (vm_id,))
    conn.executemany("INSERT INTO vm_nics (vm_id, position, network, mac) VALUES (?, ?, ?, ?)",
                     [(vm_id, position, network, mac)
                      for position, (network, mac) in enumerate(nics)])


def for_vms(conn: sqlite3.Connection, vm_ids: list[str]) -> dict[str, list[NicRow]]:
    """The NICs of each VM, in order, by VM id (a VM without rows is left out)."""
    found: dict[str, list[NicRow]] = {}
    for start in range(0, len(vm_ids), 500):  # SQLite's bound on parameters
        chunk = vm_ids[start:start + 500]
        marks = ", ".join("?" * len(chunk))
        cursor = conn.execute(f"SELECT vm_id, position, network, mac, addresses FROM vm_nics "
                              f"WHERE vm_id IN ({marks}) ORDER BY vm_id, position", chunk)
        cursor.row_factory = None
        for row in cursor:
            found.setdefault(row[0], []).append(_row(row))
    return found


def users(conn: sqlite3.Connection, host: str, network: str) -> list[str]:
    """Ids of the VMs on host with a NIC on network (placed there, or moving there)."""
    return [row[0] for row in conn.execute(
        "SELECT DISTINCT n.vm_id FROM vm_nics n JOIN vms v ON v.id = n.vm_id "
        "WHERE n.network = ? AND (v.host = ? OR EXISTS (SELECT 1 FROM vm_migrations m "
        "WHERE m.vm_id = v.id AND m.target = ? AND m.phase IN ('queued', 'preparing', "
        "'transferring'))) ORDER BY n.vm_id",
        (network, host, host))]


def set_network(conn: sqlite3.Connection, vm_id: str, position: int, network: str) -> None:
    conn.execute("UPDATE vm_nics SET network = ? WHERE vm_id = ? AND position = ?",
                 (network, vm_id, position))


def set_addresses(conn: sqlite3.Connection, vm_id: str, mac: str,
                  addresses: list[dict[str, str]]) -> None:
    conn.execute("UPDATE vm_nics SET addresses = ? WHERE vm_id = ? AND mac = ?",
                 (json.dumps(addresses), vm_id, mac))


def clear_addresses(conn: sqlite3.Connection, vm_id: str) -> None:
    """The VM is down: none of its NICs has an address any more."""
    conn.execute("UPDATE vm_nics SET addresses = '[]' WHERE vm_id = ?", (vm_id,))
