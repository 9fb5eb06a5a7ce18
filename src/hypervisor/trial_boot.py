"""A throw-away guest booted and watched until it shows life, stops, or is paused by QEMU."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import libvirt  # type: ignore[import-untyped]

from src.hypervisor.connection import Connection
from src.hypervisor.domains import HALTED, PAUSE_REASONS, destroy_if_running, state_name
from src.hypervisor.errors import DomainNotFound, HypervisorError

POLL_S = 0.2
# A transient domain that libvirt destroys by itself when our connection closes (the process
# killed), on top of the destroy that always follows the watch.
_START_FLAGS = libvirt.VIR_DOMAIN_START_AUTODESTROY | libvirt.VIR_DOMAIN_START_VALIDATE
_STOPPED = ("shutoff", "crashed")


@dataclass(frozen=True)
class TrialBoot:
    """What the guest did: `booted` (its console printed the marker), `halted` (QEMU paused
    it: the VM error path's paused_by_hypervisor), `stopped`, `refused` (it never started) or
    `silent` (no marker by the deadline); in libvirt's words or ours, after how many seconds."""

    outcome: str
    detail: str
    seconds: float

    @property
    def ran(self) -> bool:
        return self.outcome == "booted"


def trial_boot(uri: str, xml: str, console_log: Path, marker: bytes, deadline_s: float,
               pause: Callable[[float], None] = time.sleep) -> TrialBoot:
    """Start the domain in xml as a transient guest and watch it until console_log holds
    marker, it stops or is paused by QEMU, or deadline_s passes; the domain is destroyed
    whatever happens (pause, between two looks, is the seam tests fail through).

    Raises: HypervisorError when libvirt cannot be reached or asked.
    """
    connection = Connection(uri)
    started = time.monotonic()
    try:
        try:
            domain = connection.call(lambda c: c.createXML(xml, _START_FLAGS))
        except HypervisorError as exc:
            if not connection.connected:
                raise
            return TrialBoot("refused", _first_line(str(exc)), time.monotonic() - started)
        try:
            return _watch(connection, domain, console_log, marker, started, deadline_s, pause)
        finally:
            try:
                connection.call(lambda _c: destroy_if_running(domain))
            except DomainNotFound:
                pass  # a transient domain that stopped is gone already
    finally:
        connection.close()


def _watch(connection: Connection, domain: libvirt.virDomain, console_log: Path, marker: bytes,
           started: float, deadline_s: float, pause: Callable[[float], None]) -> TrialBoot:
    while True:
        try:
            state, reason = connection.call(lambda _c: domain.state())
        except DomainNotFound:  # a transient domain that stopped is undefined at once
            return TrialBoot("stopped", "it stopped by itself", time.monotonic() - started)
        elapsed = time.monotonic() - started
        name = state_name(state, reason)
        if name == HALTED:
            why = PAUSE_REASONS.get(reason, "unknown")
            return TrialBoot("halted", f"QEMU paused it (libvirt's reason: {why})", elapsed)
        if name in _STOPPED:
            return TrialBoot("stopped", f"it stopped by itself ({name})", elapsed)
        if console_log.is_file() and marker in console_log.read_bytes():
            return TrialBoot("booted", f"it printed {marker.decode()}", elapsed)
        if elapsed >= deadline_s:
            return TrialBoot("silent", f"it printed nothing within {deadline_s:.0f} s", elapsed)
        pause(POLL_S)


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0][:300] if lines else "no message"
