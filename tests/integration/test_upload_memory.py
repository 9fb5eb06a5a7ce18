"""A 3 GiB upload streams through either server with flat memory: the server runs in a child
process and its peak resident size (VmHWM) is read before and after."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.harness.uploads import ChildServer, child_on_test_driver, put_file

GIB = 1024 ** 3
SIZE = 3 * GIB
GROWTH_BOUND_KIB = 128 * 1024  # 128 MiB: a twenty-fourth of the file


@pytest.fixture(params=["wsgiref", "waitress"])
def child(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ChildServer, str]]:
    server, token = child_on_test_driver(tmp_path, request.param, "iaas-test")
    yield server, token
    server.stop()


def test_a_3_gib_sparse_upload_keeps_memory_flat(child: tuple[ChildServer, str],
                                                 tmp_path: Path) -> None:
    server, token = child
    sparse = tmp_path / "sparse.raw"
    with sparse.open("wb") as out:
        out.truncate(SIZE)  # a raw disk of zeros that takes no room here
    image = server.call(token, "POST", "/v1/images", {"name": "big", "format": "raw"}).body
    before = server.memory_kib()
    reply = put_file(server.url, token, image["id"], sparse, timeout_s=600)
    after = server.memory_kib()
    assert reply.status == 200, reply.body
    assert reply.body["status"] == "active" and reply.body["virtual_size_bytes"] == SIZE
    growth = after["VmHWM"] - before["VmHWM"]
    print(f"server VmRSS {before['VmRSS']} -> {after['VmRSS']} KiB, peak VmHWM "
          f"{before['VmHWM']} -> {after['VmHWM']} KiB (+{growth} KiB) for {SIZE // 1024} KiB")
    assert growth < GROWTH_BOUND_KIB, f"the server's peak grew by {growth} KiB"
    assert (tmp_path / "images" / image["file"]).stat().st_size == SIZE
