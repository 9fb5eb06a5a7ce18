"""What the hypervisor layer raises: libvirt's failures in our own words."""
from __future__ import annotations

from src.errors import HostFailure


class HypervisorError(HostFailure):
    """A libvirt call failed; message is libvirt's own text."""


class DomainNotFound(HypervisorError):
    """No domain with that UUID or name."""


class HypervisorUnavailable(HypervisorError):
    """The libvirt daemon cannot be reached."""
