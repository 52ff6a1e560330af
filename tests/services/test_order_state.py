"""The order state table: no sequence of broker reports can leave it or go backwards."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from app.brokers.base import OrderStatus
from app.services.order_state import (
    CLOSED,
    OPEN,
    TERMINAL,
    TRANSITIONS,
    OrderSnapshot,
    can_transition,
    should_apply,
)

QUANTITY = Decimal(10)
statuses = st.sampled_from(list(OrderStatus))
reports = st.builds(
    lambda status, filled: OrderSnapshot(status, QUANTITY, Decimal(filled)),
    statuses,
    st.integers(min_value=0, max_value=12),
)


def test_every_status_has_a_row_and_open_closed_partition_the_statuses() -> None:
    assert set(TRANSITIONS) == set(OrderStatus)
    assert OPEN | CLOSED == set(OrderStatus)
    assert not OPEN & CLOSED
    for targets in TRANSITIONS.values():
        assert targets <= set(OrderStatus)


def test_terminal_states_have_no_way_out() -> None:
    for status in TERMINAL:
        assert TRANSITIONS[status] == frozenset()


def test_real_world_rows() -> None:
    assert can_transition(OrderStatus.pending_submit, OrderStatus.filled)  # fill before ack
    assert can_transition(OrderStatus.canceled, OrderStatus.filled)  # fill after cancel ack
    assert can_transition(OrderStatus.pending_cancel, OrderStatus.accepted)  # cancel refused
    # ... or a change applied in place, at a broker that had not acknowledged the order yet
    assert can_transition(OrderStatus.pending_cancel, OrderStatus.submitted)
    assert can_transition(OrderStatus.pending_replace, OrderStatus.submitted)
    assert can_transition(OrderStatus.unknown, OrderStatus.accepted)  # reconciliation
    assert not can_transition(OrderStatus.filled, OrderStatus.canceled)
    assert not can_transition(OrderStatus.accepted, OrderStatus.pending_submit)


@given(st.lists(reports, max_size=40))
def test_no_sequence_of_reports_leaves_the_table(sequence: list[OrderSnapshot]) -> None:
    current = OrderSnapshot(OrderStatus.pending_submit, QUANTITY, Decimal(0))
    for report in sequence:
        if should_apply(current, report):
            assert can_transition(current.status, report.status) or (
                report.status == current.status
            )
            assert report.filled_quantity >= current.filled_quantity
            assert report.filled_quantity <= report.quantity
            if current.status in TERMINAL:
                raise AssertionError(f"left terminal state {current.status}")
            current = report
        assert current.status in set(OrderStatus)
        assert Decimal(0) <= current.filled_quantity <= QUANTITY


@given(reports, reports)
def test_a_duplicate_report_is_never_applied_twice(
    first: OrderSnapshot, other: OrderSnapshot
) -> None:
    start = OrderSnapshot(OrderStatus.accepted, QUANTITY, Decimal(0))
    if should_apply(start, first):
        assert not should_apply(first, first)
