"""A page's group names come from a row per group: each VM still gets its own groups' names,
in name order, and a VM in none gets none."""
from __future__ import annotations

import dataclasses

from src.database import security_groups as group_dao
from src.database import vms as vm_dao
from src.database.db import Database
from tests.unit.conftest import NOW
from tests.unit.test_vm_rows import full_row

IDS = ["33333333-3333-3333-3333-33333333333" + str(index) for index in range(3)]


def test_each_vm_gets_its_groups_names_in_name_order(db: Database) -> None:
    with db.write() as conn:
        for index, vm_id in enumerate(IDS):
            vm_dao.insert(conn, dataclasses.replace(full_row(), id=vm_id, name=f"vm-{index}",
                                                    domain_name=""))
        for group_id, name in (("g-web", "web"), ("g-db", "db"), ("g-default", "default")):
            group_dao.insert(conn, group_dao.GroupRow(group_id, "p", name, "", NOW, NOW))
        for vm_id, group_id in ((IDS[0], "g-web"), (IDS[0], "g-default"), (IDS[0], "g-db"),
                                (IDS[1], "g-web")):
            group_dao.attach(conn, vm_id, group_id)
    with db.read() as conn:
        assert group_dao.names_by_vm(conn, IDS) == {
            IDS[0]: ["db", "default", "web"], IDS[1]: ["web"], IDS[2]: []}
        assert group_dao.names_by_vm(conn, [IDS[1]]) == {IDS[1]: ["web"]}
        assert group_dao.names_by_vm(conn, []) == {}
