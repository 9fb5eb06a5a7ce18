"""What members may read of host-side failures: our own words, never host paths or URIs.

Admins and the server log keep the full text; the request id joins the two.
"""
from __future__ import annotations

import re

# An absolute path ('/var/lib/...') or a URI ('qemu+tls://host/system') inside a message.
_HOST_DETAIL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s'\"]+|(?<![\w.~-])/[^\s'\",;)]+")
HIDDEN = "<hidden>"


def redact(message: str) -> str:
    """message with every host path and URI replaced by <hidden>."""
    return _HOST_DETAIL.sub(HIDDEN, message)
