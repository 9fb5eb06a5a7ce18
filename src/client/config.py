"""Where the API is and which token to send: options, then the environment, then defaults."""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TOKEN_FILE = Path("iaas-admin-token")  # what `make serve` writes in the repository root


class ConfigError(Exception):
    """A setting the client cannot use (a usage error: exit 2)."""


def api_url(option: str | None) -> str:
    return option or os.environ.get("IAAS_URL") or DEFAULT_URL


def token(token_file: Path | None) -> str | None:
    """--token-file, else IAAS_TOKEN, else ./iaas-admin-token when it exists, else none.

    Raises: ConfigError when a file given is unreadable or empty.
    """
    if token_file is None:
        from_env = os.environ.get("IAAS_TOKEN", "").strip()
        if from_env:
            return from_env
        if not DEFAULT_TOKEN_FILE.is_file():
            return None
        token_file = DEFAULT_TOKEN_FILE
    try:
        secret = token_file.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {token_file}: {exc.strerror}") from None
    if not secret:
        raise ConfigError(f"the token file {token_file} is empty")
    return secret
