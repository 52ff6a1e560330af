"""One bad row never breaks a list (app/brokers/rows.py)."""

from __future__ import annotations

from typing import Any

import pytest

from app.brokers.errors import UnknownBrokerValue
from app.brokers.rows import ROWS_SKIPPED, RowList, is_partial, read_rows


def parse(row: dict[str, Any]) -> int | None:
    if row.get("asset_class") == "crypto":
        return None  # not a row of this list
    if row["status"] not in ("new", "filled"):
        raise UnknownBrokerValue(f"unknown status {row['status']!r}", broker="test")
    return int(row["qty"])


def test_a_row_that_cannot_be_represented_is_left_out_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = ROWS_SKIPPED.labels("test", "orders")._value.get()
    rows = [
        {"id": "a", "status": "new", "qty": "1"},
        {"id": "b", "status": "held_for_review", "qty": "2"},  # unknown status
        {"id": "c", "status": "filled"},  # no qty: malformed
        {"id": "d", "status": "filled", "qty": "4"},
        {"id": "e", "asset_class": "crypto"},
    ]
    result = read_rows(rows, parse, broker="test", kind="orders")
    assert list(result) == [1, 4]
    assert result.skipped == 2
    assert is_partial(result)
    assert ROWS_SKIPPED.labels("test", "orders")._value.get() == before + 2
    logged = [r for r in caplog.records if "cannot represent" in r.getMessage()]
    assert [getattr(r, "broker_row_id", None) for r in logged] == ["b", "c"]


def test_a_complete_list_is_not_partial() -> None:
    result = read_rows([{"status": "new", "qty": "3"}], parse, broker="test", kind="orders")
    assert (list(result), result.skipped, is_partial(result)) == ([3], 0, False)
    assert not is_partial([1, 2])
    assert isinstance(result, RowList)
