"""Migration 034 on a database of 031: every placed VM gets one NIC row, on its host's network,
with its MAC and the addresses it had; a VM without a MAC (never placed) gets none."""
from __future__ import annotations

import json
from pathlib import Path

from src.database.db import Database

AT = "2026-12-01T00:00:00.000000Z"
ADDRESSES = [{"address": "10.77.0.57", "family": "ipv4", "source": "dhcp"}]


def test_034_gives_each_placed_vm_its_one_nic(tmp_path: Path) -> None:
    db = Database(tmp_path / "iaas.db")
    db.migrate(until=31)
    with db.write() as conn:
        conn.execute("INSERT INTO hosts (name, uri, network, domain_type, cpu_allocation_ratio, "
                     "ram_allocation_ratio, created_at) VALUES ('gpu-01', 'qemu:///system', "
                     "'lab', 'kvm', 1, 1, ?)", (AT,))
        conn.execute("INSERT INTO images (id, name, file, format, created_at) "
                     "VALUES ('i-1', 'base', 'base.qcow2', 'qcow2', ?)", (AT,))
        for vm_id, mac, host in (("v-1", "52:54:00:00:00:01", "gpu-01"), ("v-2", None, "")):
            conn.execute("INSERT INTO vms (id, name, cpu, ram, disk_gb, image_id, status, "
                         "ip_addresses, mac, created_at, updated_at, domain_name, host) "
                         "VALUES (?, ?, 1, 256, 1, 'i-1', 'running', ?, ?, ?, ?, ?, ?)",
                         (vm_id, vm_id, json.dumps(ADDRESSES if mac else []), mac, AT, AT,
                          f"iaas-{vm_id}", host))
    assert 34 in db.migrate(until=34)  # with whatever 032 and 033 become
    with db.read() as conn:
        rows = conn.execute("SELECT vm_id, position, network, mac, addresses FROM vm_nics"
                            ).fetchall()
    assert [tuple(row) for row in rows] == [
        ("v-1", 0, "lab", "52:54:00:00:00:01", json.dumps(ADDRESSES))]
