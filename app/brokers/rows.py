"""Reading a broker's list answers one row at a time: one bad row never breaks a list.

A list the broker returns (orders, positions, transactions, accounts) can hold a row the
mapping cannot represent: an order placed outside the gateway in a form we do not model,
a status the mapping does not know. Refusing the whole list would hide every good row from
the user (their whole order list failing over one notional order placed elsewhere). So each
row is mapped on its own; a row that raises ``UnknownBrokerValue`` (or a ``KeyError``/
``TypeError``/``ValueError`` from a malformed body) is skipped, logged loudly with the
broker's own id for it, and counted in ``brokerage_broker_rows_skipped_total``; the answer
is a ``RowList`` whose ``skipped`` says how many were left out, so the API can mark it
partial. Single-object reads (one order, one position) still raise: there is nothing else to
show.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from prometheus_client import Counter

from app.brokers.errors import UnknownBrokerValue

log = logging.getLogger(__name__)

T = TypeVar("T")

ROWS_SKIPPED = Counter(
    "brokerage_broker_rows_skipped_total",
    "Rows of broker list answers the gateway could not represent and left out",
    ["broker", "kind"],
)


class RowList(list[T]):
    """A list read from a broker, with the number of rows left out (0: complete)."""

    skipped: int = 0


def is_partial(rows: object) -> bool:
    """Did ``rows`` (any list an adapter returned) leave out rows it could not represent?"""
    return isinstance(rows, RowList) and rows.skipped > 0


def read_rows(
    rows: Iterable[Any],
    parse: Callable[[Any], T | None],
    *,
    broker: str,
    kind: str,
    row_id: Callable[[Any], object] | None = None,
) -> RowList[T]:
    """Map each row with ``parse`` (None from ``parse`` means "not a row of this list",
    e.g. another asset class, and is not counted as skipped)."""
    result: RowList[T] = RowList()
    for row in rows:
        try:
            parsed = parse(row)
        except (UnknownBrokerValue, KeyError, TypeError, ValueError, ArithmeticError) as exc:
            result.skipped += 1
            ROWS_SKIPPED.labels(broker, kind).inc()
            log.error(
                "left out a %s row the gateway cannot represent",
                kind,
                extra={
                    "broker": broker,
                    "broker_row_id": _row_id(row, row_id),
                    "reason": _reason(exc),
                },
            )
            continue
        if parsed is not None:
            result.append(parsed)
    return result


def _reason(exc: Exception) -> str:
    """Why a row was left out, without the row's raw values: an unknown value names its
    field and the (vocabulary) value, a missing key its name; anything else only its type
    (a conversion error can quote whatever the broker sent, account numbers included)."""
    if isinstance(exc, UnknownBrokerValue | KeyError):
        return f"{type(exc).__name__}: {exc}"[:200]
    return type(exc).__name__


def _row_id(row: object, row_id: Callable[[Any], object] | None) -> str:
    try:
        if row_id is not None:
            return str(row_id(row))[:128]
        if isinstance(row, Mapping):
            for key in ("id", "order_id", "orderId", "symbol", "conid"):
                if key in row:
                    return str(row[key])[:128]
    except Exception:
        return "?"
    return "?"
