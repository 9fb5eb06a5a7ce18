"""What a VM tells cloud-init: SSH keys and user-data, checked before anything is made."""
from __future__ import annotations

from src import errors
from src.utils.nocloud import InvalidSshKey, validate_ssh_key

MAX_USER_DATA_BYTES = 16 * 1024


def checked_ssh_keys(keys: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The keys, trimmed (`cat id.pub` ends in a newline).

    Raises: ValidationFailed naming each key that is not an OpenSSH public key.
    """
    problems, valid = [], []
    for index, key in enumerate(keys):
        try:
            valid.append(validate_ssh_key(key.strip()))
        except InvalidSshKey as exc:
            problems.append({"field": f"ssh_keys[{index}]", "message": str(exc)})
    if problems:
        raise errors.ValidationFailed("An SSH key is not a valid OpenSSH public key.",
                                      errors=problems)
    return tuple(valid)


def check_user_data(user_data: str | None) -> None:
    """Raises: ValidationFailed when user_data is over 16 KiB in UTF-8."""
    if user_data is not None and len(user_data.encode()) > MAX_USER_DATA_BYTES:
        raise errors.ValidationFailed("user_data is over 16 KiB.", errors=[
            {"field": "user_data", "message": f"at most {MAX_USER_DATA_BYTES} bytes"}])
