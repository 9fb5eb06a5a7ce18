"""Settings: defaults, env file, and the process environment winning over both."""
from pathlib import Path

import pytest

from src.config import ConfigError, add_to_env_file, load_config, read_env_file


def test_defaults(tmp_path: Path) -> None:
    config = load_config({}, env_file=tmp_path / "absent.env")
    assert config.libvirt_uri == "qemu:///system"
    assert config.domain_type == "kvm"
    assert config.images_dir == Path("/var/lib/libvirt/images")
    assert config.instances_dir == Path("/var/lib/libvirt/images/iaas-instances")
    assert config.network == "default"
    assert (config.host, config.port, config.max_builds) == ("127.0.0.1", 8000, 4)
    assert config.db_path.name == "iaas_metadata.db"
    assert (config.max_connections, config.request_timeout_s, config.max_waits_per_token) == (
        64, 30.0, 4)


def test_environment_overrides_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "iaas.env"
    env_file.write_text("# comment\nIAAS_PORT=9000\nIAAS_NETWORK='from-file'\nIAAS_MAX_BUILDS=2\n")
    config = load_config({"IAAS_PORT": "8123", "IAAS_DOMAIN_TYPE": "qemu"}, env_file=env_file)
    assert config.port == 8123
    assert config.network == "from-file"
    assert config.max_builds == 2
    assert config.domain_type == "qemu"


@pytest.mark.parametrize("variable, value", [
    ("IAAS_DOMAIN_TYPE", "kvmm"),
    ("IAAS_NETWORK", "net'><evil"),
    ("IAAS_MAX_BUILDS", "0"),
    ("IAAS_PORT", "eighty"),
    ("IAAS_MAX_CONNECTIONS", "0"),
    ("IAAS_REQUEST_TIMEOUT", "0"),
    ("IAAS_REQUEST_TIMEOUT", "soon"),
    ("IAAS_MAX_WAITS_PER_TOKEN", "-1"),
    ("IAAS_MAX_UPLOADS_PER_PROJECT", "0"),
])
def test_bad_values_are_refused(tmp_path: Path, variable: str, value: str) -> None:
    with pytest.raises(ConfigError):
        load_config({variable: value}, env_file=tmp_path / "absent.env")


def test_a_setting_is_added_to_the_env_file_after_its_lines_and_never_over_one(
        tmp_path: Path) -> None:
    env_file = tmp_path / "iaas.env"
    env_file.write_text("IAAS_PORT=9000")  # no final newline
    add_to_env_file(env_file, "IAAS_DOMAIN_TYPE", "qemu", ["why", "how to undo"])
    assert env_file.read_text() == "IAAS_PORT=9000\n# why\n# how to undo\nIAAS_DOMAIN_TYPE=qemu\n"
    assert load_config({}, env_file=env_file).domain_type == "qemu"
    with pytest.raises(ValueError, match="sets IAAS_PORT already"):
        add_to_env_file(env_file, "IAAS_PORT", "8000", [])
    assert read_env_file(env_file)["IAAS_PORT"] == "9000"
