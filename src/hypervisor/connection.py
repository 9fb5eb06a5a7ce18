"""One libvirt connection: reopened with backoff, kept alive, watched for lifecycle events.

Every libvirt call goes through `Connection.call` (or `on_domain`), which counts it and turns
libvirtError into HypervisorError, DomainNotFound or HypervisorUnavailable.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import libvirt  # type: ignore[import-untyped]

from src.hypervisor.errors import DomainNotFound, HypervisorError, HypervisorUnavailable
from src.hypervisor.summaries import summarise

log = logging.getLogger(__name__)

T = TypeVar("T")
KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT = 5, 3  # a silent daemon is dropped after about 20 s
MAX_BACKOFF_S = 8.0  # reconnect attempts never wait longer, so recovery stays well under 30 s
_UNREACHABLE = {libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_SYSTEM_ERROR}
# What a lifecycle event says happened, as the reconciler reads it.
LIFECYCLE_EVENTS = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "pmsuspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}
LifecycleListener = Callable[[str, str], None]


class _Raise:
    """Marker: a missing domain is an error (DomainNotFound)."""


RAISE = _Raise()


def _silence_libvirt_stderr(_ctx: Any, _err: Any) -> None:
    """libvirt prints every error to stderr by default; we log them where they are handled."""


libvirt.registerErrorHandler(_silence_libvirt_stderr, None)

_event_loop_guard = threading.Lock()
_event_loop_running = False


def _ensure_event_loop() -> None:
    """Run libvirt's default event loop on one daemon thread: events and keepalive need it.

    It must be registered before the first connection is opened, so every Connection calls this.
    """
    global _event_loop_running
    with _event_loop_guard:
        if _event_loop_running:
            return
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run_event_loop, name="libvirt-events", daemon=True).start()
        _event_loop_running = True


def _run_event_loop() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


def is_missing(exc: libvirt.libvirtError) -> bool:
    return bool(exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN)


@contextmanager
def _translated(connecting: bool = False) -> Iterator[None]:
    try:
        yield
    except libvirt.libvirtError as exc:
        if is_missing(exc):
            raise DomainNotFound(str(exc), summarise(exc)) from exc
        if connecting or exc.get_error_code() in _UNREACHABLE:
            raise HypervisorUnavailable(str(exc), summarise(exc)) from exc
        raise HypervisorError(str(exc), summarise(exc)) from exc


def _alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


class Connection:
    """The connection to one libvirt URI; safe to share between threads."""

    def __init__(self, uri: str) -> None:
        _ensure_event_loop()
        self.uri = uri
        self.calls = 0  # libvirt API calls made by every thread, read by benchmarks and tests
        self._mine = threading.local()  # .calls: those made by the thread reading it
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()
        self._backoff_s = 0.0
        self._retry_at = 0.0
        self._last_failure = self._last_summary = ""
        self._listener: LifecycleListener | None = None
        self._on_connect: Callable[[], None] | None = None
        self._callback_id = -1
        self._watchdog: threading.Thread | None = None
        self._closed = threading.Event()

    def call(self, func: Callable[[libvirt.virConnect], T], libvirt_calls: int = 1) -> T:
        """func(connection), counted and with libvirt's errors translated.

        Raises: HypervisorUnavailable, DomainNotFound, HypervisorError.
        """
        with _translated():
            self.count(libvirt_calls)
            conn = self._connection()
            try:
                return func(conn)
            except libvirt.libvirtError as exc:
                # The daemon died after the liveness check: libvirt then says "client socket
                # is closed", an internal error, but the host is away, not the step failed.
                if not is_missing(exc) and not _alive(conn):
                    raise HypervisorUnavailable(str(exc), summarise(exc)) from exc
                raise

    def count(self, libvirt_calls: int) -> None:
        """Count libvirt calls, in total and for this thread: `call` counts those it declares, a
        scan adds one per domain it lists."""
        self.calls += libvirt_calls
        self._mine.calls = self.thread_calls + libvirt_calls

    @property
    def thread_calls(self) -> int:
        """libvirt API calls made by the calling thread: a request's own calls, told apart from
        the reconciler's and the task runner's, which share the connection."""
        return int(getattr(self._mine, "calls", 0))

    def on_domain(self, uuid: str, func: Callable[[libvirt.virDomain], T],
                  missing: T | _Raise = RAISE) -> T:
        """func(domain) for the domain with uuid; `missing` is returned when there is none.

        Raises: DomainNotFound (when missing is RAISE), HypervisorError.
        """
        def run(conn: libvirt.virConnect) -> T:
            try:
                return func(conn.lookupByUUIDString(uuid))
            except libvirt.libvirtError as exc:
                # (also when it vanished between the lookup and the call: a migration's
                # incoming domain does when the migration is aborted)
                if is_missing(exc) and not isinstance(missing, _Raise):
                    return missing
                raise
        return self.call(run, libvirt_calls=2)

    def _connection(self) -> libvirt.virConnect:
        """The live connection, reopened when it died; failures back off instead of hanging.

        Raises: HypervisorUnavailable while libvirtd cannot be reached.
        """
        with self._lock:
            if self._conn is not None and self._conn.isAlive():
                return self._conn
            if self._closed.is_set():
                raise HypervisorUnavailable("the connection was closed")
            now = time.monotonic()
            if now < self._retry_at:
                raise HypervisorUnavailable(f"reconnecting ({self._last_failure})",
                                            f"reconnecting ({self._last_summary})")
            self._drop_dead_connection()
            try:
                with _translated(connecting=True):
                    conn = libvirt.open(self.uri)
            except HypervisorUnavailable as exc:
                self._backoff_s = min(max(self._backoff_s * 2, 0.5), MAX_BACKOFF_S)
                self._retry_at = now + self._backoff_s
                self._last_failure, self._last_summary = str(exc), exc.summary
                raise
            if self._backoff_s:
                log.warning("libvirt connection to %s re-established", self.uri)
            self._backoff_s = 0.0
            self._conn = conn
            self._prepare(conn)
            on_connect = self._on_connect
        if on_connect is not None:
            on_connect()
        return conn

    def _prepare(self, conn: libvirt.virConnect) -> None:
        try:
            conn.setKeepAlive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)
        except libvirt.libvirtError:
            pass  # local drivers (test:///) have no keepalive; nothing to keep alive
        if self._listener is not None:
            self._callback_id = conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle_event, None)

    def _drop_dead_connection(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.close()
        except libvirt.libvirtError:
            pass  # it is dead already; closing only frees our side
        self._conn = None

    def _lifecycle_event(self, _conn: Any, domain: Any, event: int, _detail: int,
                         _opaque: Any) -> None:
        listener = self._listener
        if listener is not None:
            listener(domain.UUIDString(), LIFECYCLE_EVENTS.get(event, "unknown"))

    def watch(self, listener: LifecycleListener, on_connect: Callable[[], None]) -> None:
        """Deliver (uuid, event) for every domain lifecycle event, on every (re)connection.

        on_connect runs after each successful (re)connection, so the caller can catch up on
        what happened while events could not arrive. A watchdog thread reconnects with backoff.
        Both callbacks run on libvirt's threads: they must only queue work, never block.
        """
        with self._lock:
            self._listener = listener
            self._on_connect = on_connect
            if self._conn is not None and self._conn.isAlive():
                self._prepare(self._conn)
        self._watchdog = threading.Thread(target=self._keep_connected, name="libvirt-watchdog",
                                          daemon=True)
        self._watchdog.start()

    def _keep_connected(self) -> None:
        while not self._closed.wait(1.0):
            try:
                self._connection()
            except HypervisorUnavailable:
                continue  # _connection recorded the failure and the next attempt time

    @property
    def connected(self) -> bool:
        conn = self._conn
        return conn is not None and bool(conn.isAlive())

    def close(self) -> None:
        self._closed.set()
        if self._watchdog is not None:
            self._watchdog.join(timeout=5)
        with self._lock:
            if self._conn is not None and self._callback_id >= 0:
                try:
                    self._conn.domainEventDeregisterAny(self._callback_id)
                except libvirt.libvirtError:
                    pass  # a dead connection has no callbacks left to remove
            self._listener = None
            self._drop_dead_connection()
