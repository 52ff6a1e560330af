"""Shared field types: decimal strings for money, UTC timestamps, pagination."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    WithJsonSchema,
)

from app.errors import InvalidCursor

DECIMAL_PATTERN = r"^-?(0|[1-9][0-9]{0,17})(\.[0-9]{1,10})?$"
_DECIMAL_RE = re.compile(DECIMAL_PATTERN)


def _parse_decimal_string(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if not isinstance(value, str):
        raise ValueError('must be a decimal string such as "10" or "187.23"')
    if not _DECIMAL_RE.match(value):
        raise ValueError("must be a plain decimal string (digits, optional '.', up to 10 places)")
    try:
        return Decimal(value)
    except InvalidOperation as exc:  # pragma: no cover - the pattern already excludes these
        raise ValueError("not a decimal") from exc


def format_decimal(value: Decimal) -> str:
    """Plain notation without trailing zeros: Decimal("100.00") -> "100"."""
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text


DecimalStr = Annotated[
    Decimal,
    BeforeValidator(_parse_decimal_string),
    PlainSerializer(format_decimal, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DECIMAL_PATTERN, "examples": ["10", "187.23"]}),
]


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UTCTimestamp = Annotated[
    AwareDatetime,
    PlainSerializer(
        lambda v: _utc(v).isoformat().replace("+00:00", "Z"), return_type=str, when_used="json"
    ),
]


class StrictModel(BaseModel):
    """Request bodies: unknown fields are an error, values are not coerced across types."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ResponseModel(BaseModel):
    model_config = ConfigDict(frozen=True)


def encode_cursor(*parts: str) -> str:
    raw = json.dumps(list(parts), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, *, size: int) -> list[str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        parts = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor() from exc
    if (
        not isinstance(parts, list)
        or len(parts) != size
        or not all(isinstance(p, str) for p in parts)
    ):
        raise InvalidCursor()
    return parts


def decode_time_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    """The position a page cursor stands for; None (the first page) for none or ``""``."""
    if not cursor:
        return None
    stamp, row_id = decode_cursor(cursor, size=2)
    try:
        at = datetime.fromisoformat(stamp)
    except ValueError as exc:
        raise InvalidCursor() from exc
    if at.tzinfo is None:
        raise InvalidCursor()
    try:
        return at.astimezone(UTC), row_id
    except OverflowError as exc:  # e.g. 9999-12-31T23:59:59-05:00 is past year 9999 in UTC
        raise InvalidCursor() from exc


# RFC 3339 ``date-time`` (what OpenAPI's ``format: date-time`` means): a full date, "T" or a
# space, a time, and "Z" or an offset. Pydantic alone would also take a number ("0.5" as
# seconds since 1970), which the document does not allow.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339_text(value: Any) -> Any:
    if isinstance(value, str) and not _RFC3339.match(value):
        raise ValueError("must be an RFC 3339 date-time such as 2026-11-23T14:30:00Z")
    if not isinstance(value, str | datetime):
        raise ValueError("must be an RFC 3339 date-time string")
    return value


# A date-time query parameter: RFC 3339 text only, with an offset.
QueryDateTime = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text)]


def as_utc(value: datetime | None, name: str) -> datetime | None:
    """A timezone-aware query parameter in UTC.

    Every RFC 3339 date-time is accepted: one whose UTC instant falls outside what Python
    represents (0001-01-01T00:00:00+01:00 is in year 0 in UTC) is the earliest or latest
    representable instant, which a range filter treats the same.
    """
    if value is None:
        return None
    try:
        return value.astimezone(UTC)
    except OverflowError:
        if value.year == 1:
            return datetime(1, 1, 1, tzinfo=UTC)
        return datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def encode_time_cursor(at: datetime, row_id: str) -> str:
    return encode_cursor(at.astimezone(UTC).isoformat(), row_id)
