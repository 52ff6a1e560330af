"""The order state table: the one place that says which status may follow which.

Modelled on NautilusTrader's ``_ORDER_STATE_TABLE``, with its real-world rows: a fill may
arrive before the acknowledgement, and after a cancel or expiry acknowledgement. ``unknown``
(a write whose outcome we could not see) may resolve to anything reconciliation finds.
Terminal states (filled, rejected, replaced) never change again.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from app.brokers.base import OrderStatus

S = OrderStatus

TERMINAL: frozenset[OrderStatus] = frozenset({S.filled, S.rejected, S.replaced})
OPEN: frozenset[OrderStatus] = frozenset(
    {
        S.pending_submit,
        S.submitted,
        S.accepted,
        S.partially_filled,
        S.pending_cancel,
        S.pending_replace,
        S.unknown,
    }
)
CLOSED: frozenset[OrderStatus] = frozenset(set(S) - OPEN)
# States in which a request to the broker is outstanding and reconciliation must watch.
IN_FLIGHT: frozenset[OrderStatus] = frozenset(
    {S.pending_submit, S.submitted, S.pending_cancel, S.pending_replace, S.unknown}
)

_FILLS = {S.partially_filled, S.filled}

TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.pending_submit: frozenset(
        {S.submitted, S.accepted, S.rejected, S.unknown, S.canceled, S.expired, *_FILLS}
    ),
    S.submitted: frozenset(
        {
            S.accepted,
            S.rejected,
            S.canceled,
            S.expired,
            S.pending_cancel,
            S.pending_replace,
            S.unknown,
            *_FILLS,
        }
    ),
    S.accepted: frozenset(
        {
            S.pending_cancel,
            S.canceled,
            S.pending_replace,
            S.replaced,
            S.expired,
            S.rejected,
            S.unknown,
            *_FILLS,
        }
    ),
    S.partially_filled: frozenset(
        {
            S.pending_cancel,
            S.canceled,
            S.pending_replace,
            S.replaced,
            S.expired,
            S.unknown,
            *_FILLS,
        }
    ),
    # A cancel or change refused, or applied in place, leaves the order working: acknowledged
    # (accepted) or, at a broker that had not acknowledged it yet, still submitted (Tradier
    # shows a new order ``pending`` until the market acknowledges it).
    S.pending_cancel: frozenset(
        {S.canceled, S.accepted, S.submitted, S.expired, S.pending_cancel, S.unknown, *_FILLS}
    ),
    S.pending_replace: frozenset(
        {
            S.replaced,
            S.accepted,
            S.submitted,
            S.pending_replace,
            S.pending_cancel,
            S.canceled,
            S.expired,
            S.unknown,
            *_FILLS,
        }
    ),
    # Fills after a cancel or expiry acknowledgement happen in the real world.
    S.canceled: frozenset(_FILLS),
    S.expired: frozenset(_FILLS),
    S.unknown: frozenset(set(S) - {S.pending_submit, S.unknown}),
    S.filled: frozenset(),
    S.rejected: frozenset(),
    S.replaced: frozenset(),
}


def can_transition(current: OrderStatus, new: OrderStatus) -> bool:
    return new in TRANSITIONS[current]


@dataclass(frozen=True, slots=True)
class OrderSnapshot:
    status: OrderStatus
    quantity: Decimal
    filled_quantity: Decimal
    # (limit price, stop price, time in force): a change with the same status is news too.
    terms: tuple[object, ...] = ()


def is_consistent(report: OrderSnapshot) -> bool:
    """Fill quantities that agree with the status word (a filled order filled everything)."""
    if not Decimal(0) <= report.filled_quantity <= report.quantity:
        return False
    if report.status is OrderStatus.filled:
        return report.filled_quantity == report.quantity
    if report.status is OrderStatus.partially_filled:
        return Decimal(0) < report.filled_quantity < report.quantity
    return True


def should_apply(current: OrderSnapshot, incoming: OrderSnapshot) -> bool:
    """Whether a broker report is news for our row, or stale/duplicate and must be ignored.

    Reports can arrive out of order (a stream update racing the REST answer). Fills never
    go backwards; an equal report is a duplicate; anything the table does not allow is a
    stale report and is dropped rather than forced.
    """
    if current.status in TERMINAL or not is_consistent(incoming):
        return False
    if incoming.filled_quantity < current.filled_quantity:
        return False
    if incoming.status == current.status:
        return (
            incoming.filled_quantity > current.filled_quantity
            or incoming.quantity != current.quantity
            or (bool(incoming.terms) and incoming.terms != current.terms)
        )
    return can_transition(current.status, incoming.status)
