"""HTTP(S) downloads from URLs users give: every address a name resolves to must be public (no
loopback, private, link-local or metadata address) unless allowed, the connection goes to the
address that was checked, redirects are followed a bounded number of times and checked the
same way, and no proxy from the environment is ever used."""
from __future__ import annotations

import http.client
import ipaddress
import logging
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

log = logging.getLogger(__name__)
MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)
DEFAULT_PORTS = {"http": 80, "https": 443}


# One answer for a name that does not resolve and one that resolves to an address refused, and
# never the address: the caller must not learn what internal names exist or where they point.
_NOT_PUBLIC = ("its host {host!r} does not resolve to public addresses only (addresses of this "
               "machine, private, link-local, shared, reserved and transitional ranges are never "
               "fetched)")


class Refused(Exception):
    """The URL may not be fetched (scheme, credentials, an address that is not public)."""


class Failed(Exception):
    """The download did not work: code is download_failed or too_many_redirects."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class Target:
    """A URL split for a request, with the addresses its host resolved to (all checked)."""

    scheme: str
    host: str
    port: int
    path: str
    addresses: tuple[str, ...]


# IPv6 ranges that carry an IPv4 address in their last 32 bits (6to4 in bits 16-48): the packet
# ends up at that IPv4 address, so it is the one checked.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052's well-known prefix
# Deprecated or local-use transition ranges whose meaning is the local network's own: never
# fetched, whatever they embed.
_REFUSED_V6 = tuple(ipaddress.IPv6Network(net) for net in (
    "::/96",  # IPv4-compatible (deprecated by RFC 4291)
    "::ffff:0:0:0/96",  # SIIT's IPv4-translated addresses (RFC 2765)
    "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): any mapping the network chose
    "fec0::/10",  # site-local (deprecated by RFC 3879)
))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, NAT64 or 6to4 address leads to, if it is one."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def is_public(address: str) -> bool:
    """Whether an address is globally routable unicast (so neither this machine, nor a private
    network, nor a cloud's metadata service, which lives at link-local or private addresses):
    an IPv6 address embedding an IPv4 one is judged by that, deprecated and transitional ranges
    are refused."""
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(
        address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in network for network in _REFUSED_V6):
            return False
        ip = _embedded_ipv4(ip) or ip
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


def check(url: str, allow_private: bool) -> Target:
    """Resolve url's host and check every address. Raises: Refused."""
    if not url.isascii() or any(char.isspace() or not char.isprintable() for char in url):
        raise Refused("it is not a valid URL (it has spaces, control or non-ASCII characters)")
    try:
        parts = urlsplit(url)
    except ValueError:  # a broken IPv6 literal
        raise Refused("it is not a valid URL") from None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise Refused("only http and https URLs with a host are fetched")
    if parts.username is not None or parts.password is not None:
        raise Refused("credentials in the URL are not supported")
    host = parts.hostname
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise Refused("its port is not a number from 0 to 65535") from None
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (ValueError, OSError, UnicodeError) as exc:
        log.info("refused %s: %s does not resolve (%s)", url, host, exc)
        raise Refused(f"its host {host!r} does not resolve" if allow_private
                      else _NOT_PUBLIC.format(host=host)) from None
    addresses = tuple(dict.fromkeys(str(entry[4][0]) for entry in found))
    if not allow_private:
        for address in addresses:
            if not is_public(address):
                log.info("refused %s: %s resolves to %s", url, host, address)
                raise Refused(_NOT_PUBLIC.format(host=host))
    path = parts.path or "/"
    return Target(parts.scheme, host, port, path + (f"?{parts.query}" if parts.query
                                                             else ""), addresses)


class _Pinned(http.client.HTTPConnection):
    """An HTTP connection to one checked address (a second lookup could answer otherwise)."""

    def __init__(self, target: Target, address: str, timeout_s: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout_s)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedTls(_Pinned):
    """HTTPS to one checked address, the certificate checked against the URL's host name."""

    _context = ssl.create_default_context()

    def connect(self) -> None:
        super().connect()
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.host)


def _connect(target: Target, timeout_s: float) -> http.client.HTTPResponse:
    """GET target from the first of its addresses that answers. Raises: Failed."""
    kind = _PinnedTls if target.scheme == "https" else _Pinned
    problem: Exception | None = None
    for address in target.addresses:
        connection = kind(target, address, timeout_s)
        try:
            connection.request("GET", target.path, headers={
                "User-Agent": "iaas-image-import", "Accept-Encoding": "identity"})
            return connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            problem = exc
    raise Failed("download_failed", f"{target.host}:{target.port} did not answer: {problem}")


def open_url(url: str, *, allow_private: bool, timeout_s: float = 60.0,
             max_redirects: int = MAX_REDIRECTS) -> http.client.HTTPResponse:
    """The 200 response of GET url, after at most max_redirects checked redirects.

    Raises: Refused (the URL or a redirect's), Failed (an error status, a redirect loop, no
    answer).
    """
    for _ in range(max_redirects + 1):
        target = check(url, allow_private)
        response = _connect(target, timeout_s)
        if response.status == 200:
            return response
        location = response.getheader("Location")
        response.close()
        if response.status not in REDIRECTS or not location:
            raise Failed("download_failed",
                         f"{target.host} answered HTTP {response.status} {response.reason}")
        try:
            url = urljoin(url, location)
        except ValueError:  # a broken IPv6 literal
            raise Refused(f"{target.host} redirected to something that is not a URL") from None
    raise Failed("too_many_redirects", f"more than {max_redirects} redirects; the last to {url}")
