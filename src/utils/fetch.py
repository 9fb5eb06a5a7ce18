"""HTTP(S) downloads from URLs users give: every address a name resolves to must be public (no
loopback, private, link-local or metadata address) unless allowed, the connection goes to the
address that was checked, redirects are followed a bounded number of times and checked the
same way, and no proxy from the environment is ever used."""
from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)
DEFAULT_PORTS = {"http": 80, "https": 443}


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


def is_public(address: str) -> bool:
    """Whether an address is globally routable unicast (so neither this machine, nor a private
    network, nor a cloud's metadata service, which lives at link-local or private addresses)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check(url: str, allow_private: bool) -> Target:
    """Resolve url's host and check every address. Raises: Refused."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise Refused("only http and https URLs with a host are fetched")
    if parts.username is not None or parts.password is not None:
        raise Refused("credentials in the URL are not supported")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
        found = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (ValueError, OSError, UnicodeError) as exc:
        raise Refused(f"its host does not resolve ({exc})") from None
    addresses = tuple(dict.fromkeys(str(entry[4][0]) for entry in found))
    if not allow_private:
        for address in addresses:
            if not is_public(address):
                raise Refused(f"its host resolves to {address}, which is not a public address")
    path = parts.path or "/"
    return Target(parts.scheme, parts.hostname, port, path + (f"?{parts.query}" if parts.query
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
        url = urljoin(url, location)
    raise Failed("too_many_redirects", f"more than {max_redirects} redirects; the last to {url}")
