"""Reading one broker's wire scalars: decimals, timestamps and closed sets of values.

Every broker package maps its own objects, but the scalars inside them come in few forms:
money and quantities as decimal strings (or JSON numbers parsed as ``Decimal``), times as
ISO 8601 / RFC 3339 text or epoch milliseconds, statuses and sides from a documented set.
``WireReader`` reads those forms once for all of them.

A value it cannot read is an ``UnknownBrokerValue`` naming the broker and the field, never a
guess: an order status the mapping does not know is logged loudly and refused, not mapped to
something plausible (ARCHITECTURE, "The adapter contract"). Floats are never accepted as
money: a float has already lost the digits the broker sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import httpx

from app.brokers import errors

T = TypeVar("T")

# date, time to the second, any fraction, then ``Z``, an offset (``+00:00`` or ``+0000``) or
# nothing (UTC is then assumed where the reader allows it).
_ISO_8601 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|z|[+-]\d{2}:?\d{2})?$"
)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class WireReader:
    """The scalar readers of one broker; every refusal names ``broker`` and the field."""

    def __init__(self, broker: str, *, name: str | None = None) -> None:
        self.broker = broker
        self._name = name or broker  # how messages call the broker ("Plaid")

    def __repr__(self) -> str:
        return f"WireReader({self.broker!r})"

    def unknown(self, field: str, value: object) -> errors.UnknownBrokerValue:
        """The error for a value of ``field`` this gateway does not know (raise it)."""
        return errors.UnknownBrokerValue(
            f"{self._name} sent an unknown {field}: {value!r}", broker=self.broker
        )

    def json_body(self, response: httpx.Response, *, ints_as_decimal: bool = False) -> Any:
        """The answer's JSON with every fraction as ``Decimal`` (``ints_as_decimal``: every
        number); a body that is not JSON is an ``UnknownBrokerValue``."""
        try:
            return json.loads(
                response.content,
                parse_float=Decimal,
                parse_int=Decimal if ints_as_decimal else None,
            )
        except ValueError:
            raise errors.UnknownBrokerValue(
                f"{self._name} sent a body that is not JSON", broker=self.broker
            ) from None

    # --- numbers ----------------------------------------------------------------------

    def decimal(self, value: object, field: str, *, text: bool = True) -> Decimal:
        """A finite decimal from a decimal string, an int or a ``Decimal``.

        ``text=False`` refuses strings (brokers whose JSON carries numbers, parsed as
        ``Decimal``). Booleans, floats, NaN and infinities are refused.
        """
        if isinstance(value, bool):
            raise self.unknown(field, value)
        if isinstance(value, Decimal):
            result = value
        elif isinstance(value, int) or (text and isinstance(value, str)):
            try:
                result = Decimal(value)
            except InvalidOperation:
                raise self.unknown(field, value) from None
        else:
            raise self.unknown(field, value)
        if not result.is_finite():
            raise self.unknown(field, value)
        return result

    def opt_decimal(self, value: object, field: str, *, text: bool = True) -> Decimal | None:
        """``decimal``, with ``None`` (and, for text, ``""``) meaning "not set"."""
        if value is None or (text and value == ""):
            return None
        return self.decimal(value, field, text=text)

    # --- times ------------------------------------------------------------------------

    def epoch_ms(self, value: object, field: str) -> datetime:
        """Epoch milliseconds (an int, an integral ``Decimal`` or a digit string) as UTC."""
        if isinstance(value, bool):
            raise self.unknown(field, value)
        if isinstance(value, Decimal) and value.is_finite() and value == int(value):
            value = int(value)
        elif isinstance(value, str) and value.isdigit():
            value = int(value)
        if not isinstance(value, int):
            raise self.unknown(field, value)
        return datetime.fromtimestamp(value / 1000, tz=UTC)

    def timestamp(
        self,
        value: object,
        field: str = "timestamp",
        *,
        epoch_ms: bool = False,
        date_only: bool = False,
        naive_utc: bool = True,
    ) -> datetime:
        """ISO 8601 / RFC 3339 text (``T`` or a space, any fraction cut to microseconds,
        ``Z`` or an offset with or without its colon) as an aware UTC datetime.

        ``epoch_ms``: epoch milliseconds are accepted as well. ``date_only``: a date alone
        is its midnight, UTC. ``naive_utc=False``: a time without a zone is refused rather
        than read as UTC.
        """
        if epoch_ms and (not isinstance(value, str) or value.isdigit()):
            return self.epoch_ms(value, field)
        if not isinstance(value, str):
            raise self.unknown(field, value)
        text = value.strip()
        if date_only and _DATE.match(text):
            text += "T00:00:00Z"
        match = _ISO_8601.match(text)
        if match is None:
            raise self.unknown(field, value)
        day, clock, fraction, zone = match.groups()
        if zone is None and not naive_utc:
            raise self.unknown(field, value)
        if zone in (None, "Z", "z"):
            zone = "+00:00"
        elif ":" not in zone:
            zone = zone[:3] + ":" + zone[3:]
        micros = f".{fraction[:6].ljust(6, '0')}" if fraction else ""
        try:
            parsed = datetime.fromisoformat(f"{day}T{clock}{micros}{zone}")
        except ValueError:
            raise self.unknown(field, value) from None
        return parsed.astimezone(UTC)

    # --- closed sets ------------------------------------------------------------------

    def lookup(self, table: Mapping[str, T], raw: object, field: str) -> T:
        """``table[raw]`` for a documented value; anything else is refused, never guessed."""
        if not isinstance(raw, str) or raw not in table:
            raise self.unknown(field, raw)
        return table[raw]
