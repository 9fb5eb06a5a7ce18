"""Which addresses an image import may reach, and what a URL must look like."""
from __future__ import annotations

import pytest

from src.services.accounts.keypairs import fingerprint
from src.utils import fetch


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
    ("http://127.0.0.1:8000/x", "'127.0.0.1' does not resolve to public addresses only"),
    ("http://[::1]/x", "'::1' does not resolve to public addresses only"),
    ("http://[64:ff9b::a9fe:a9fe]/x", "does not resolve to public addresses only"),
    ("http://example.org:99999/x", "port"),
])
def test_refused_urls(url: str, reason: str) -> None:
    with pytest.raises(fetch.Refused, match=reason):
        fetch.check(url, allow_private=False)


def test_a_refusal_names_the_host_never_the_address_it_resolves_to() -> None:
    """Else a member could read where internal names point (a DNS oracle)."""
    with pytest.raises(fetch.Refused) as refused:
        fetch.check("http://localhost:8000/x", allow_private=False)
    assert "localhost" in str(refused.value)
    assert "127.0.0.1" not in str(refused.value) and "::1" not in str(refused.value)


def test_the_setting_allows_private_addresses() -> None:
    target = fetch.check("http://127.0.0.1:8000/a/b?c=d", allow_private=True)
    assert (target.host, target.port, target.path, target.addresses) == (
        "127.0.0.1", 8000, "/a/b?c=d", ("127.0.0.1",))


def test_fingerprints_are_those_ssh_keygen_prints() -> None:
    # ssh-keygen -lf of this key printed SHA256:mLTOCxakU70Aw5OP5DyOeYQi+1Sn+JACZruMucmPxpY
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL8MA5O06e6hGBoxdxQI/tB709j1rZvLvFNdkwcOfISp laptop"
    assert fingerprint(key) == "SHA256:mLTOCxakU70Aw5OP5DyOeYQi+1Sn+JACZruMucmPxpY"
