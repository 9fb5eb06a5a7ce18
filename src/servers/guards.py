"""What both servers hold every client to: a header deadline, a whole-request deadline, a
minimum rate for an upload's body, and a cap on one address's open connections."""
from __future__ import annotations

import ipaddress
import logging
import threading
import uuid
from dataclasses import dataclass

from src import errors
from src.api.body_stream import BodyTooSlow
from src.api.failures import refusal
from src.config import Config

log = logging.getLogger("iaas.serve")
RETRY_AFTER_S = 1


@dataclass(frozen=True)
class Limits:
    """The serving settings both servers apply (src/config.py SETTINGS)."""

    header_timeout_s: float
    request_timeout_s: float
    upload_min_rate: int  # bytes/s, over each window of request_timeout_s
    per_address: int

    @classmethod
    def of(cls, config: Config) -> Limits:
        return cls(min(config.header_timeout_s, config.request_timeout_s),
                   config.request_timeout_s, config.upload_min_rate,
                   config.max_connections_per_address)


class RateWindow:
    """An upload body's pace: at least rate bytes a second over each window of window_s (a
    deadline for the whole body cannot be known: a chunked one announces no size)."""

    def __init__(self, rate: int, window_s: float, now: float) -> None:
        self.rate = rate
        self.window_s = window_s
        self._ends = now + window_s
        self._at_start = 0  # bytes received when the window began

    def left(self, now: float, received: int) -> float:
        """Seconds left in the window, received being every byte of the body so far; at its
        end the window is judged and the next one begins.

        Raises: BodyTooSlow when the window that ended brought too few bytes.
        """
        if now >= self._ends:
            if received - self._at_start < self.rate * self.window_s:
                raise BodyTooSlow(self.rate, self.window_s)
            self._ends, self._at_start = now + self.window_s, received
        return self._ends - now


IPV6_CLIENT_PREFIX = 64  # the block one IPv6 client is given (RFC 6177): it holds them all


def client_of(address: str) -> str:
    """Who holds a connection from address: an IPv4 address itself, an IPv6 one's /64 (a host
    with a /64 picks a new address for each connection at will). An IPv4-mapped IPv6 address
    (a dual-stack socket's view of an IPv4 client) is that IPv4 client."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])  # a link-local's %zone
    except ValueError:
        return address  # not an IP (a unix socket's peer): counted as given
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_CLIENT_PREFIX), strict=False))
    return str(ip)


class ConnectionsByAddress:
    """Open connections by client (client_of: an IPv4 address, an IPv6 /64), at most cap of
    one (a client that holds them all, say with headers that never end, must not shut every
    other client out)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}
        self._refusing: set[str] = set()

    def take(self, address: str) -> bool:
        """Count one more connection of address's client; False (nothing counted) at its cap."""
        client = client_of(address)
        with self._lock:
            held = self._open.get(client, 0)
            if held >= self.cap:
                if client not in self._refusing:
                    self._refusing.add(client)
                    log.warning("refusing connections of %s: it holds %d", client, held)
                return False
            self._open[client] = held + 1
            return True

    def give_back(self, address: str) -> None:
        client = client_of(address)
        with self._lock:
            held = self._open.pop(client, 1) - 1
            if held > 0:
                self._open[client] = held
            self._refusing.discard(client)

    def count(self, address: str) -> int:
        """Connections of address's client open now."""
        with self._lock:
            return self._open.get(client_of(address), 0)


def raw_answer(error: errors.ApiError, retry_after_s: int = RETRY_AFTER_S) -> bytes:
    """The whole HTTP answer, in the API's JSON envelope, to a connection no request of the
    app will answer (refused before it is read): the client should retry shortly."""
    response = refusal(error)
    body = b"".join(response.encoded())
    head = [f"HTTP/1.0 {response.wsgi_status()}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", f"Retry-After: {retry_after_s}",
            f"X-Request-Id: req-{uuid.uuid4().hex}",
            *(f"{name}: {value}" for name, value in response.headers
              if name != "Retry-After"), "Connection: close"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def too_many_connections(limits: Limits) -> bytes:
    return raw_answer(errors.TooManyConnections(limit=limits.per_address))
