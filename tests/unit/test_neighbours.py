"""The host's neighbour table: parsed from /proc/net/arp, read only when libvirt is local."""
import pytest

from src.hypervisor.host import is_local, parse_arp_table

TABLE = """IP address       HW type     Flags       HW address            Mask     Device
10.250.0.17      0x1         0x2         52:54:00:AA:bb:01     *        virbr-iaas
10.250.0.18      0x1         0x0         00:00:00:00:00:00     *        virbr-iaas
10.250.0.19      0x1         0x0         52:54:00:aa:bb:03     *        virbr-iaas
192.168.1.1      0x1         0x6         52:54:00:aa:bb:01     *        eth0
garbage line
10.0.0.9         0x1         zz          52:54:00:aa:bb:04     *        eth0
"""


def test_complete_entries_by_lowercase_mac() -> None:
    assert parse_arp_table(TABLE) == {
        "52:54:00:aa:bb:01": [("10.250.0.17", "ipv4"), ("192.168.1.1", "ipv4")]}


def test_an_empty_table_has_no_neighbours() -> None:
    assert parse_arp_table("") == {}
    assert parse_arp_table(TABLE.splitlines()[0]) == {}


@pytest.mark.parametrize("uri", ["qemu:///system", "qemu:///session", "test:///default",
                                 "test:///tmp/host.xml", "qemu+unix:///system"])
def test_local_uris(uri: str) -> None:
    assert is_local(uri)


@pytest.mark.parametrize("uri", ["qemu+ssh://root@hv1/system", "qemu+tcp://hv1/system",
                                 "qemu+tls://hv1.example.org/system", "qemu://hv1/system",
                                 "qemu+ssh:///system", ""])
def test_remote_uris(uri: str) -> None:
    assert not is_local(uri)
