"""The capability gate's option rules on their own: combo price effects and the order types
and durations a broker takes for single-leg options (refused before anything is written)."""

from __future__ import annotations

import pytest

from app import errors
from app.brokers.alpaca.adapter import ALPACA_CAPABILITIES
from app.brokers.base import AssetClass, OrderType, PriceEffect, TimeInForce
from app.brokers.tastytrade.adapter import TASTYTRADE_CAPABILITIES
from app.paper.adapter import PAPER_CAPABILITIES
from app.services.pretrade import check_order

CALL = "AAPL271217C00190000"


def combo(capabilities: object, price_effect: PriceEffect) -> AssetClass:
    return check_order(
        capabilities,  # type: ignore[arg-type]
        symbol="AAPL",
        order_type=OrderType.limit,
        time_in_force=TimeInForce.day,
        quantity_is_fractional=False,
        extended_hours=False,
        legs=2,
        price_effect=price_effect,
    )


def test_an_even_spread_is_refused_where_the_broker_has_no_even() -> None:
    with pytest.raises(errors.UnsupportedOrder, match="even multi-leg"):
        combo(TASTYTRADE_CAPABILITIES, PriceEffect.even)
    for effect in (PriceEffect.debit, PriceEffect.credit):
        assert combo(TASTYTRADE_CAPABILITIES, effect) is AssetClass.option
    assert combo(PAPER_CAPABILITIES, PriceEffect.even) is AssetClass.option


@pytest.mark.parametrize(
    ("order_type", "time_in_force", "refused"),
    [
        (OrderType.limit, TimeInForce.day, None),
        (OrderType.market, TimeInForce.gtc, None),
        (OrderType.stop, TimeInForce.day, "stop orders for options"),
        (OrderType.limit, TimeInForce.ioc, "time_in_force ioc for options"),
    ],
)
def test_single_leg_options_take_only_the_brokers_option_order_forms(
    order_type: OrderType, time_in_force: TimeInForce, refused: str | None
) -> None:
    def check() -> AssetClass:
        return check_order(
            ALPACA_CAPABILITIES,
            symbol=CALL,
            order_type=order_type,
            time_in_force=time_in_force,
            quantity_is_fractional=False,
            extended_hours=False,
        )

    if refused is None:
        assert check() is AssetClass.option
    else:
        with pytest.raises(errors.UnsupportedOrder, match=refused):
            check()
    # The same order forms on an equity are the equity rules' business.
    assert (
        check_order(
            ALPACA_CAPABILITIES,
            symbol="AAPL",
            order_type=order_type,
            time_in_force=time_in_force,
            quantity_is_fractional=False,
            extended_hours=False,
        )
        is AssetClass.equity
    )
