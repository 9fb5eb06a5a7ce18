"""Which addresses an image import may reach (IANA's special-purpose registries, this
machine's own addresses, the operator's deny-list, the ports), and what a URL must look like."""
from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest

from src.config import ConfigError, load_config
from src.services.accounts.keypairs import fingerprint
from src.utils import fetch
from src.utils.host_addresses import HostAddresses, parse_fib_trie, parse_if_inet6

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("address, public", [
    ("8.8.8.8", True), ("2606:4700:4700::1111", True), ("185.125.190.40", True),
    ("127.0.0.1", False), ("::1", False), ("10.0.0.1", False), ("172.16.5.4", False),
    ("192.168.1.1", False), ("169.254.169.254", False), ("fe80::1%eth0", False),
    ("fd00:ec2::254", False), ("100.100.100.200", False), ("0.0.0.0", False),
    ("224.0.0.1", False), ("::ffff:127.0.0.1", False), ("::ffff:8.8.8.8", True),
    ("255.255.255.255", False),
])
def test_only_public_unicast_addresses(address: str, public: bool) -> None:
    assert fetch.is_public(address) is public


@pytest.mark.parametrize("address, public", [
    # NAT64's well-known prefix and 6to4 lead to the IPv4 address they carry: that one decides.
    ("64:ff9b::7f00:1", False), ("64:ff9b::a9fe:a9fe", False), ("64:ff9b::a00:1", False),
    ("64:ff9b::808:808", True), ("2002:7f00:1::", False), ("2002:a9fe:a9fe::1", False),
    ("2002:c0a8:101::1", False), ("2002:808:808::1", True),
    # Deprecated and local-use transition ranges are refused whatever they carry.
    ("::7f00:1", False), ("::808:808", False), ("::ffff:0:7f00:1", False),
    ("::ffff:0:808:808", False), ("64:ff9b:1::a00:1", False), ("64:ff9b:1::808:808", False),
    ("fec0::1", False), ("feff::1", False), ("5f00::1", False), ("2001::1", False),
    ("240.0.0.1", False),
])
def test_addresses_that_embed_ipv4_or_lie_in_transition_ranges(address: str,
                                                               public: bool) -> None:
    assert fetch.is_public(address) is public


@pytest.mark.parametrize("url, reason", [
    ("ftp://example.org/x", "only http and https"),
    ("http:///x", "only http and https"),
    ("http://user:secret@example.org/x", "credentials"),
    ("http://localhost/x", "'localhost' does not resolve to public addresses only"),
    ("http://127.0.0.1/x", "'127.0.0.1' does not resolve to public addresses only"),
    ("http://[::1]/x", "'::1' does not resolve to public addresses only"),
    ("http://[64:ff9b::a9fe:a9fe]/x", "does not resolve to public addresses only"),
    ("http://example.org:99999/x", "port"),
])
def test_refused_urls(url: str, reason: str) -> None:
    with pytest.raises(fetch.Refused, match=reason):
        fetch.check(url, fetch.Policy())


def test_a_refusal_names_the_host_never_the_address_it_resolves_to() -> None:
    """Else a member could read where internal names point (a DNS oracle)."""
    with pytest.raises(fetch.Refused) as refused:
        fetch.check("http://localhost/x", fetch.Policy())
    assert "localhost" in str(refused.value)
    assert "127.0.0.1" not in str(refused.value) and "::1" not in str(refused.value)


def test_the_setting_allows_private_addresses() -> None:
    target = fetch.check("http://127.0.0.1:8000/a/b?c=d",
                         fetch.Policy(allow_private=True, ports=((8000, 8000),)))
    assert (target.host, target.port, target.path, target.addresses) == (
        "127.0.0.1", 8000, "/a/b?c=d", ("127.0.0.1",))


def test_fingerprints_are_those_ssh_keygen_prints() -> None:
    # ssh-keygen -lf of this key printed SHA256:mLTOCxakU70Aw5OP5DyOeYQi+1Sn+JACZruMucmPxpY
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL8MA5O06e6hGBoxdxQI/tB709j1rZvLvFNdkwcOfISp laptop"
    assert fingerprint(key) == "SHA256:mLTOCxakU70Aw5OP5DyOeYQi+1Sn+JACZruMucmPxpY"


@pytest.mark.parametrize("address", [
    # Special-purpose blocks the interpreter's is_global (3.11.7's tables) passed.
    "192.0.0.8", "192.0.0.9", "192.0.0.170", "192.88.99.1", "192.88.99.2", "3fff::1",
    "3fff:fff::1", "5f00::1", "2001:db8::1", "100:0:0:1::1", "2001:30::1", "2001:20::1",
    "2001:1::1", "2620:4f:8000::1", "192.31.196.1", "192.52.193.1", "192.175.48.1",
    "198.18.0.1", "198.19.255.255", "192.0.2.1", "198.51.100.1", "203.0.113.1",
    "64:ff9b::c000:8",  # NAT64 of 192.0.0.8
    "2002:c058:6301::1",  # 6to4 of 192.88.99.1
    "::ffff:192.0.0.8", "ff02::1", "4000::1",  # multicast; outside 2000::/3 (unassigned)
])
def test_the_iana_special_purpose_registries_decide_not_the_interpreter(address: str) -> None:
    assert fetch.is_public(address) is False
    with pytest.raises(fetch.Refused, match="does not resolve to public addresses only"):
        fetch.check(f"http://{_literal(address)}/", fetch.Policy())


@pytest.mark.parametrize("address", ["1.1.1.1", "2606:4700:4700::1111", "192.0.1.1",
                                     "192.88.98.1", "3ffe::1", "2001:200::1"])
def test_public_addresses_beside_special_blocks_pass(address: str) -> None:
    assert fetch.check(f"http://{_literal(address)}/", fetch.Policy()).addresses == (address,)


@pytest.mark.parametrize("url", ["http://1.1.1.1:22/", "http://1.1.1.1:6379/",
                                 "https://1.1.1.1:8443/", "http://1.1.1.1:0/"])
def test_only_ports_80_and_443_unless_configured(url: str) -> None:
    with pytest.raises(fetch.Refused, match="is not one imports may use"):
        fetch.check(url, fetch.Policy())
    with pytest.raises(fetch.Refused, match="is not one imports may use"):
        fetch.check(url, fetch.Policy(allow_private=True))  # the test switch opens no port
    assert fetch.check("https://1.1.1.1:80/", fetch.Policy()).port == 80
    opened = fetch.Policy(ports=((80, 80), (6000, 6999)))
    assert fetch.check("http://1.1.1.1:6379/", opened).port == 6379


@pytest.mark.parametrize("url", ["http://1.1.1.1/", "http://[::ffff:1.1.1.1]/",
                                 "http://[64:ff9b::101:101]/", "http://[2002:101:101::1]/",
                                 "http://[2606:4700:4700::1111]/"])
def test_the_deny_list_holds_whatever_else_allows(url: str) -> None:
    deny = tuple(ipaddress.ip_network(net) for net in ("1.1.1.0/24", "2606:4700::/32"))
    for policy in (fetch.Policy(deny=deny), fetch.Policy(allow_private=True, deny=deny)):
        with pytest.raises(fetch.Refused, match="does not resolve to public addresses only"):
            fetch.check(url, policy)
    assert fetch.check(url, fetch.Policy()).port == 80


def test_the_settings_read_ports_and_deny_list() -> None:
    config = load_config({"IAAS_IMPORT_PORTS": "80, 443,8000-8099",
                          "IAAS_IMPORT_DENY": "203.0.113.0/24, 2001:db8::1"}, Path("/none"))
    assert config.import_port_ranges == ((80, 80), (443, 443), (8000, 8099))
    assert [str(net) for net in config.import_deny_networks] == ["203.0.113.0/24",
                                                                 "2001:db8::1/128"]
    assert load_config({}, Path("/none")).import_port_ranges == ((80, 80), (443, 443))
    for name, value in (("IAAS_IMPORT_PORTS", "80,x"), ("IAAS_IMPORT_PORTS", "0"),
                        ("IAAS_IMPORT_PORTS", "90-80"), ("IAAS_IMPORT_DENY", "10.0.0.0/33")):
        with pytest.raises(ConfigError, match=name):
            load_config({name: value}, Path("/none"))


FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     |-- 8.8.4.4
        /32 host LOCAL
     |-- 9.9.9.0
        /24 link UNICAST
"""
IF_INET6 = """00000000000000000000000000000001 01 80 10 80       lo
2606470047000000000000000000abcd 02 40 00 80     eth0
"""


def _machine(tmp_path: Path, fib_trie: str = FIB_TRIE) -> HostAddresses:
    (tmp_path / "fib_trie").write_text(fib_trie)
    (tmp_path / "if_inet6").write_text(IF_INET6)
    return HostAddresses(tmp_path / "fib_trie", tmp_path / "if_inet6")


def test_this_machines_addresses_are_refused_though_public_by_range(tmp_path: Path) -> None:
    machine = _machine(tmp_path)
    assert {str(net) for net in machine.networks()} == {
        "127.0.0.0/8", "127.0.0.1/32", "8.8.4.4/32", "::1/128", "2606:4700:4700::abcd/128"}
    policy = fetch.Policy(machine=machine)
    for url in ("http://8.8.4.4/", "http://[::ffff:8.8.4.4]/", "http://[64:ff9b::808:404]/",
                "http://[2606:4700:4700::abcd]/"):
        with pytest.raises(fetch.Refused, match="does not resolve to public addresses only"):
            fetch.check(url, policy)
    assert fetch.check("http://9.9.9.9/", policy).port == 80  # on-link, not this machine
    assert fetch.check("http://8.8.4.4/", fetch.Policy(allow_private=True,
                                                       machine=machine)).port == 80


def test_unreadable_machine_addresses_refuse_every_url(tmp_path: Path) -> None:
    policy = fetch.Policy(machine=HostAddresses(tmp_path / "missing", tmp_path / "missing6"))
    with pytest.raises(fetch.Refused, match="cannot read its own addresses"):
        fetch.check("http://1.1.1.1/", policy)


def test_the_addresses_read_are_those_ip_addr_lists() -> None:
    """The kernel's tables in /proc against iproute2's listing of this machine."""
    listed = json.loads(subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True,
                                       check=True).stdout)
    addresses = {ipaddress.ip_address(info["local"]) for interface in listed
                 for info in interface.get("addr_info", [])}
    found = parse_fib_trie(Path("/proc/net/fib_trie").read_text()) | parse_if_inet6(
        Path("/proc/net/if_inet6").read_text())
    assert addresses and all(any(ip.version == net.version and ip in net for net in found)
                             for ip in addresses), (addresses, found)


CHECK_IN_NAMESPACE = """
import sys
from src.utils import fetch
for url in sys.argv[1:]:
    try:
        fetch.check(url, fetch.Policy())
        print(url, "allowed")
    except fetch.Refused:
        print(url, "refused")
"""


def test_an_address_on_an_interface_is_refused_in_that_namespace() -> None:
    """A network namespace of the test's own (gone with its process) whose loopback interface
    holds public addresses: from inside it they are this machine's. Nothing is sent."""
    urls = ["http://8.8.4.4/", "http://[2606:4700:4700::1001]/", "http://8.8.8.8/"]
    script = ("ip link set lo up && ip addr add 8.8.4.4/32 dev lo && "
              "ip addr add 2606:4700:4700::1001/128 dev lo && "
              f'exec "{sys.executable}" -c "$0" "$@"')
    ran = subprocess.run(["unshare", "--net", "sh", "-c", script, CHECK_IN_NAMESPACE, *urls],
                         cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split("\n")[:3] == [f"{urls[0]} refused", f"{urls[1]} refused",
                                           f"{urls[2]} allowed"], ran.stdout


def _literal(address: str) -> str:
    return f"[{address}]" if ":" in address else address
