"""destroy_if_running (and the harness's force_off, which is it): a domain that stopped before
its destroy (a race with libvirtd's own threads) is off as asked; "not running" said of a domain
still active, and any other failure of destroy, still raise."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import libvirt  # type: ignore[import-untyped]
import pytest

from scripts.harness.host import force_off
from src.hypervisor.domains import destroy_if_running

DOMAIN_XML = """<domain type='test'>
  <name>force-off</name>
  <memory unit='MiB'>64</memory>
  <os><type>hvm</type></os>
</domain>"""


@pytest.fixture
def conn(test_host: Path) -> Iterator[libvirt.virConnect]:
    conn = libvirt.open(f"test://{test_host}")
    yield conn
    conn.close()


@pytest.fixture
def domain(conn: libvirt.virConnect) -> libvirt.virDomain:
    return conn.defineXML(DOMAIN_XML)


def not_running(domain: libvirt.virDomain) -> libvirt.libvirtError:
    """libvirt's own VIR_ERR_OPERATION_INVALID, from a destroy of the domain while it is off."""
    with pytest.raises(libvirt.libvirtError) as refused:
        domain.destroy()
    assert refused.value.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID
    return refused.value


def test_a_running_domain_is_stopped(domain: libvirt.virDomain) -> None:
    domain.create()
    force_off(domain)
    assert not domain.isActive()


def test_a_domain_that_stopped_before_its_destroy_is_fine(domain: libvirt.virDomain) -> None:
    # What a teardown that saw it running meets when it stopped just before the destroy.
    not_running(domain)
    force_off(domain)
    assert not domain.isActive()


def test_not_running_said_of_a_domain_still_active_raises(domain: libvirt.virDomain) -> None:
    """The destroy fails with "not running" (another refusal under that code, or a race) while
    the domain still runs: the caller must not go on as if it were off."""
    error = not_running(domain)
    domain.create()

    def refused() -> None:
        raise error

    with pytest.raises(libvirt.libvirtError) as raised:
        destroy_if_running(domain, refused)
    assert raised.value is error
    assert domain.isActive()


def test_a_transient_domain_gone_after_not_running_is_off(domain: libvirt.virDomain,
                                                         conn: libvirt.virConnect) -> None:
    error = not_running(domain)
    domain.undefine()
    transient = conn.createXML(DOMAIN_XML)

    def stopped_meanwhile() -> None:
        transient.destroy()  # it stopped by itself just before ours: libvirt removed it
        raise error

    destroy_if_running(transient, stopped_meanwhile)
    with pytest.raises(libvirt.libvirtError) as gone:
        transient.isActive()
    assert gone.value.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN


def test_any_other_failure_still_raises(domain: libvirt.virDomain) -> None:
    domain.create()
    domain.undefine()  # now transient: destroy removes it altogether
    domain.destroy()
    with pytest.raises(libvirt.libvirtError) as gone:
        force_off(domain)
    assert gone.value.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN
