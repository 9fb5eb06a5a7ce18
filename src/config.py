"""Settings: the IAAS_* environment variables, an optional env file, and their defaults."""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ENV_FILE = Path(__file__).resolve().parent.parent / "configs" / "iaas.env"

# Domain types libvirt knows (virDomainVirtType); anything else is a typo we refuse at start-up.
DOMAIN_TYPES = frozenset({
    "kvm", "qemu", "test", "xen", "lxc", "uml", "openvz", "vmware", "hyperv",
    "vbox", "phyp", "parallels", "bhyve", "vz", "kqemu", "hvf", "ch",
})
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
    # Limits a new project starts with (Nova's defaults; no GPUs until an admin grants some).
    default_quota: tuple[int | None, ...] = (10, 20, 51200, 0)

    def __post_init__(self) -> None:
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
        if not 1 <= self.task_timeout_s <= 86400:
            raise ConfigError("IAAS_TASK_TIMEOUT must be between 1 and 86400 seconds")
        for name, ratio in (("IAAS_CPU_ALLOCATION_RATIO", self.cpu_allocation_ratio),
                            ("IAAS_RAM_ALLOCATION_RATIO", self.ram_allocation_ratio)):
            if not 0.1 <= ratio <= 64:
                raise ConfigError(f"{name} must be between 0.1 and 64")


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


def load_config(environ: Mapping[str, str] | None = None, env_file: Path = DEFAULT_ENV_FILE) -> Config:
    """Build the Config; the process environment wins over the env file.

    Raises: ConfigError for an unusable value.
    """
    merged = {**read_env_file(env_file), **(os.environ if environ is None else environ)}

    def get(name: str, default: str) -> str:
        return merged.get(name) or default

    try:
        port = int(get("IAAS_PORT", "8000"))
        max_builds = int(get("IAAS_MAX_BUILDS", "4"))
        reconcile_interval_s = float(get("IAAS_RECONCILE_INTERVAL", "30"))
        task_timeout_s = float(get("IAAS_TASK_TIMEOUT", "600"))
        prod_threads = int(get("IAAS_PROD_THREADS", "16"))
        cpu_ratio = float(get("IAAS_CPU_ALLOCATION_RATIO", "4.0"))
        ram_ratio = float(get("IAAS_RAM_ALLOCATION_RATIO", "1.0"))
    except ValueError as exc:
        raise ConfigError(f"IAAS_PORT, IAAS_MAX_BUILDS, IAAS_RECONCILE_INTERVAL, IAAS_TASK_TIMEOUT "
                          f"and the allocation ratios must be numbers: {exc}") from None
    events = get("IAAS_LIFECYCLE_EVENTS", "on").lower()
    if events not in ("on", "off", "true", "false", "1", "0"):
        raise ConfigError(f"IAAS_LIFECYCLE_EVENTS={events!r} must be on or off")
    images_dir = Path(get("IAAS_IMAGES_DIR", "/var/lib/libvirt/images")).resolve()
    return Config(
        db_path=Path(get("IAAS_DB_PATH", "iaas_metadata.db")).resolve(),
        libvirt_uri=get("IAAS_LIBVIRT_URI", "qemu:///system"),
        domain_type=get("IAAS_DOMAIN_TYPE", "kvm"),
        images_dir=images_dir,
        instances_dir=Path(get("IAAS_INSTANCES_DIR", str(images_dir / "iaas-instances"))).resolve(),
        network=get("IAAS_NETWORK", "default"),
        host=get("IAAS_HOST", "127.0.0.1"),
        port=port,
        max_builds=max_builds,
        reconcile_interval_s=reconcile_interval_s,
        lifecycle_events=events in ("on", "true", "1"),
        task_timeout_s=task_timeout_s,
        cpu_allocation_ratio=cpu_ratio,
        ram_allocation_ratio=ram_ratio,
        admin_token_file=Path(get("IAAS_ADMIN_TOKEN_FILE", "iaas-admin-token")).resolve(),
        default_quota=_default_quota(get),
        prod_threads=prod_threads,
    )


def _default_quota(get: Callable[[str, str], str]) -> tuple[int | None, ...]:
    """IAAS_DEFAULT_QUOTA_{INSTANCES,VCPUS,RAM,GPUS}; 'unlimited' lifts a limit."""
    limits: list[int | None] = []
    for name, default in (("INSTANCES", "10"), ("VCPUS", "20"), ("RAM", "51200"), ("GPUS", "0")):
        value = get(f"IAAS_DEFAULT_QUOTA_{name}", default).strip().lower()
        if value == "unlimited":
            limits.append(None)
        elif value.isdigit():
            limits.append(int(value))
        else:
            raise ConfigError(f"IAAS_DEFAULT_QUOTA_{name}={value!r} must be a whole number or "
                              "'unlimited'")
    return tuple(limits)
