"""Talk to a guest's serial console through libvirt (the tiny image runs a root shell there): type
a command, read its answer. Tests and benchmarks read the guest's uptime this way."""
from __future__ import annotations

import re
import threading
import time

import libvirt  # type: ignore[import-untyped]

UPTIME = re.compile(rb"IAAS-UPTIME=(\d+\.\d+)")
# Built from two pieces by the guest's shell, so the echo of the typed line never matches.
UPTIME_COMMAND = "echo IAAS-UP''TIME=$(cut -d' ' -f1 /proc/uptime)"


def ask(conn: libvirt.virConnect, uuid: str, command: str, answer: re.Pattern[bytes],
        timeout_s: float = 30.0) -> re.Match[bytes]:
    """Type command (and Enter) on the domain's serial console and wait for answer.

    Raises: AssertionError naming what the console showed when answer does not come in time.
    """
    domain = conn.lookupByUUIDString(uuid)
    stream = conn.newStream(0)  # blocking: read on a thread of its own, until aborted
    domain.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
    seen = bytearray()
    arrived = threading.Condition()

    def read() -> None:
        try:
            while chunk := stream.recv(4096):
                with arrived:
                    seen.extend(chunk)
                    arrived.notify_all()
        except libvirt.libvirtError:
            pass  # aborted below, or the console went away

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        stream.send(f"\n{command}\n".encode())
        deadline = time.monotonic() + timeout_s
        with arrived:
            while (found := answer.search(bytes(seen))) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {answer.pattern!r} on the console within "
                                         f"{timeout_s} s; it showed: {bytes(seen[-500:])!r}")
                arrived.wait(left)
        return found
    finally:
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass  # the console closed on its side
        reader.join(timeout=5)


def uptime_s(conn: libvirt.virConnect, uuid: str, timeout_s: float = 30.0) -> float:
    """The guest's own uptime (/proc/uptime), asked on its console."""
    return float(ask(conn, uuid, UPTIME_COMMAND, UPTIME, timeout_s).group(1))
