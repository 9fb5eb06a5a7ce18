"""The per-client connection cap: an IPv4 address is one client, an IPv6 /64 is one client."""
from __future__ import annotations

import pytest

from src.servers.guards import ConnectionsByAddress, client_of


@pytest.mark.parametrize(("address", "client"), [
    ("203.0.113.7", "203.0.113.7"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ("::1", "::/64"),
    ("fe80::1%eth0", "fe80::/64"),
    ("::ffff:203.0.113.7", "203.0.113.7"),  # an IPv4 client seen by a dual-stack socket
    ("not-an-address", "not-an-address"),
])
def test_who_a_connection_counts_for(address: str, client: str) -> None:
    assert client_of(address) == client


def test_a_client_with_a_slash_64_cannot_get_around_the_cap() -> None:
    counts = ConnectionsByAddress(cap=3)
    taken = [counts.take(f"2001:db8:0:7::{n:x}") for n in range(1, 6)]  # a new address each
    assert taken == [True, True, True, False, False]
    assert counts.count("2001:db8:0:7::ffff") == 3  # any address of the /64 shows the same
    assert counts.take("2001:db8:0:8::1")  # the next /64 is another client
    counts.give_back("2001:db8:0:7::2")  # one closed, whichever of its addresses it used
    assert counts.take("2001:db8:0:7::99") and not counts.take("2001:db8:0:7::9a")


def test_ipv4_addresses_are_counted_one_by_one() -> None:
    counts = ConnectionsByAddress(cap=2)
    assert [counts.take("198.51.100.1") for _ in range(3)] == [True, True, False]
    assert counts.take("198.51.100.2") and counts.take("::ffff:198.51.100.2")
    assert not counts.take("198.51.100.2")  # mapped or not, one client
    assert counts.count("198.51.100.1") == 2
