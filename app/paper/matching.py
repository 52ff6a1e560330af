"""The paper market's matching rules, as pure functions of an order's state and one quote.

Nothing here reads the database, the clock or an account: cash and position limits are the
engine's business. The rules:

* Stops: a buy stop triggers when ``last >= stop``, a sell stop when ``last <= stop``. Once
  triggered, a stop works as a market order and a stop-limit as a limit order.
* Marketability: market orders always; a buy limit when ``ask <= limit``, a sell limit when
  ``bid >= limit``.
* Price and liquidity: buys fill at the ask, sells at the bid, and one evaluation fills at
  most the size displayed on that side at that step. That rule is what produces partial fills.
* Time in force: ``ioc`` fills what is available now and cancels the rest; ``fok`` fills
  everything now only if the displayed size covers the whole remaining quantity, otherwise it
  is canceled with nothing filled; ``day`` and ``gtc`` rest and are evaluated again on later
  steps. "Now" for IOC/FOK means the evaluation at submission: an IOC/FOK stop order that
  has not triggered at submission is canceled, since it cannot fill immediately.
* Combos (multi-leg option orders): each leg trades at its touch (buys at the ask, sells at
  the bid); the order fills whole, all legs at once, when its net price is marketable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from app.brokers.base import OrderSide, OrderType, PriceEffect, TimeInForce
from app.paper.quotes import PaperQuote

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class OrderState:
    """What matching needs to know about a working order."""

    side: OrderSide
    order_type: OrderType
    time_in_force: TimeInForce
    remaining: Decimal
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    stop_triggered: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one evaluation.

    ``fill_quantity`` is 0 when nothing fills (``fill_price`` is then None).
    ``cancel_remainder`` means whatever is left after this fill must be canceled (IOC/FOK),
    with ``reason`` saying why.
    """

    stop_triggered: bool
    fill_quantity: Decimal
    fill_price: Decimal | None
    cancel_remainder: bool
    reason: str | None = None

    @property
    def fills(self) -> bool:
        return self.fill_quantity > ZERO


def is_stop_type(order_type: OrderType) -> bool:
    return order_type in (OrderType.stop, OrderType.stop_limit)


def has_limit(order_type: OrderType) -> bool:
    return order_type in (OrderType.limit, OrderType.stop_limit)


def stop_hit(side: OrderSide, stop_price: Decimal, last: Decimal) -> bool:
    return last >= stop_price if side is OrderSide.buy else last <= stop_price


def touch_price(side: OrderSide, quote: PaperQuote) -> Decimal:
    """The price an order on ``side`` trades at: the ask for buys, the bid for sells."""
    return quote.ask if side is OrderSide.buy else quote.bid


def displayed_size(side: OrderSide, quote: PaperQuote) -> Decimal:
    """The liquidity an order on ``side`` can take at this step."""
    return quote.ask_size if side is OrderSide.buy else quote.bid_size


def limit_marketable(side: OrderSide, limit_price: Decimal, quote: PaperQuote) -> bool:
    return quote.ask <= limit_price if side is OrderSide.buy else quote.bid >= limit_price


def _immediate(tif: TimeInForce) -> bool:
    return tif in (TimeInForce.ioc, TimeInForce.fok)


def decide(order: OrderState, quote: PaperQuote) -> Decision:
    """Evaluate one working order against one quote.

    Raises ``ValueError`` when the order is inconsistent (a stop without a stop price, a
    limit without a limit price, nothing remaining): the engine validates before storing, so
    this only fires on a programming error.
    """
    if order.remaining <= ZERO:
        raise ValueError("nothing remaining to match")
    immediate = _immediate(order.time_in_force)
    triggered = order.stop_triggered
    if is_stop_type(order.order_type) and not triggered:
        if order.stop_price is None:
            raise ValueError("stop order without a stop price")
        triggered = stop_hit(order.side, order.stop_price, quote.last)
        if not triggered:
            reason = "stop not triggered at submission" if immediate else None
            return Decision(False, ZERO, None, immediate, reason)
    if has_limit(order.order_type):
        if order.limit_price is None:
            raise ValueError("limit order without a limit price")
        if not limit_marketable(order.side, order.limit_price, quote):
            reason = "limit not marketable at submission" if immediate else None
            return Decision(triggered, ZERO, None, immediate, reason)
    available = displayed_size(order.side, quote)
    price = touch_price(order.side, quote)
    if order.time_in_force is TimeInForce.fok and available < order.remaining:
        reason = f"fill-or-kill: {available} displayed, {order.remaining} wanted"
        return Decision(triggered, ZERO, None, True, reason)
    quantity = min(order.remaining, available)
    if order.time_in_force is TimeInForce.ioc and quantity < order.remaining:
        reason = f"immediate-or-cancel: {order.remaining - quantity} unfilled"
        return Decision(triggered, quantity, price, True, reason)
    return Decision(triggered, quantity, price, False)


@dataclass(frozen=True, slots=True)
class LegQuote:
    """One leg of a combo at one step: its side, its ratio and its contract's quote."""

    side: OrderSide
    ratio: int
    bid: Decimal
    ask: Decimal

    @property
    def price(self) -> Decimal:
        """What this leg trades at: the ask for a buy, the bid for a sell."""
        return self.ask if self.side is OrderSide.buy else self.bid


def net_credit(legs: Sequence[LegQuote]) -> Decimal:
    """The combo's net price per strategy unit, positive for a credit, negative for a debit."""
    return sum(
        (leg.price * leg.ratio * (1 if leg.side is OrderSide.sell else -1) for leg in legs), ZERO
    )


def combo_marketable(
    order_type: OrderType,
    price_effect: PriceEffect | None,
    limit_price: Decimal | None,
    credit: Decimal,
) -> bool:
    """Does a combo fill at this net? Market always; a limit when the net is at least as good:
    a credit of at least the limit, a debit of at most the limit, an even limit at no debit.
    Combos fill whole or not at all (all legs at once), so there is no size to consider."""
    if order_type is OrderType.market:
        return True
    if limit_price is None or price_effect is None:
        raise ValueError("a combo limit needs a limit price and a price effect")
    match price_effect:
        case PriceEffect.credit:
            return credit >= limit_price
        case PriceEffect.debit:
            return -credit <= limit_price
        case PriceEffect.even:
            return credit >= ZERO
