"""Order bodies with options: canonical symbols, leg rules, and what the idempotency and
audit fingerprint covers (properties where they beat examples)."""

from __future__ import annotations

import math
from datetime import date
from decimal import Decimal
from functools import reduce
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from app.brokers.base import OptionContract, OptionRight
from app.schemas.orders import OrderCreate
from app.services.orders import request_fingerprint

EXPIRY = date(2030, 1, 18)
PATH = "/v1/accounts/acc_1/orders"

strikes = st.integers(min_value=1, max_value=99_999_999).map(lambda m: Decimal(m) / 1000)
roots = st.from_regex(r"[A-Z]{1,6}", fullmatch=True)
rights = st.sampled_from(list(OptionRight))


def _contract(root: str, strike: Decimal, right: OptionRight) -> OptionContract:
    return OptionContract(underlying=root, root=root, expiration=EXPIRY, right=right, strike=strike)


def _error_types(exc: ValidationError) -> set[str]:
    return {str(e["type"]) for e in exc.errors()}


@given(root=roots, strike=strikes, right=rights)
def test_padded_and_unpadded_symbols_are_one_order(
    root: str, strike: Decimal, right: OptionRight
) -> None:
    contract = _contract(root, strike, right)
    bodies = [
        OrderCreate.model_validate(
            {
                "symbol": text,
                "side": "buy",
                "quantity": "1",
                "order_type": "market",
                "position_effect": "open",
            }
        )
        for text in (contract.symbol, contract.occ_padded, contract.symbol.lower())
    ]
    assert {b.symbol for b in bodies} == {contract.symbol}
    assert len({request_fingerprint("POST", PATH, b) for b in bodies}) == 1


def _legs(ratios: list[int]) -> dict[str, Any]:
    return {
        "legs": [
            {
                "symbol": _contract("AAPL", Decimal(100 + 5 * i), OptionRight.call).symbol,
                "side": "buy" if i % 2 == 0 else "sell",
                "ratio": ratio,
                "position_effect": "open",
            }
            for i, ratio in enumerate(ratios)
        ],
        "quantity": "1",
        "order_type": "market",
    }


@given(ratios=st.lists(st.integers(min_value=1, max_value=12), min_size=2, max_size=4))
def test_ratios_are_taken_only_in_lowest_terms(ratios: list[int]) -> None:
    if reduce(math.gcd, ratios) == 1:
        assert OrderCreate.model_validate(_legs(ratios)).legs is not None
    else:
        with pytest.raises(ValidationError) as caught:
            OrderCreate.model_validate(_legs(ratios))
        assert "leg_ratios_not_reduced" in _error_types(caught.value)


@given(ratio=st.integers(max_value=0))
def test_a_ratio_below_one_is_refused(ratio: int) -> None:
    with pytest.raises(ValidationError) as caught:
        OrderCreate.model_validate(_legs([ratio, 1]))
    assert "invalid_leg_ratio" in _error_types(caught.value)


def test_the_fingerprint_covers_every_leg_field() -> None:
    """The idempotency check and the audit chain hash the same canonical body: a change to
    any leg is a different request."""
    base = _legs([1, 1])
    first = request_fingerprint("POST", PATH, OrderCreate.model_validate(base))
    for field, value in (
        ("symbol", _contract("AAPL", Decimal(150), OptionRight.put).symbol),
        ("side", "sell"),
        ("ratio", 2),
        ("position_effect", "close"),
    ):
        changed = {**base, "legs": [{**base["legs"][0], field: value}, base["legs"][1]]}
        other = request_fingerprint("POST", PATH, OrderCreate.model_validate(changed))
        assert other != first, field


def test_multi_leg_side_follows_the_price_effect() -> None:
    credit = OrderCreate.model_validate(
        {**_legs([1, 1]), "order_type": "limit", "limit_price": "1.5", "price_effect": "credit"}
    )
    debit = OrderCreate.model_validate(
        {**_legs([1, 1]), "order_type": "limit", "limit_price": "1.5", "price_effect": "debit"}
    )
    assert (credit.instrument, credit.order_side.value) == ("AAPL", "sell")
    assert (debit.instrument, debit.order_side.value) == ("AAPL", "buy")
    even = OrderCreate.model_validate(
        {**_legs([1, 1]), "order_type": "limit", "limit_price": "0", "price_effect": "even"}
    )
    assert even.limit_price == 0
    with pytest.raises(ValidationError):
        OrderCreate.model_validate(
            {**_legs([1, 1]), "order_type": "limit", "limit_price": "0", "price_effect": "debit"}
        )
