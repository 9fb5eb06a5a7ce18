"""What the hypervisor layer raises: libvirt's failures in our own words."""
from __future__ import annotations

from src.errors import HostFailure


class HypervisorError(HostFailure):
    """A libvirt call failed; message is libvirt's own text (for the log), summary says what
    failed without quoting it (for an answer: libvirt quotes files and host replies)."""

    def __init__(self, message: str, summary: str | None = None) -> None:
        super().__init__(message)
        self.summary = message if summary is None else summary  # our own words need no summary


class DomainNotFound(HypervisorError):
    """No domain with that UUID or name."""


class HypervisorUnavailable(HypervisorError):
    """The libvirt daemon cannot be reached."""


class DeviceNotReleased(HypervisorError):
    """A running guest did not let go of a device within the time it was given; the device is
    still in the domain's live definition (and its persistent one is unchanged)."""


class ShrinkRefused(HypervisorError):
    """A volume would have to shrink to the capacity asked, cutting off its content."""


class LayerInUse(HypervisorError):
    """A volume another volume of its pool is backed by: deleting it would break that chain."""
