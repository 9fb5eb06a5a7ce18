"""destroy_if_running on the test driver: "not running" passes only for a domain that is off."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import libvirt  # type: ignore[import-untyped]
import pytest

from src.hypervisor.domains import destroy_if_running

DOMAIN_XML = """<domain type='test'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <os><type>hvm</type></os>
</domain>"""


@pytest.fixture
def conn(test_host: Path) -> Iterator[libvirt.virConnect]:
    conn = libvirt.open(f"test://{test_host}")
    yield conn
    conn.close()


def not_running_error(conn: libvirt.virConnect) -> libvirt.libvirtError:
    """libvirt's own VIR_ERR_OPERATION_INVALID, from a destroy of a domain that is off."""
    off = conn.defineXML(DOMAIN_XML.format(name="off"))
    with pytest.raises(libvirt.libvirtError) as refused:
        off.destroy()
    assert refused.value.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID
    return refused.value


def test_a_running_domain_is_powered_off(conn: libvirt.virConnect) -> None:
    domain = conn.defineXML(DOMAIN_XML.format(name="on"))
    domain.create()
    destroy_if_running(domain)
    assert not domain.isActive()


def test_a_domain_already_off_is_fine(conn: libvirt.virConnect) -> None:
    domain = conn.defineXML(DOMAIN_XML.format(name="on"))
    destroy_if_running(domain)  # libvirt refuses the destroy: not running
    assert not domain.isActive()


def test_not_running_said_of_a_domain_still_active_raises(conn: libvirt.virConnect) -> None:
    """The destroy fails with "not running" (another refusal sharing the code, or a race) while
    the domain still runs: the caller must not go on as if it were off."""
    error = not_running_error(conn)
    domain = conn.defineXML(DOMAIN_XML.format(name="on"))
    domain.create()

    def refused() -> None:
        raise error

    with pytest.raises(libvirt.libvirtError) as raised:
        destroy_if_running(domain, refused)
    assert raised.value is error
    assert domain.isActive()


def test_a_transient_domain_gone_after_not_running_is_off(conn: libvirt.virConnect) -> None:
    error = not_running_error(conn)
    domain = conn.createXML(DOMAIN_XML.format(name="transient"))

    def stopped_meanwhile() -> None:
        domain.destroy()  # it stopped by itself just before ours: libvirt removed it
        raise error

    destroy_if_running(domain, stopped_meanwhile)
    with pytest.raises(libvirt.libvirtError) as gone:
        domain.isActive()
    assert gone.value.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN


def test_any_other_failure_raises(conn: libvirt.virConnect) -> None:
    domain = conn.createXML(DOMAIN_XML.format(name="transient"))
    domain.destroy()  # transient: gone altogether
    with pytest.raises(libvirt.libvirtError) as gone:
        destroy_if_running(domain)
    assert gone.value.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN
