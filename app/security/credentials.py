"""Decrypted broker credentials, shaped so they cannot leak by accident.

``Credentials`` is an immutable ``str -> str`` mapping whose repr and str show the keys
only, and every value it holds is registered with the log redactor, so a credential that
ends up in a log message or a traceback is masked there too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping

from app.security.redaction import register_secret

MASK = "***"


class Credentials(Mapping[str, str]):
    """Immutable decrypted secrets (API key and secret, OAuth tokens) of one connection.

    Raises ``TypeError`` when a key or value is not a string.
    """

    __slots__ = ("_data",)
    _data: dict[str, str]

    def __init__(self, data: Mapping[str, str] | None = None, /, **values: str) -> None:
        merged = {**(data or {}), **values}
        for key, value in merged.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError("credential names and values must be strings")
        for value in merged.values():
            register_secret(value)
        object.__setattr__(self, "_data", merged)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Credentials are immutable")

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        masked = ", ".join(f"{key!r}: {MASK!r}" for key in sorted(self._data))
        return f"Credentials({{{masked}}})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        # Pickles end up in caches and queues; decrypted secrets must not.
        raise TypeError("Credentials are not picklable")

    def __copy__(self) -> Credentials:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Credentials:
        return self

    def to_json_bytes(self) -> bytes:
        """The plaintext to seal: compact JSON with sorted keys."""
        return json.dumps(self._data, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json_bytes(cls, raw: bytes) -> Credentials:
        """Parse ``to_json_bytes`` output; ``ValueError`` (without the input) when malformed."""
        try:
            data = json.loads(raw.decode("utf-8"))
        except ValueError:
            raise ValueError("stored credentials are not valid JSON") from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise ValueError("stored credentials must be a JSON object of strings")
        return cls(data)


def require_fields(values: Mapping[str, str], fields: frozenset[str]) -> None:
    """ValueError when the submitted credential lacks one of ``fields`` or has another
    (the message names fields, never values)."""
    missing = fields - set(values)
    extra = set(values) - fields
    if missing:
        raise ValueError(f"missing credentials: {', '.join(sorted(missing))}")
    if extra:
        raise ValueError(f"unknown credentials: {', '.join(sorted(extra))}")


def is_single_line(value: str, max_length: int) -> bool:
    """A key or secret as users paste it: non-empty printable text, no surrounding blanks."""
    return (
        bool(value) and len(value) <= max_length and value.isprintable() and value.strip() == value
    )
