"""The harness's force_off: a domain that stopped before its destroy (a race with libvirtd's own
threads) is off as asked; any other failure of destroy still raises."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import libvirt  # type: ignore[import-untyped]
import pytest

from scripts.harness.host import force_off

DOMAIN_XML = """<domain type='test'>
  <name>force-off</name>
  <memory unit='MiB'>64</memory>
  <os><type>hvm</type></os>
</domain>"""


@pytest.fixture
def domain(test_host: Path) -> Iterator[libvirt.virDomain]:
    conn = libvirt.open(f"test://{test_host}")
    try:
        yield conn.defineXML(DOMAIN_XML)
    finally:
        conn.close()


def test_a_running_domain_is_stopped(domain: libvirt.virDomain) -> None:
    domain.create()
    force_off(domain)
    assert not domain.isActive()


def test_a_domain_that_stopped_before_its_destroy_is_fine(domain: libvirt.virDomain) -> None:
    # What a teardown that saw it running meets when it stopped just before the destroy.
    with pytest.raises(libvirt.libvirtError) as refused:
        domain.destroy()
    assert refused.value.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID
    force_off(domain)
    assert not domain.isActive()


def test_any_other_failure_still_raises(domain: libvirt.virDomain) -> None:
    domain.create()
    domain.undefine()  # now transient: destroy removes it altogether
    domain.destroy()
    with pytest.raises(libvirt.libvirtError) as gone:
        force_off(domain)
    assert gone.value.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN
