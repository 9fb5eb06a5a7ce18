"""HTTP(S) downloads from URLs users give: every address a name resolves to must be public by
IANA's special-purpose registries, none of this machine's own and none the operator denies, on
a port allowed; the connection goes to the address that was checked, redirects are followed a
bounded number of times and checked the same way, no proxy from the environment is ever used,
and a watch (src/utils/cutoff.py) holds the server to its deadlines and a minimum rate."""
from __future__ import annotations

import http.client
import logging
import socket
import ssl
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self
from urllib.parse import urljoin, urlsplit

from src.utils.cutoff import Cutoff
from src.utils.host_addresses import THIS_MACHINE, HostAddresses
from src.utils.special_addresses import Address, Network, leads_to, parse, special_block

log = logging.getLogger(__name__)
MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)
DEFAULT_PORTS = {"http": 80, "https": 443}


# One answer for a name that does not resolve and one that resolves to an address refused, and
# never the address: the caller must not learn what internal names exist or where they point.
_NOT_PUBLIC = ("its host {host!r} does not resolve to public addresses only (addresses of this "
               "machine, private, link-local, shared, documentation, reserved and transitional "
               "ranges, and networks the operator denies, are never fetched)")


class Refused(Exception):
    """The URL may not be fetched (scheme, credentials, port, an address that is not public)."""


class Failed(Exception):
    """The download did not work: code is download_failed, too_many_redirects, or the code of
    the reason its cutoff was stopped with; message is the detail, for the server's log."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class Policy:
    """What imports may reach. allow_private lifts the special-purpose registries and this
    machine's own addresses (test set-ups); the ports and the deny-list hold whatever it says."""

    allow_private: bool = False
    ports: tuple[tuple[int, int], ...] = ((80, 80), (443, 443))
    deny: tuple[Network, ...] = ()
    machine: HostAddresses = field(default=THIS_MACHINE, compare=False)

    def port_allowed(self, port: int) -> bool:
        return any(low <= port <= high for low, high in self.ports)

    def why_refused(self, ip: Address) -> str | None:
        """Why ip may not be reached (for the log), or None. Raises: OSError (this machine's
        addresses cannot be read)."""
        judged = {ip, leads_to(ip)}  # the address, and the IPv4 one it may carry
        for one in judged:
            denied = next((net for net in self.deny if one.version == net.version
                           and one in net), None)
            if denied is not None:
                return f"{one} lies in IAAS_IMPORT_DENY's {denied}"
        if self.allow_private:
            return None
        block = special_block(ip)
        if block is not None:
            return f"{ip} is special-purpose ({block})"
        if any(self.machine.holds(one) for one in judged):
            return f"{ip} is an address of this machine"
        return None


@dataclass(frozen=True)
class Target:
    """A URL split for a request, with the addresses its host resolved to (all checked)."""

    scheme: str
    host: str
    port: int
    path: str
    addresses: tuple[str, ...]


def is_public(address: str) -> bool:
    """Whether an address is public unicast by IANA's registries (this machine's own and the
    deny-list aside: see Policy). Raises: ValueError."""
    return special_block(parse(address)) is None


def check(url: str, policy: Policy) -> Target:
    """Resolve url's host and check its port and every address. Raises: Refused."""
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
        port = DEFAULT_PORTS[parts.scheme] if parts.port is None else parts.port
    except ValueError:
        raise Refused("its port is not a number from 0 to 65535") from None
    if not policy.port_allowed(port):
        raise Refused(f"port {port} is not one imports may use (IAAS_IMPORT_PORTS)")
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (ValueError, OSError, UnicodeError) as exc:
        log.info("refused %s: %s does not resolve (%s)", url, host, exc)
        raise Refused(f"its host {host!r} does not resolve" if policy.allow_private
                      else _NOT_PUBLIC.format(host=host)) from None
    addresses = tuple(dict.fromkeys(str(entry[4][0]) for entry in found))
    for address in addresses:
        try:
            why = policy.why_refused(parse(address))
        except OSError as exc:  # fail closed: nothing is fetched while they are unknown
            log.error("refused %s: this machine's addresses cannot be read (%s)", url, exc)
            raise Refused("this server cannot read its own addresses now; retry later") from None
        if why is not None:
            log.info("refused %s: %s resolves to %s", url, host, why)
            raise Refused(_NOT_PUBLIC.format(host=host))
    path = parts.path or "/"
    return Target(parts.scheme, host, port, path + (f"?{parts.query}" if parts.query
                                                             else ""), addresses)


class _Pinned(http.client.HTTPConnection):
    """An HTTP connection to one checked address (a second lookup could answer otherwise),
    its socket watched by the download's cutoff from the moment it exists."""

    def __init__(self, target: Target, address: str, timeout_s: float, cutoff: Cutoff) -> None:
        super().__init__(target.host, target.port, timeout=timeout_s)
        self._address = address
        self._timeout_s = timeout_s
        self._cutoff = cutoff

    def connect(self) -> None:
        family = socket.AF_INET6 if ":" in self._address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._cutoff.attach(sock)
            # A connect waits no longer than the headers may take in all.
            sock.settimeout(min(self._timeout_s, self._cutoff.header_time_left()))
            sock.connect((self._address, self.port))
            sock.settimeout(self._timeout_s)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class _PinnedTls(_Pinned):
    """HTTPS to one checked address, the certificate checked against the URL's host name."""

    _context = ssl.create_default_context()

    def connect(self) -> None:
        super().connect()
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.host)


def _connect(target: Target, timeout_s: float, cutoff: Cutoff) -> http.client.HTTPResponse:
    """GET target from the first of its addresses that answers. Raises: Failed."""
    kind = _PinnedTls if target.scheme == "https" else _Pinned
    problem: Exception | None = None
    for address in target.addresses:
        connection = kind(target, address, timeout_s, cutoff)
        try:
            connection.request("GET", target.path, headers={
                "User-Agent": "iaas-image-import", "Accept-Encoding": "identity"})
            response = connection.getresponse()
            if cutoff.reason is not None:  # headers cut short by a shutdown read as complete
                response.close()
                raise Failed(*cutoff.reason)
            return response
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            if cutoff.reason is not None:
                raise Failed(*cutoff.reason) from None
            problem = exc
    raise Failed("download_failed", f"{target.host}:{target.port} did not answer: {problem}")


class Download:
    """A 200 response's body, read as it comes, each piece counted for the minimum rate; a
    body the cutoff ended is a failure, never a short success."""

    def __init__(self, response: http.client.HTTPResponse, cutoff: Cutoff) -> None:
        self.length = response.length  # announced (Content-Length), or None
        self.size = 0
        self._response = response
        self._cutoff = cutoff

    def read1(self, size: int) -> bytes:
        """What has come, up to size bytes; b"" at the body's end. Raises: Failed."""
        try:
            chunk = self._response.read1(size)
        except (OSError, http.client.HTTPException) as exc:
            self._raise_if_cut()
            raise Failed("download_failed", f"the download broke off after {self.size} bytes: "
                         f"{exc or type(exc).__name__}") from None
        self._raise_if_cut()  # a socket shut down reads as the end of the body
        self.size += len(chunk)
        self._cutoff.count(len(chunk))
        if not chunk and self.length is not None and self.size < self.length:
            raise Failed("download_failed", f"the connection closed after {self.size} of "
                         f"{self.length} bytes")
        return chunk

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def _raise_if_cut(self) -> None:
        if self._cutoff.reason is not None:
            raise Failed(*self._cutoff.reason)


def open_url(url: str, policy: Policy, cutoff: Cutoff, *, timeout_s: float = 60.0,
             max_redirects: int = MAX_REDIRECTS) -> Download:
    """The body of GET url's 200 response, after at most max_redirects checked redirects, all
    within the cutoff's header deadline; timeout_s bounds any one read.

    Raises: Refused (the URL or a redirect's), Failed (an error status, a redirect loop, no
    answer, the cutoff's reason).
    """
    for _ in range(max_redirects + 1):
        target = check(url, policy)
        response = _connect(target, timeout_s, cutoff)
        if response.status == 200:
            cutoff.headers_done()
            return Download(response, cutoff)
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
