"""The harness's purge_pools_under: every pool whose directory lies in a test's workspace goes
(a server or worker process made it, whatever its installation); pools elsewhere stay."""
from __future__ import annotations

from pathlib import Path

import libvirt  # type: ignore[import-untyped]

from scripts.harness.host import purge_pools_under

POOL_XML = """<pool type='dir'><name>{name}</name><target><path>{path}</path></target></pool>"""


def test_pools_under_the_workspace_go_and_others_stay(test_host: Path, tmp_path: Path) -> None:
    workspace, elsewhere = tmp_path / "workspace", tmp_path / "elsewhere"
    (workspace / "images" / "iaas-volumes").mkdir(parents=True)
    elsewhere.mkdir()
    conn = libvirt.open(f"test://{test_host}")
    try:
        inside = conn.storagePoolDefineXML(POOL_XML.format(
            name="iaas-volumes-aaaa1111", path=workspace / "images" / "iaas-volumes"))
        inside.create()
        conn.storagePoolDefineXML(POOL_XML.format(name="iaas-volumes-bbbb2222",
                                                  path=workspace / "gone"))  # inactive
        conn.storagePoolDefineXML(POOL_XML.format(name="kept", path=elsewhere))
        removed = purge_pools_under(conn, workspace)
        assert sorted(removed) == ["iaas-volumes-aaaa1111", "iaas-volumes-bbbb2222"]
        names = {pool.name() for pool in conn.listAllStoragePools()}
        assert "kept" in names and not names & set(removed)
    finally:
        conn.close()
