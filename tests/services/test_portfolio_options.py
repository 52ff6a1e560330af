"""Option holdings in the portfolio: per contract, long and short never netted."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from app.brokers.base import AssetClass, Balances, OptionContract, Position
from app.services.portfolio import AccountRead, AccountRef, aggregate

NOW = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
CALL = "AAPL300118C00200000"
PUT = "AAPL300118P00180000"


def _option(symbol: str, quantity: str, price: str = "2.50") -> Position:
    qty, px = Decimal(quantity), Decimal(price)
    return Position(
        symbol=symbol,
        asset_class=AssetClass.option,
        quantity=qty,
        avg_cost=px,
        current_price=px,
        market_value=px * qty * 100,
        unrealized_pl=Decimal(0),
        as_of=NOW,
        contract=OptionContract.parse(symbol),
    )


def _read(account: str, *positions: Position) -> AccountRead:
    balances = Balances(Decimal(1000), Decimal(1000), Decimal(1000), "USD", NOW)
    return AccountRead(
        AccountRef(account, "con", "paper", "paper", "paper"), balances, positions, NOW
    )


def test_long_and_short_of_one_contract_are_separate_rows() -> None:
    out = aggregate(
        [
            _read("acc_1", _option(CALL, "2"), _option(PUT, "-1")),
            _read("acc_2", _option(CALL, "-2"), _option(CALL.replace("200", "210"), "1")),
            _read("acc_3", _option(CALL, "1")),
        ],
        [],
        {},
        NOW,
    )
    rows = {(p.symbol, p.position_side): p for p in out.positions}
    assert set(rows) == {
        (CALL, "long"),
        (CALL, "short"),
        (PUT, "short"),
        ("AAPL300118C00210000", "long"),
    }
    assert rows[(CALL, "long")].quantity == 3  # acc_1 and acc_3, never netted with acc_2
    assert [h.account_id for h in rows[(CALL, "long")].accounts] == ["acc_1", "acc_3"]
    assert rows[(CALL, "short")].quantity == -2
    assert rows[(CALL, "short")].market_value == Decimal("-500")
    contract = rows[(PUT, "short")].contract
    assert contract is not None
    assert contract.right.value == "put"
    assert contract.strike == Decimal(180)
    assert contract.multiplier == Decimal(100)
