"""A masking type for personal data: the raw value is reachable only on purpose."""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

MASK: Final = "***"


class Pii:
    """Wraps an identifier of a person so that ``str``, ``repr`` and f-strings mask it.

    Code that really needs the value (a query, a hash) calls :meth:`reveal`.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Pii({MASK})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pii) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(("Pii", self._value))


def keyed_hash(key: bytes, value: str) -> str:
    """HMAC-SHA256 of a value, hex: how the service keeps identifiers it must not keep raw."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()
