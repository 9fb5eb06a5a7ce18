"""libvirt's failures in a few words of our own: what failed, never the file, path or reply it
quotes (libvirt's test driver quotes the first line of the file it was given)."""
from __future__ import annotations

import errno
import os

import libvirt  # type: ignore[import-untyped]

_BY_CODE = {
    libvirt.VIR_ERR_AUTH_FAILED: "authentication failed",
    libvirt.VIR_ERR_AUTH_CANCELLED: "authentication failed",
    libvirt.VIR_ERR_AUTH_UNAVAILABLE: "no authentication method is available",
    libvirt.VIR_ERR_NO_CONNECT: "no libvirt driver takes this URI",
    libvirt.VIR_ERR_XML_ERROR: "the test driver could not read a host description there",
    libvirt.VIR_ERR_XML_DETAIL: "the test driver could not read a host description there",
    libvirt.VIR_ERR_RPC: "the remote protocol failed (the daemon closed the connection, or "
                         "what answers is not libvirt)",
    libvirt.VIR_ERR_OPERATION_TIMEOUT: "libvirt timed out",
}
# A system error (libvirt's code VIR_ERR_SYSTEM_ERROR) carries the errno in int1.
_BY_ERRNO = {
    errno.ECONNREFUSED: "connection refused",
    errno.ETIMEDOUT: "connection timed out",
    errno.EHOSTUNREACH: "no route to the host",
    errno.ENETUNREACH: "no route to the host",
    errno.ECONNRESET: "connection reset (for qemu+ssh://: ssh could not log in, or refused the "
                      "host's key)",
    errno.ENOENT: "a file libvirt needs is missing (for qemu+tls://: cacert.pem, clientcert.pem "
                  "or clientkey.pem in pkipath)",
    errno.EACCES: "permission denied on a file libvirt needs",
}


def summarise(exc: libvirt.libvirtError) -> str:
    """What failed, for an API answer; the caller logs str(exc) in full."""
    code = exc.get_error_code()
    if code == libvirt.VIR_ERR_SYSTEM_ERROR:
        number = exc.get_int1() or 0
        what = _BY_ERRNO.get(number) or (f"system error: {os.strerror(number)}" if number > 0
                                         else "system error")
    else:
        what = _BY_CODE.get(code, "libvirt failed")
    return f"{what} (libvirt error {code})"
