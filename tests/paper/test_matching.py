"""The matching rules as pure functions, and the seeded quote source they read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.brokers import errors as broker_errors
from app.brokers.base import OrderSide, OrderType, TimeInForce
from app.paper.matching import OrderState, decide
from app.paper.quotes import SeededQuoteSource

AT = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)
source = SeededQuoteSource(seed=11)

symbols = st.sampled_from(SeededQuoteSource(0).symbols())
moments = st.integers(min_value=0, max_value=10_000_000).map(lambda s: AT + timedelta(seconds=s))
sides = st.sampled_from(list(OrderSide))
quantities = st.integers(min_value=1, max_value=2000).map(Decimal)


@given(symbols, moments)
def test_quotes_are_well_formed_and_reproducible(symbol: str, at: datetime) -> None:
    quote = source.quote(symbol, at)
    assert quote.bid < quote.ask
    assert quote.bid <= quote.last <= quote.ask
    assert quote.bid_size > 0
    assert quote.ask_size > 0
    assert SeededQuoteSource(seed=11).quote(symbol, at) == quote


def test_another_seed_gives_another_market() -> None:
    assert source.quote("AAPL", AT) != SeededQuoteSource(seed=12).quote("AAPL", AT)


def test_an_unknown_symbol_is_refused() -> None:
    with pytest.raises(broker_errors.UnknownSymbol):
        source.quote("NOPE", AT)


@given(symbols, moments, sides, quantities)
def test_a_market_order_never_takes_more_than_displayed(
    symbol: str, at: datetime, side: OrderSide, quantity: Decimal
) -> None:
    quote = source.quote(symbol, at)
    decision = decide(OrderState(side, OrderType.market, TimeInForce.gtc, quantity), quote)
    displayed = quote.ask_size if side is OrderSide.buy else quote.bid_size
    assert decision.fill_quantity == min(quantity, displayed)
    assert decision.fill_price == (quote.ask if side is OrderSide.buy else quote.bid)
    assert not decision.cancel_remainder


@given(symbols, moments, sides, quantities, st.integers(min_value=-500, max_value=500))
def test_a_limit_never_fills_at_a_worse_price(
    symbol: str, at: datetime, side: OrderSide, quantity: Decimal, offset_cents: int
) -> None:
    quote = source.quote(symbol, at)
    limit = quote.last + Decimal(offset_cents) / 100
    decision = decide(
        OrderState(side, OrderType.limit, TimeInForce.gtc, quantity, limit_price=limit), quote
    )
    if decision.fills:
        assert decision.fill_price is not None
        if side is OrderSide.buy:
            assert decision.fill_price <= limit
        else:
            assert decision.fill_price >= limit


@given(symbols, moments, sides, quantities)
def test_fok_fills_all_or_nothing(
    symbol: str, at: datetime, side: OrderSide, quantity: Decimal
) -> None:
    quote = source.quote(symbol, at)
    decision = decide(OrderState(side, OrderType.market, TimeInForce.fok, quantity), quote)
    assert decision.fill_quantity in (Decimal(0), quantity)
    assert decision.cancel_remainder == (decision.fill_quantity == 0)


def test_an_untriggered_ioc_stop_is_canceled_at_once() -> None:
    quote = source.quote("AAPL", AT)
    decision = decide(
        OrderState(
            OrderSide.buy, OrderType.stop, TimeInForce.ioc, Decimal(1), stop_price=quote.last * 2
        ),
        quote,
    )
    assert (decision.fills, decision.cancel_remainder, decision.stop_triggered) == (
        False,
        True,
        False,
    )
