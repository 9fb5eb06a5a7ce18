"""Settings: the IAAS_* environment variables, an optional env file, and their defaults."""
from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.vocabulary import QUOTA_RESOURCES

DEFAULT_ENV_FILE = Path(__file__).resolve().parent.parent / "configs" / "iaas.env"

# Domain types libvirt knows (virDomainVirtType); anything else is a typo we refuse at start-up.
DOMAIN_TYPES = frozenset({
    "kvm", "qemu", "test", "xen", "lxc", "uml", "openvz", "vmware", "hyperv",
    "vbox", "phyp", "parallels", "bhyve", "vz", "kqemu", "hvf", "ch",
})
MAX_WAIT_S = 30 * 86400  # the longest a VM may wait for capacity (IAAS_QUEUE_MAX_WAIT, max_wait_s)
MAX_RUNTIME_S = 366 * 86400  # the longest run a VM may ask for (max_runtime_s)
_NETWORK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class ConfigError(ValueError):
    """A setting has a value the server cannot run with."""


@dataclass(frozen=True)
class Config:
    db_path: Path
    libvirt_uri: str = "qemu:///system"
    domain_type: str = "kvm"
    images_dir: Path = Path("/var/lib/libvirt/images")
    instances_dir: Path = Path("/var/lib/libvirt/images/iaas-instances")
    # None: $IAAS_IMAGES_DIR/iaas-volumes, derived in __post_init__ (so a Config made in code
    # keeps its volumes beside its images, never in the system's directory).
    volumes_dir: Path = None  # type: ignore[assignment]
    detach_timeout_s: float = 30.0
    network: str = "default"
    host: str = "127.0.0.1"
    port: int = 8000
    max_builds: int = 4
    reconcile_interval_s: float = 30.0
    lifecycle_events: bool = True
    task_timeout_s: float = 600.0
    cpu_allocation_ratio: float = 4.0
    ram_allocation_ratio: float = 1.0
    admin_token_file: Path = Path("iaas-admin-token")
    prod_threads: int = 16
    max_connections: int = 64  # wsgiref: connections served at once, one thread each
    request_timeout_s: float = 30.0  # wsgiref: a whole request must arrive within this
    max_waits_per_token: int = 4  # long-polls one token may hold open at once
    # Limits a new project starts with (Nova's defaults; no GPUs until an admin grants some).
    default_quota: tuple[int | None, ...] = (10, 20, 51200, 0, 500, 100, 50, 100, 50, 10,
                                               1000, 10)
    disk_allocation_ratio: float = 1.0
    audit_retention_days: int = 90
    task_retention_days: int = 30
    metrics_public: bool = False
    project_max_tasks: int = 8
    task_queue_timeout_s: float = 600.0
    allow_insecure_hosts: bool = False
    allow_test_hosts: bool = False  # test:// hosts: libvirt's test driver reads any file named
    host_credentials_dir: Path = Path("/etc/iaas")  # where a host URI's key and PKI paths lie
    scheduler: str = "spread"
    broker_url: str = ""  # empty: tasks run in the API's own process
    worker_concurrency: int = 2
    image_max_bytes: int = 64 * 1024 ** 3  # an upload or import larger than this is refused
    import_allow_private: bool = False  # imports from loopback, private, link-local addresses
    import_timeout_s: float = 3600.0
    import_ports: str = "80,443"  # ports URL imports may connect to (see import_port_ranges)
    import_deny: str = ""  # CIDRs URL imports never reach, whatever else allows them
    import_header_timeout_s: float = 60.0  # connect + request + status line + headers, in all
    import_min_bytes: int = 1024 ** 2  # a body brings at least this much...
    import_rate_window_s: float = 60.0  # ...in every window of this many seconds
    project_max_imports: int = 1  # URL imports of one project that download at once
    max_uploads_per_project: int = 4  # uploads one project may send at once
    upload_share: float = 0.25  # of the serving threads, what uploads may hold at once
    upload_min_rate: int = 64 * 1024  # bytes/s an upload's body brings over each window
    header_timeout_s: float = 10.0  # request line and headers must arrive within this
    max_connections_per_address: int = 32  # open connections of one client address
    prod_connections: int = 1000  # waitress: open connections in all
    queue_backfill_limit_s: float = 600.0  # a VM waiting longer is never passed by backfill
    queue_max_wait_s: int = 86400  # how long a VM waits for capacity unless its create says
    reservation_tick_s: float = 5.0  # the clock of the capacity queue and of reservations
    reservation_horizon_days: int = 90  # how far ahead a reservation's window may end
    migration_max_mbps: int = 0  # MiB/s a live migration may use; 0: no limit
    migration_timeout_s: float = 600.0
    drain_parallel: int = 2  # migrations one host's drain runs at once

    def __post_init__(self) -> None:
        if self.volumes_dir is None:
            object.__setattr__(self, "volumes_dir", self.images_dir / "iaas-volumes")
        if self.domain_type not in DOMAIN_TYPES:
            raise ConfigError(f"IAAS_DOMAIN_TYPE={self.domain_type!r} is not a libvirt domain type")
        if not _NETWORK_NAME.fullmatch(self.network):
            raise ConfigError(f"IAAS_NETWORK={self.network!r} is not a valid network name")
        if not 1 <= self.max_builds <= 256:
            raise ConfigError("IAAS_MAX_BUILDS must be between 1 and 256")
        if not 0 <= self.port <= 65535:
            raise ConfigError("IAAS_PORT must be between 0 and 65535")
        if not 0.1 <= self.reconcile_interval_s <= 86400:
            raise ConfigError("IAAS_RECONCILE_INTERVAL must be between 0.1 and 86400 seconds")
        if not 1 <= self.prod_threads <= 1024:
            raise ConfigError("IAAS_PROD_THREADS must be between 1 and 1024")
        if not 1 <= self.max_connections <= 4096:
            raise ConfigError("IAAS_MAX_CONNECTIONS must be between 1 and 4096")
        if not 0.1 <= self.request_timeout_s <= 3600:
            raise ConfigError("IAAS_REQUEST_TIMEOUT must be between 0.1 and 3600 seconds")
        if not 0 <= self.max_waits_per_token <= 1024:
            raise ConfigError("IAAS_MAX_WAITS_PER_TOKEN must be between 0 and 1024")
        if not 1 <= self.task_timeout_s <= 86400:
            raise ConfigError("IAAS_TASK_TIMEOUT must be between 1 and 86400 seconds")
        for name, ratio in (("IAAS_CPU_ALLOCATION_RATIO", self.cpu_allocation_ratio),
                            ("IAAS_RAM_ALLOCATION_RATIO", self.ram_allocation_ratio),
                            ("IAAS_DISK_ALLOCATION_RATIO", self.disk_allocation_ratio)):
            if not 0.1 <= ratio <= 64:
                raise ConfigError(f"{name} must be between 0.1 and 64")
        for name, days in (("IAAS_AUDIT_RETENTION_DAYS", self.audit_retention_days),
                           ("IAAS_TASK_RETENTION_DAYS", self.task_retention_days)):
            if not 1 <= days <= 36500:
                raise ConfigError(f"{name} must be between 1 and 36500 days")
        if not 1 <= self.worker_concurrency <= 64:
            raise ConfigError("IAAS_WORKER_CONCURRENCY must be between 1 and 64")
        if self.broker_url and not self.broker_url.startswith(("amqp://", "amqps://")):
            raise ConfigError("IAAS_BROKER_URL must be an amqp:// or amqps:// URL")
        if self.scheduler not in ("spread", "pack"):
            raise ConfigError(f"IAAS_SCHEDULER={self.scheduler!r} must be spread or pack")
        if not 1 <= self.project_max_tasks <= 1024:
            raise ConfigError("IAAS_PROJECT_MAX_TASKS must be between 1 and 1024")
        if not 1 <= self.task_queue_timeout_s <= 86400:
            raise ConfigError("IAAS_TASK_QUEUE_TIMEOUT must be between 1 and 86400 seconds")
        if not 1 <= self.image_max_bytes <= 16 * 1024 ** 4:
            raise ConfigError("IAAS_IMAGE_MAX_BYTES must be between 1 and 16 TiB")
        if not 1 <= self.import_timeout_s <= 7 * 86400:
            raise ConfigError("IAAS_IMPORT_TIMEOUT must be between 1 and 604800 seconds")
        if not 1 <= self.max_uploads_per_project <= 1024:
            raise ConfigError("IAAS_MAX_UPLOADS_PER_PROJECT must be between 1 and 1024")
        self._check_imports()
        self._check_queue()
        self._check_serving()
        if not 0 <= self.migration_max_mbps <= 1024 ** 2:
            raise ConfigError("IAAS_MIGRATION_MAX_MBPS must be between 0 and 1048576")
        if not 1 <= self.migration_timeout_s <= 7 * 86400:
            raise ConfigError("IAAS_MIGRATION_TIMEOUT must be between 1 and 604800 seconds")
        if not 1 <= self.drain_parallel <= 64:
            raise ConfigError("IAAS_DRAIN_PARALLEL must be between 1 and 64")

    def _check_queue(self) -> None:
        if not 0 <= self.queue_backfill_limit_s <= 30 * 86400:
            raise ConfigError("IAAS_QUEUE_BACKFILL_LIMIT must be between 0 and 2592000 seconds")
        if not 1 <= self.queue_max_wait_s <= MAX_WAIT_S:
            raise ConfigError(f"IAAS_QUEUE_MAX_WAIT must be between 1 and {MAX_WAIT_S} seconds")
        if not 0.05 <= self.reservation_tick_s <= 3600:
            raise ConfigError("IAAS_RESERVATION_TICK must be between 0.05 and 3600 seconds")
        if not 1 <= self.reservation_horizon_days <= 3650:
            raise ConfigError("IAAS_RESERVATION_HORIZON_DAYS must be between 1 and 3650")

    def _check_imports(self) -> None:
        for name, parse, text in (("IAAS_IMPORT_PORTS", port_ranges, self.import_ports),
                                  ("IAAS_IMPORT_DENY", networks, self.import_deny)):
            try:
                parse(text)
            except ValueError as exc:
                raise ConfigError(f"{name}={text!r} is not valid: {exc}") from None
        if not 1 <= self.import_header_timeout_s <= 3600:
            raise ConfigError("IAAS_IMPORT_HEADER_TIMEOUT must be between 1 and 3600 seconds")
        if not 0 <= self.import_min_bytes <= 1024 ** 3:
            raise ConfigError("IAAS_IMPORT_MIN_BYTES must be between 0 and 1 GiB")
        if not 0.1 <= self.import_rate_window_s <= 3600:
            raise ConfigError("IAAS_IMPORT_RATE_WINDOW must be between 0.1 and 3600 seconds")
        if not 1 <= self.project_max_imports <= 64:
            raise ConfigError("IAAS_PROJECT_MAX_IMPORTS must be between 1 and 64")

    def _check_serving(self) -> None:
        """Raises: ConfigError for a serving limit out of its range."""
        if not 0.01 <= self.upload_share <= 0.5:
            raise ConfigError("IAAS_UPLOAD_SHARE must be between 0.01 and 0.5")
        if not 1 <= self.upload_min_rate <= 1024 ** 3:
            raise ConfigError("IAAS_UPLOAD_MIN_RATE must be between 1 and 1073741824 bytes/s")
        if not 0.1 <= self.header_timeout_s <= 3600:
            raise ConfigError("IAAS_HEADER_TIMEOUT must be between 0.1 and 3600 seconds")
        if not 1 <= self.max_connections_per_address <= 65536:
            raise ConfigError("IAAS_MAX_CONNECTIONS_PER_ADDRESS must be between 1 and 65536")
        if not 1 <= self.prod_connections <= 65536:
            raise ConfigError("IAAS_PROD_CONNECTIONS must be between 1 and 65536")

    @property
    def import_port_ranges(self) -> tuple[tuple[int, int], ...]:
        """IAAS_IMPORT_PORTS as (first, last) ranges."""
        return port_ranges(self.import_ports)

    @property
    def import_deny_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """IAAS_IMPORT_DENY as networks."""
        return networks(self.import_deny)


def port_ranges(text: str) -> tuple[tuple[int, int], ...]:
    """'80,443,8000-8099' as ((80, 80), (443, 443), (8000, 8099)). Raises: ValueError."""
    ranges = []
    for item in (part.strip() for part in text.split(",")):
        first, _, last = item.partition("-")
        if not first.isdigit() or not (last or first).isdigit():
            raise ValueError(f"{item!r} is not a port or a range of ports such as 8000-8099")
        low, high = int(first), int(last or first)
        if not 1 <= low <= high <= 65535:
            raise ValueError(f"{item!r} is not within 1-65535")
        ranges.append((low, high))
    return tuple(ranges)


def networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated CIDRs (or bare addresses) as networks; empty: none. Raises: ValueError."""
    return tuple(ipaddress.ip_network(item.strip(), strict=False)
                 for item in text.split(",") if item.strip())


def read_env_file(path: Path) -> dict[str, str]:
    """Parse KEY=VALUE lines (comments and blanks ignored); a missing file is empty."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def add_to_env_file(path: Path, key: str, value: str, why: list[str]) -> None:
    """Append `key=value`, after comment lines saying why, to the env file (made if missing).

    Raises: ValueError if the file sets key already (a value someone chose is never replaced).
    """
    if key in read_env_file(path):
        raise ValueError(f"{path} sets {key} already")
    before = path.read_text() if path.is_file() else ""
    lines = [f"# {line}" for line in why] + [f"{key}={value}"]
    gap = "" if not before or before.endswith("\n") else "\n"
    with path.open("a") as out:
        out.write(gap + "\n".join(lines) + "\n")


@dataclass(frozen=True)
class Setting:
    """One IAAS_* variable: the Config field it sets, its default and what it means."""

    env: str
    field: str
    default: str
    description: str
    parse: Callable[[str], Any] = str
    index: int | None = None  # position inside a tuple field (the default quota)


def _path(text: str) -> Path:
    return Path(text).resolve()


def _switch(text: str) -> bool:
    if text.lower() not in ("on", "off", "true", "false", "1", "0"):
        raise ValueError("must be on or off")
    return text.lower() in ("on", "true", "1")


def _limit(text: str) -> int | None:
    """A whole number, or 'unlimited'."""
    if text.strip().lower() == "unlimited":
        return None
    if not text.strip().isdigit():
        raise ValueError("must be a whole number or 'unlimited'")
    return int(text)


DERIVED = ""  # a default computed from another setting
SETTINGS: tuple[Setting, ...] = (
    Setting("IAAS_DB_PATH", "db_path", "iaas_metadata.db", "SQLite database file.", _path),
    Setting("IAAS_LIBVIRT_URI", "libvirt_uri", "qemu:///system", "libvirt connection URI."),
    Setting("IAAS_DOMAIN_TYPE", "domain_type", "kvm",
            "Domain type: `kvm`, or `qemu` (TCG) where KVM does not work."),
    Setting("IAAS_IMAGES_DIR", "images_dir", "/var/lib/libvirt/images",
            "Where base images lie.", _path),
    Setting("IAAS_INSTANCES_DIR", "instances_dir", DERIVED,
            "Per-VM folders (overlay, seed, console log); default "
            "`$IAAS_IMAGES_DIR/iaas-instances`.", _path),
    Setting("IAAS_VOLUMES_DIR", "volumes_dir", DERIVED,
            "Volumes of the host `local` (a libvirt `dir` pool over it); default "
            "`$IAAS_IMAGES_DIR/iaas-volumes`.", _path),
    Setting("IAAS_DETACH_TIMEOUT", "detach_timeout_s", "30",
            "Seconds a running guest has to let go of a volume being detached; then the detach "
            "fails (`detach_timeout`) and the volume stays attached.", float),
    Setting("IAAS_NETWORK", "network", "default", "libvirt network VMs are attached to."),
    Setting("IAAS_HOST", "host", "127.0.0.1", "Address the API listens on."),
    Setting("IAAS_PORT", "port", "8000", "Port the API listens on.", int),
    Setting("IAAS_MAX_BUILDS", "max_builds", "4", "VM builds run at once.", int),
    Setting("IAAS_RECONCILE_INTERVAL", "reconcile_interval_s", "30",
            "Seconds between reconciliation sweeps.", float),
    Setting("IAAS_LIFECYCLE_EVENTS", "lifecycle_events", "on",
            "Listen to libvirt lifecycle events (`on`/`off`).", _switch),
    Setting("IAAS_TASK_TIMEOUT", "task_timeout_s", "600",
            "Seconds a task may run before it fails with `task_timeout`.", float),
    Setting("IAAS_CPU_ALLOCATION_RATIO", "cpu_allocation_ratio", "4.0",
            "vCPUs per host CPU.", float),
    Setting("IAAS_RAM_ALLOCATION_RATIO", "ram_allocation_ratio", "1.0",
            "Guest RAM per host RAM.", float),
    Setting("IAAS_ADMIN_TOKEN_FILE", "admin_token_file", "iaas-admin-token",
            "Where `make db-init` files the first admin token (mode 0600).", _path),
    Setting("IAAS_PROD_THREADS", "prod_threads", "16", "Worker threads of `make serve-prod`.",
            int),
    Setting("IAAS_DISK_ALLOCATION_RATIO", "disk_allocation_ratio", "1.0",
            "Guest disk (`disk_gb` of every VM) per byte of the instances filesystem.", float),
    Setting("IAAS_AUDIT_RETENTION_DAYS", "audit_retention_days", "90",
            "Audit rows older than this are purged by the sweep.", int),
    Setting("IAAS_TASK_RETENTION_DAYS", "task_retention_days", "30",
            "Finished tasks of deleted VMs older than this are purged by the sweep.", int),
    Setting("IAAS_METRICS_PUBLIC", "metrics_public", "off",
            "Serve `/metrics` without a token (`on`); otherwise it needs an admin token.",
            _switch),
    Setting("IAAS_PROJECT_MAX_TASKS", "project_max_tasks", "8",
            "Tasks of one project that run at once; the rest wait their project's turn, holding "
            "no worker (the embedded runner serves projects in turn; a Celery worker hands a "
            "task of a project at its share on for later and takes the next message).", int),
    Setting("IAAS_TASK_QUEUE_TIMEOUT", "task_queue_timeout_s", "600",
            "Seconds a task may wait in the queue before it fails with `task_expired`.", float),
    Setting("IAAS_MAX_CONNECTIONS", "max_connections", "64",
            "Connections `make serve` (wsgiref) serves at once, one thread each; more wait up "
            "to 1 s, then get 503 `server_busy`.", int),
    Setting("IAAS_PROD_CONNECTIONS", "prod_connections", "1000",
            "Connections `make serve-prod` (waitress) keeps open at once; beyond it waitress "
            "stops accepting until one closes.", int),
    Setting("IAAS_MAX_CONNECTIONS_PER_ADDRESS", "max_connections_per_address", "32",
            "Connections one client (an IPv4 address, an IPv6 /64) may hold open on either "
            "server; more are answered "
            "429 `too_many_connections` and closed. Keep it below IAAS_MAX_CONNECTIONS; behind "
            "a proxy every client has the proxy's address: raise it.", int),
    Setting("IAAS_HEADER_TIMEOUT", "header_timeout_s", "10",
            "Seconds the request line and headers may take to arrive in all, on either server, "
            "from the connection's start (waitress: a kept-alive connection's next request, from "
            "its first byte); then the connection is closed without an answer.", float),
    Setting("IAAS_REQUEST_TIMEOUT", "request_timeout_s", "30",
            "Seconds a whole request (line, headers, body) may take to arrive, on either "
            "server; then the connection is closed (wsgiref, a short body: 400 "
            "`incomplete_body`). An image upload's body is held to IAAS_UPLOAD_MIN_RATE over "
            "windows of this length instead.", float),
    Setting("IAAS_MAX_WAITS_PER_TOKEN", "max_waits_per_token", "4",
            "Long-polls (`GET /v1/tasks/{id}?wait=`) one token may hold open at once; more "
            "answer at once with `Retry-After: 1`.", int),
    Setting("IAAS_ALLOW_INSECURE_HOSTS", "allow_insecure_hosts", "off",
            "Accept `qemu+tcp://` hosts (no encryption, no authentication): test set-ups only.",
            _switch),
    Setting("IAAS_ALLOW_TEST_HOSTS", "allow_test_hosts", "off",
            "Accept `test://` hosts (libvirt's in-process test driver, which reads whatever file "
            "the URI names): test set-ups only.", _switch),
    Setting("IAAS_HOST_CREDENTIALS_DIR", "host_credentials_dir", "/etc/iaas",
            "A host URI's `pkipath` (`qemu+tls://`), `keyfile` and `known_hosts` "
            "(`qemu+ssh://`) must name paths under this folder.", _path),
    Setting("IAAS_SCHEDULER", "scheduler", "spread",
            "`spread`: a VM goes where most RAM is free; `pack`: where the least RAM that fits "
            "is free.", str),
    Setting("IAAS_BROKER_URL", "broker_url", DERIVED,
            "RabbitMQ URL (`make broker` writes it): tasks then run on Celery workers "
            "(`make worker`); unset, they run in the API's own process.", str),
    Setting("IAAS_WORKER_CONCURRENCY", "worker_concurrency", "2",
            "Tasks one host's worker runs at once.", int),
    Setting("IAAS_IMAGE_MAX_BYTES", "image_max_bytes", str(64 * 1024 ** 3),
            "Largest image an upload or a URL import may store, in bytes (64 GiB); more is 413 "
            "`body_too_large` (an import: `image_too_large`).", int),
    Setting("IAAS_IMPORT_ALLOW_PRIVATE", "import_allow_private", "off",
            "Let URL imports reach the special-purpose addresses (loopback, private, link-local "
            "and metadata, documentation...) and this machine's own addresses (`on`): test "
            "set-ups only. It opens neither `IAAS_IMPORT_PORTS` nor `IAAS_IMPORT_DENY`.",
            _switch),
    Setting("IAAS_IMPORT_TIMEOUT", "import_timeout_s", "3600",
            "Seconds a URL import may run before it fails with `task_timeout` (its connection "
            "is closed then).", float),
    Setting("IAAS_IMPORT_PORTS", "import_ports", "80,443",
            "Ports URL imports (and their redirects) may connect to: ports and ranges, e.g. "
            "`80,443,8000-8099`; any other is refused with `url_not_allowed`.", str),
    Setting("IAAS_IMPORT_DENY", "import_deny", DERIVED,
            "Networks URL imports never reach, as comma-separated CIDRs (e.g. your own public "
            "ranges, a NAT's outside address); none by default, and nothing lifts it.", str),
    Setting("IAAS_IMPORT_HEADER_TIMEOUT", "import_header_timeout_s", "60",
            "Seconds an import's server has, in all, to accept the connection and send its "
            "status line and headers (every redirect included); then `download_failed`.",
            float),
    Setting("IAAS_IMPORT_MIN_BYTES", "import_min_bytes", str(1024 ** 2),
            "An import's body must bring at least this many bytes in every "
            "`IAAS_IMPORT_RATE_WINDOW`, else it fails `download_failed` (`0`: no minimum).",
            int),
    Setting("IAAS_IMPORT_RATE_WINDOW", "import_rate_window_s", "60",
            "Seconds of the window `IAAS_IMPORT_MIN_BYTES` is counted in.", float),
    Setting("IAAS_PROJECT_MAX_IMPORTS", "project_max_imports", "1",
            "URL imports of one project that download at once (the API's 2 import workers, or "
            "Celery's `iaas.images` consumers); the others wait, holding no worker.", int),
    Setting("IAAS_MAX_UPLOADS_PER_PROJECT", "max_uploads_per_project", "4",
            "Image uploads one project may send at once, on either server; more are 429 "
            "`too_many_uploads`.", int),
    Setting("IAAS_UPLOAD_SHARE", "upload_share", "0.25",
            "Share of the serving threads (IAAS_MAX_CONNECTIONS on `make serve`, "
            "IAAS_PROD_THREADS on `make serve-prod`) that uploads of all projects may hold at "
            "once (at least one upload); more are 503 `uploads_busy`.", float),
    Setting("IAAS_UPLOAD_MIN_RATE", "upload_min_rate", str(64 * 1024),
            "Bytes per second an upload's body must bring, counted over each window of "
            "IAAS_REQUEST_TIMEOUT seconds; a slower one is cut with 408 `upload_too_slow`.", int),
    Setting("IAAS_QUEUE_BACKFILL_LIMIT", "queue_backfill_limit_s", "600",
            "Seconds after which a VM waiting for capacity is never passed any more: a smaller "
            "VM behind it in the fair order (or a new create) no longer takes a host that could "
            "hold it (backfill).", float),
    Setting("IAAS_QUEUE_MAX_WAIT", "queue_max_wait_s", "86400",
            "Seconds a VM created with `wait_for_capacity` waits at most (unless its "
            "`max_wait_s` says less or more); then it is `error` with `capacity_wait_expired`.",
            int),
    Setting("IAAS_RESERVATION_TICK", "reservation_tick_s", "5",
            "Seconds between two looks of the capacity clock: waiting VMs are placed and "
            "expired, and reservations start and end, within this.", float),
    Setting("IAAS_RESERVATION_HORIZON_DAYS", "reservation_horizon_days", "90",
            "Days ahead a reservation's window may end at most; further is 400 "
            "`reservation_too_far`.", int),
    Setting("IAAS_MIGRATION_MAX_MBPS", "migration_max_mbps", "0",
            "MiB/s a live migration may send (memory and disks together); `0`: no limit.", int),
    Setting("IAAS_MIGRATION_TIMEOUT", "migration_timeout_s", "600",
            "Seconds a live migration's copy may take; then it is aborted "
            "(`migration_timeout`) and the VM runs on its source as before.", float),
    Setting("IAAS_DRAIN_PARALLEL", "drain_parallel", "2",
            "Migrations one host's drain runs at once; its other VMs wait their turn.", int),
    *(Setting(f"IAAS_DEFAULT_QUOTA_{resource.upper()}", "default_quota", default,
              f"{resource} limit of a new project (`unlimited` lifts it).", _limit, index)
      for index, (resource, default) in enumerate(
          (("instances", "10"), ("vcpus", "20"), ("ram", "51200"), ("gpus", "0"),
           ("disk_gb", "500"), ("images_gb", "100"), ("images", "50"), ("keypairs", "100"),
           ("tokens", "50"), ("volumes", "10"), ("volumes_gb", "1000"),
           ("security_groups", "10")))),
)


def load_config(environ: Mapping[str, str] | None = None, env_file: Path = DEFAULT_ENV_FILE) -> Config:
    """Build the Config; the process environment wins over the env file, which wins over
    the defaults.

    Raises: ConfigError for an unusable value.
    """
    merged = {**read_env_file(env_file), **(os.environ if environ is None else environ)}
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = merged.get(setting.env) or setting.default
        try:
            value = setting.parse(raw) if raw != DERIVED else None
        except ValueError as exc:
            raise ConfigError(f"{setting.env}={raw!r} is not valid: {exc}") from None
        if setting.index is None:
            values[setting.field] = value
        else:
            values.setdefault(setting.field, [None] * len(QUOTA_RESOURCES))[setting.index] = value
    values["default_quota"] = tuple(values["default_quota"])
    values["broker_url"] = values["broker_url"] or ""
    values["import_deny"] = values["import_deny"] or ""
    if values["instances_dir"] is None:
        values["instances_dir"] = values["images_dir"] / "iaas-instances"
    return Config(**values)


def start_process(log: logging.Logger) -> Config | None:
    """Set up a long-running process's logging and read its Config; None after logging why the
    Config is refused (the process then exits 2)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        return load_config()
    except ConfigError as exc:
        log.error("%s", exc)
        return None
