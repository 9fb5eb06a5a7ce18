"""Which IP addresses are public unicast, from IANA's special-purpose address registries written
out here (the interpreter's `is_global` follows whichever tables its release shipped with)."""
from __future__ import annotations

import ipaddress

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# IANA IPv4 Special-Purpose Address Registry, and the multicast block beside it. Every block is
# refused, the few the registry marks globally reachable included: they are anycast services
# (PCP, TURN, AS112, AMT), never where an image is served from.
IPV4_SPECIAL: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "RFC 791: this network"),
    ("10.0.0.0/8", "RFC 1918: private use"),
    ("100.64.0.0/10", "RFC 6598: shared address space (carrier-grade NAT)"),
    ("127.0.0.0/8", "RFC 1122: loopback"),
    ("169.254.0.0/16", "RFC 3927: link local (cloud metadata services)"),
    ("172.16.0.0/12", "RFC 1918: private use"),
    ("192.0.0.0/24", ("RFC 6890: IETF protocol assignments (RFC 7335 service continuity, "
                     "RFC 7600 dummy 192.0.0.8, RFC 7723 PCP, RFC 8155 TURN, RFC 8880 NAT64 "
                     "discovery)")),
    ("192.0.2.0/24", "RFC 5737: documentation (TEST-NET-1)"),
    ("192.31.196.0/24", "RFC 7535: AS112-v4"),
    ("192.52.193.0/24", "RFC 7450: AMT"),
    ("192.88.99.0/24", "RFC 7526: deprecated 6to4 relay anycast (RFC 6751 6a44 relay)"),
    ("192.168.0.0/16", "RFC 1918: private use"),
    ("192.175.48.0/24", "RFC 7534: AS112 direct delegation"),
    ("198.18.0.0/15", "RFC 2544: benchmarking"),
    ("198.51.100.0/24", "RFC 5737: documentation (TEST-NET-2)"),
    ("203.0.113.0/24", "RFC 5737: documentation (TEST-NET-3)"),
    ("224.0.0.0/4", "RFC 5771: multicast"),
    ("240.0.0.0/4", "RFC 1112: reserved (255.255.255.255, RFC 8190: limited broadcast)"),
)

# IANA IPv6 Special-Purpose Address Registry, refused whole likewise. Outside 2000::/3 (RFC 4291
# global unicast) nothing is public either: that rule also refuses multicast ff00::/8, the
# deprecated site-local fec0::/10 and IPv4-compatible ::/96, and whatever IANA has not assigned.
IPV6_SPECIAL: tuple[tuple[str, str], ...] = (
    ("::/128", "RFC 4291: unspecified"),
    ("::1/128", "RFC 4291: loopback"),
    ("64:ff9b:1::/48", "RFC 8215: local-use IPv4/IPv6 translation"),
    ("100::/64", "RFC 6666: discard-only"),
    ("100:0:0:1::/64", "RFC 9780: dummy prefix"),
    ("2001::/23", ("RFC 2928: IETF protocol assignments (RFC 4380 Teredo, RFC 5180 benchmarking, "
                  "RFC 7450 AMT, RFC 7535 AS112, RFC 7343 ORCHIDv2, RFC 9374 DETs, anycast)")),
    ("2001:db8::/32", "RFC 3849: documentation"),
    ("2620:4f:8000::/48", "RFC 7534: AS112 direct delegation"),
    ("3fff::/20", "RFC 9637: documentation"),
    ("5f00::/16", "RFC 9602: SRv6 SIDs"),
    ("fc00::/7", "RFC 4193: unique local"),
    ("fe80::/10", "RFC 4291: link-local unicast"),
)
GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")

# IPv6 ranges whose packets end up at the IPv4 address they carry: that address is the one
# judged (so a DNS64 resolver's answers still work, and none leads to a private address).
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052's well-known prefix
SIXTOFOUR = ipaddress.IPv6Network("2002::/16")  # RFC 3056

_V4 = tuple(ipaddress.IPv4Network(block) for block, _ in IPV4_SPECIAL)
_V6 = tuple(ipaddress.IPv6Network(block) for block, _ in IPV6_SPECIAL)


def parse(address: str) -> Address:
    """An address as getaddrinfo gives it (an IPv6 scope such as %eth0 dropped).

    Raises: ValueError.
    """
    return ipaddress.ip_address(address.split("%", 1)[0])


def leads_to(ip: Address) -> Address:
    """The IPv4 address an IPv4-mapped, NAT64 or 6to4 address carries, else ip itself."""
    if isinstance(ip, ipaddress.IPv4Address):
        return ip
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour or ip


def special_block(ip: Address) -> str | None:
    """What the registries say ip is for (e.g. 'RFC 1918: private use'); None when it is public
    unicast. An address that carries an IPv4 one is judged by that."""
    ip = leads_to(ip)
    if isinstance(ip, ipaddress.IPv4Address):
        return next((why for net, (_, why) in zip(_V4, IPV4_SPECIAL, strict=True) if ip in net),
                    None)
    found = next((why for net, (_, why) in zip(_V6, IPV6_SPECIAL, strict=True) if ip in net),
                 None)
    if found is None and ip not in GLOBAL_UNICAST_V6:
        return "RFC 4291: not global unicast"
    return found


def is_public(address: str) -> bool:
    """Whether an address is public unicast by the registries. Raises: ValueError."""
    return special_block(parse(address)) is None
