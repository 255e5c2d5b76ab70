"""The one error a search-space file raises, and the key/value checks that raise it."""

from __future__ import annotations

from typing import Any

from ..config import parse_value, split_key


class SearchSpaceError(ValueError):
    """A search-space file is wrong; the message names the file and the key."""

    def __init__(self, source: str, key: str, message: str) -> None:
        super().__init__(f"{source}: {key}: {message}")
        self.source, self.key = source, key


def check_key(source: str, key: Any) -> None:
    try:
        split_key(str(key))
    except ValueError as err:
        raise SearchSpaceError(source, str(key), str(err)) from None


def number(source: str, key: str, value: Any) -> Any:
    """YAML 1.1 reads `1e-4` as a string; accept numeric strings where a number is due."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise SearchSpaceError(source, key, f"expected a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SearchSpaceError(source, key, f"expected a number, got {value!r}")
    return value


def coerce(source: str, key: str, value: Any) -> Any:
    """A YAML (or CLI pin) value typed by its key: `config.parse_value`, errors naming the file."""
    try:
        return parse_value(key, value)
    except ValueError as err:
        raise SearchSpaceError(source, key, str(err)) from None
