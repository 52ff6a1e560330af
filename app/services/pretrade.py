"""The pre-trade capability check: the same rules for paper and live, before any broker call."""

from __future__ import annotations

from app import errors
from app.brokers.base import (
    AssetClass,
    Capabilities,
    OrderType,
    PriceEffect,
    Support,
    TimeInForce,
)
from app.brokers.symbols import asset_class_of


def check_order(
    capabilities: Capabilities,
    *,
    symbol: str,
    order_type: OrderType,
    time_in_force: TimeInForce,
    quantity_is_fractional: bool,
    extended_hours: bool,
    legs: int = 0,
    price_effect: PriceEffect | None = None,
    notional: bool = False,
    short_sale: bool = False,
) -> AssetClass:
    """Refuse with ``unsupported_order`` what this path cannot do; return the asset class.

    ``notional``: a dollar-amount order (``capabilities.notional`` / ``notional_limit``);
    ``short_sale``: an equity sell that opens (``capabilities.short_selling``).

    ``legs`` > 0: a multi-leg option order on ``symbol`` (the legs' underlying). It needs
    options, ``multi_leg``, at most ``options.max_legs`` legs, and an order type and time
    in force the broker takes for combos (``options.combo_order_types`` /
    ``combo_time_in_force``).
    """
    if not capabilities.place_orders:
        raise errors.ReadOnlyAccount()
    asset_class = AssetClass.option if legs else asset_class_of(symbol)
    if not capabilities.supports_asset(asset_class):
        raise errors.UnsupportedOrder(f"this broker does not trade {asset_class.value}")
    if legs:
        _check_combo(capabilities, legs, order_type, time_in_force, price_effect)
    elif asset_class is AssetClass.option:
        _check_single_option(capabilities, order_type, time_in_force)
    if capabilities.order_types.get(order_type, Support.unsupported) is Support.unsupported:
        raise errors.UnsupportedOrder(f"this broker does not take {order_type.value} orders")
    if capabilities.time_in_force.get(time_in_force, Support.unsupported) is Support.unsupported:
        raise errors.UnsupportedOrder(
            f"this broker does not take time_in_force {time_in_force.value}"
        )
    if quantity_is_fractional and capabilities.fractional is Support.unsupported:
        raise errors.UnsupportedOrder("this broker does not take fractional quantities")
    if extended_hours and capabilities.extended_hours is Support.unsupported:
        raise errors.UnsupportedOrder("this broker does not take extended-hours orders")
    if notional:
        _check_notional(capabilities, order_type)
    if short_sale and capabilities.short_selling is Support.unsupported:
        raise errors.UnsupportedOrder("this broker does not take short sales")
    return asset_class


def _check_notional(capabilities: Capabilities, order_type: OrderType) -> None:
    """A dollar-amount order (ISSUE 15 item 3): a market order needs ``capabilities.notional``,
    a limit order ``notional_limit`` (Robinhood takes amounts on limit orders only)."""
    if order_type is OrderType.limit:
        if capabilities.notional_limit is Support.unsupported:
            raise errors.UnsupportedOrder(
                "this broker does not take dollar-amount (notional) limit orders"
            )
    elif capabilities.notional is Support.unsupported:
        raise errors.UnsupportedOrder(
            "this broker does not take dollar-amount (notional) market orders"
        )


def _check_single_option(
    capabilities: Capabilities, order_type: OrderType, time_in_force: TimeInForce
) -> None:
    options = capabilities.options
    if options.single_order_types is not None and order_type not in options.single_order_types:
        raise errors.UnsupportedOrder(
            f"this broker does not take {order_type.value} orders for options"
        )
    if (
        options.single_time_in_force is not None
        and time_in_force not in options.single_time_in_force
    ):
        raise errors.UnsupportedOrder(
            f"this broker does not take time_in_force {time_in_force.value} for options"
        )


def _check_combo(
    capabilities: Capabilities,
    legs: int,
    order_type: OrderType,
    time_in_force: TimeInForce,
    price_effect: PriceEffect | None,
) -> None:
    options = capabilities.options
    if capabilities.multi_leg is Support.unsupported:
        raise errors.UnsupportedOrder("this broker does not take multi-leg orders")
    if legs > options.max_legs:
        raise errors.UnsupportedOrder(
            f"this broker takes at most {options.max_legs} legs in one order, not {legs}"
        )
    if order_type not in options.combo_order_types:
        raise errors.UnsupportedOrder(
            f"this broker does not take {order_type.value} orders for multi-leg orders"
        )
    if time_in_force not in options.combo_time_in_force:
        raise errors.UnsupportedOrder(
            f"this broker does not take time_in_force {time_in_force.value} for multi-leg orders"
        )
    if price_effect is not None and price_effect not in options.combo_price_effects:
        raise errors.UnsupportedOrder(
            f"this broker does not take {price_effect.value} multi-leg orders"
        )
