"""Which libvirt URIs a host may be reached by: a table of forms, each with the query parameters
it may carry, instead of whatever libvirt would accept (a socket to probe, a file to quote, a
certificate check to skip, a local command to run)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from src import errors
from src.config import Config

_HOST = (r"(?:[A-Za-z0-9][A-Za-z0-9-]{0,62}(?:\.[A-Za-z0-9][A-Za-z0-9-]{0,62})*"
         r"|\[[0-9A-Fa-f:.]+\])")


def _remote(user: bool) -> re.Pattern[str]:
    """//[user@]host[:port]/system: the system daemon of another machine."""
    login = r"(?:[a-z_][a-z0-9_.-]{0,31}@)?" if user else ""
    return re.compile(rf"//{login}{_HOST}(?::[0-9]{{1,5}})?/system")


# Paths a parameter may name: absolute, plain characters only (no percent-escapes for libvirt to
# decode into something else, no separators for another parameter), never `..`.
_PATH = re.compile(r"/[A-Za-z0-9_.@+/-]*")


@dataclass(frozen=True)
class UriForm:
    """One kind of host URI: its shape after `scheme:`, the parameters it may carry (each a
    path under IAAS_HOST_CREDENTIALS_DIR) and the switch it needs, if any."""

    shape: re.Pattern[str]
    params: tuple[str, ...] = ()
    needs: str | None = None  # a Config field that must be on


FORMS = {
    "qemu": UriForm(re.compile(r"///system")),
    "qemu+tls": UriForm(_remote(user=False), ("pkipath",)),
    "qemu+ssh": UriForm(_remote(user=True), ("keyfile", "known_hosts")),
    "qemu+tcp": UriForm(_remote(user=False), needs="allow_insecure_hosts"),
    # libvirt's in-process test driver: it parses the file it names and quotes its first line.
    "test": UriForm(re.compile(r"//(?:/[A-Za-z0-9_.-]+)+"), needs="allow_test_hosts"),
}
# What a form that needs a switch answers while the switch is off.
_REFUSED_UNLESS = {
    "allow_insecure_hosts": lambda uri: errors.InsecureUri(uri=uri),
    "allow_test_hosts": lambda uri: errors.HostUriNotAllowed(uri=uri, reason=(
        "test:// hosts (libvirt's test driver, which reads any file it is given) need "
        "IAAS_ALLOW_TEST_HOSTS=on, for test set-ups only")),
}
# libvirt's parameters that have done harm, named in the refusal (every other is refused too).
_DANGERS = {
    "no_verify": ": it skips the check of the host's certificate or key",
    "socket": ": it connects to any local socket",
    "command": ": it runs a local program", "netcat": ": it runs a program on the host",
    "proxy": ": it runs a program on the host", "mode": ": it changes how the host is reached",
}
SHAPES = {"qemu": "qemu:///system", "qemu+tls": "qemu+tls://HOST[:PORT]/system",
          "qemu+ssh": "qemu+ssh://[USER@]HOST[:PORT]/system",
          "qemu+tcp": "qemu+tcp://HOST[:PORT]/system", "test": "test:///PATH"}


def check_host_uri(uri: str, config: Config) -> None:
    """Refuse a URI outside the table, with a parameter it does not allow, or naming a path
    outside IAAS_HOST_CREDENTIALS_DIR.

    Raises: HostUriNotAllowed, InsecureUri.
    """
    scheme, found, rest = uri.partition(":")
    form = FORMS.get(scheme) if found else None
    if form is None:
        raise errors.HostUriNotAllowed(uri=uri, reason=f"use one of {', '.join(SHAPES.values())}")
    where, _, query = rest.partition("?")
    if not form.shape.fullmatch(where) or ".." in where.split("/"):
        raise errors.HostUriNotAllowed(uri=uri, reason=f"expected {SHAPES[scheme]}")
    if form.needs is not None and not getattr(config, form.needs):
        raise _REFUSED_UNLESS[form.needs](uri)
    if "?" in rest:
        _check_params(uri, query, form.params, config.host_credentials_dir)


def _check_params(uri: str, query: str, allowed: tuple[str, ...], folder: Path) -> None:
    seen: set[str] = set()
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name not in allowed:
            only = f"only {', '.join(allowed)} may be given" if allowed else "it takes none"
            why = _DANGERS.get(name, "")
            raise errors.HostUriNotAllowed(uri=uri, reason=(
                f"the parameter {name!r} is refused{why} ({only} for this scheme)"))
        if name in seen:
            raise errors.HostUriNotAllowed(uri=uri, reason=f"{name} is given twice")
        seen.add(name)
        if not _PATH.fullmatch(value) or ".." in value.split("/") or not _under(value, folder):
            raise errors.HostUriNotAllowed(uri=uri, reason=(
                f"{name} must be an absolute path under IAAS_HOST_CREDENTIALS_DIR ({folder})"))


def _under(path: str, folder: Path) -> bool:
    """Whether path, links followed, lies inside folder (links followed too)."""
    real, root = os.path.realpath(path), os.path.realpath(folder)
    return real == root or real.startswith(root.rstrip("/") + "/")
