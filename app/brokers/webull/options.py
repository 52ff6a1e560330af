"""Webull option orders, legs and positions <-> the gateway's option model.

Wire reference (current generation, PyPI ``webull-openapi-python-sdk`` 3.0.4
``samples/trade/trade_client_v3.py`` "Option Order Example"; response beans of
webull-inc/webull-openapi-java-sdk ``trade/response/NOrderItem.java``,
``NOrderItemLeg.java``, ``CommonPositionInfo.java``, ``v3/AccountPositionsInfo.java``):

* an option order is one ``new_orders`` entry with ``combo_type`` ``NORMAL``,
  ``option_strategy``, ``side``, ``order_type``, ``quantity`` (strategy units),
  ``limit_price``, ``time_in_force``, ``entrust_type`` ``QTY``, ``position_intent``
  (``BUY_TO_OPEN`` ... ``SELL_TO_CLOSE``, options only) and ``legs``; each leg is
  decomposed, never an OCC string: ``{side, quantity, symbol (the underlying), strike_price,
  option_expire_date (yyyy-MM-dd), instrument_type OPTION, option_type CALL|PUT, market US}``;
* ``option_strategy`` is named by Webull: ``SINGLE, COVERED_STOCK, STRADDLE, STRANGLE,
  VERTICAL, CALENDAR, BUTTERFLY, CONDOR, COLLAR_WITH_STOCK, IRON_BUTTERFLY, IRON_CONDOR``
  (Java SDK ``core/common/dict/OptionStrategy.java``); the gateway infers it from the legs
  (``infer_strategy``) and refuses legs that form none of the option-only ones;
* an order item read back carries ``option_strategy``, ``position_intent`` and ``legs`` with
  each leg's ``id`` (the replace call names legs by it, 3.x sample "replace for Webull US");
* a position row of an option strategy carries ``option_strategy`` and ``legs`` of
  ``CommonPositionInfo`` (``side, quantity, symbol, cost_price, last_price, option_type,
  option_expire_date, option_exercise_price, option_contract_multiplier``); each leg is one
  gateway position (long and short legs are separate positions).

**Unconfirmed** (no doc page shows a response body): whether a position leg's ``symbol`` is
the underlying or an option code (read here as the underlying, as on order legs), and
whether ``cost_price``/``last_price`` are per share (read as per share, like the snapshot).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from app.brokers import errors
from app.brokers.base import (
    AssetClass,
    BrokerOrderLeg,
    OptionContract,
    OptionRight,
    OrderRequest,
    OrderSide,
    OrderType,
    Position,
    PositionEffect,
    PriceEffect,
)
from app.brokers.wire import WireReader

SLUG = "webull"
WIRE = WireReader(SLUG)
MAX_LEGS = 4
_RIGHTS = {"CALL": OptionRight.call, "PUT": OptionRight.put}
_WIRE_RIGHTS = {v: k for k, v in _RIGHTS.items()}
_INTENTS = {
    "BUY_TO_OPEN": (OrderSide.buy, PositionEffect.open),
    "BUY_TO_CLOSE": (OrderSide.buy, PositionEffect.close),
    "SELL_TO_OPEN": (OrderSide.sell, PositionEffect.open),
    "SELL_TO_CLOSE": (OrderSide.sell, PositionEffect.close),
}
_WIRE_INTENTS = {v: k for k, v in _INTENTS.items()}
# Java SDK OptionStrategy.java: every name Webull takes (the gateway sends only option-only
# strategies; COVERED_STOCK and COLLAR_WITH_STOCK carry a stock leg).
STRATEGIES = frozenset(
    {
        "SINGLE",
        "COVERED_STOCK",
        "STRADDLE",
        "STRANGLE",
        "VERTICAL",
        "CALENDAR",
        "BUTTERFLY",
        "CONDOR",
        "COLLAR_WITH_STOCK",
        "IRON_BUTTERFLY",
        "IRON_CONDOR",
    }
)


@dataclass(frozen=True, slots=True)
class Leg:
    """One leg as the strategy inference sees it."""

    contract: OptionContract
    side: OrderSide
    ratio: int


def intent_to_wire(side: OrderSide, effect: PositionEffect) -> str:
    return _WIRE_INTENTS[(side, effect)]


def intent_from_wire(raw: object) -> tuple[OrderSide, PositionEffect]:
    return WIRE.lookup(_INTENTS, raw, "position_intent")


def contract_to_wire(contract: OptionContract) -> dict[str, str]:
    return {
        "symbol": contract.underlying,
        "strike_price": str(contract.strike),
        "option_expire_date": contract.expiration.isoformat(),
        "instrument_type": "OPTION",
        "option_type": _WIRE_RIGHTS[contract.right],
        "market": "US",
    }


def contract_from_wire(
    leg: dict[str, Any], *, strike_field: str = "strike_price"
) -> OptionContract:
    underlying = leg.get("symbol")
    if not isinstance(underlying, str) or not underlying.isalnum():
        raise WIRE.unknown("option leg symbol", underlying)
    right = WIRE.lookup(_RIGHTS, leg.get("option_type"), "option_type")
    raw_date = leg.get("option_expire_date")
    try:
        expiration = date.fromisoformat(str(raw_date))
    except ValueError:
        raise WIRE.unknown("option_expire_date", raw_date) from None
    strike = WIRE.decimal(leg.get(strike_field), strike_field).normalize()
    if strike == strike.to_integral_value():
        strike = strike.quantize(Decimal(1))
    multiplier = WIRE.opt_decimal(leg.get("option_contract_multiplier"), "multiplier")
    return OptionContract(
        underlying=underlying,
        root=underlying,
        expiration=expiration,
        right=right,
        strike=strike,
        multiplier=multiplier or Decimal(100),
    )


def _unsupported(message: str) -> errors.UnsupportedOrder:
    return errors.UnsupportedOrder(message, broker=SLUG)


def infer_strategy(legs: Sequence[Leg]) -> str:
    """The ``option_strategy`` Webull requires for these legs (raises when none fits)."""
    if len(legs) == 1:
        return "SINGLE"
    if len({leg.contract.underlying for leg in legs}) != 1:
        raise _unsupported("Webull option strategies take one underlying")
    by_strike = sorted(legs, key=lambda leg: (leg.contract.strike, leg.contract.right.value))
    rights = {leg.contract.right for leg in legs}
    expiries = {leg.contract.expiration for leg in legs}
    sides = [leg.side for leg in by_strike]
    ratios = [leg.ratio for leg in by_strike]
    strikes = [leg.contract.strike for leg in by_strike]
    if len(legs) == 2 and ratios == [1, 1]:
        first, second = by_strike
        if len(rights) == 1 and len(expiries) == 1 and sides[0] != sides[1]:
            if strikes[0] != strikes[1]:
                return "VERTICAL"
        if len(rights) == 1 and len(expiries) == 2 and sides[0] != sides[1]:
            if strikes[0] == strikes[1]:
                return "CALENDAR"
        if len(rights) == 2 and len(expiries) == 1 and first.side == second.side:
            if strikes[0] == strikes[1]:
                return "STRADDLE"
            put, call = (
                (first, second) if first.contract.right is OptionRight.put else (second, first)
            )
            if put.contract.strike < call.contract.strike:
                return "STRANGLE"
    if len(legs) == 3 and len(rights) == 1 and len(expiries) == 1 and ratios == [1, 2, 1]:
        if sides[0] == sides[2] != sides[1] and strikes[1] - strikes[0] == strikes[2] - strikes[1]:
            return "BUTTERFLY"
    if len(legs) == 4 and len(expiries) == 1 and ratios == [1, 1, 1, 1]:
        if len(rights) == 1 and len(set(strikes)) == 4:
            if sides[0] == sides[3] and sides[1] == sides[2] and sides[0] != sides[1]:
                return "CONDOR"
        if len(rights) == 2:
            puts = [leg for leg in by_strike if leg.contract.right is OptionRight.put]
            calls = [leg for leg in by_strike if leg.contract.right is OptionRight.call]
            if (
                len(puts) == 2
                and len(calls) == 2
                and puts[1].contract.strike <= calls[0].contract.strike
            ):
                # Wings on one side of the body: long outer and short inner legs, or the reverse.
                outer = {puts[0].side, calls[1].side}
                inner = {puts[1].side, calls[0].side}
                if len(outer) == 1 and len(inner) == 1 and outer != inner:
                    if puts[1].contract.strike == calls[0].contract.strike:
                        return "IRON_BUTTERFLY"
                    return "IRON_CONDOR"
    raise _unsupported(
        "these legs form no option strategy Webull names (single, vertical, calendar, "
        "straddle, strangle, butterfly, condor, iron butterfly, iron condor)"
    )


def order_legs(order: OrderRequest) -> list[Leg]:
    if order.legs:
        return [Leg(OptionContract.parse(leg.symbol), leg.side, leg.ratio) for leg in order.legs]
    return [Leg(OptionContract.parse(order.symbol), order.side, 1)]


def option_order_to_wire(order: OrderRequest, base: dict[str, Any]) -> dict[str, Any]:
    """The option fields of one ``new_orders`` entry, on top of ``base`` (id, type, prices,
    time in force)."""
    if order.order_type is not OrderType.limit:
        raise _unsupported("Webull option orders are limit orders here")
    if order.is_multi_leg and order.price_effect is PriceEffect.even:
        raise _unsupported("Webull takes a debit (BUY) or a credit (SELL), not an even price")
    legs = order_legs(order)
    if len(legs) > MAX_LEGS:
        raise _unsupported(f"Webull takes at most {MAX_LEGS} option legs")
    strategy = infer_strategy(legs)
    body = {
        **base,
        "combo_type": "NORMAL",
        "option_strategy": strategy,
        "side": "BUY" if order.side is OrderSide.buy else "SELL",
        "quantity": str(order.quantity),
        "entrust_type": "QTY",
        "legs": [
            {
                "side": "BUY" if leg.side is OrderSide.buy else "SELL",
                "quantity": str(order.quantity * leg.ratio),
                **contract_to_wire(leg.contract),
            }
            for leg in legs
        ],
    }
    if not order.legs:
        if order.position_effect is None:
            raise _unsupported("an option order needs position_effect (open or close)")
        body["position_intent"] = intent_to_wire(order.side, order.position_effect)
    return body


def legs_from_wire(
    item: dict[str, Any], quantity: Decimal, filled: Decimal, avg_price: Decimal | None
) -> tuple[BrokerOrderLeg, ...]:
    """An option order item's ``legs`` (ratio = leg quantity / strategy quantity)."""
    raw = item.get("legs")
    if not isinstance(raw, list) or not raw:
        raise WIRE.unknown("option order legs", type(raw).__name__)
    result = []
    for leg in raw:
        if not isinstance(leg, dict):
            raise WIRE.unknown("option order leg", type(leg).__name__)
        contract = contract_from_wire(leg)
        side = WIRE.lookup({"BUY": OrderSide.buy, "SELL": OrderSide.sell}, leg.get("side"), "side")
        leg_qty = WIRE.decimal(leg.get("quantity"), "leg quantity")
        ratio = leg_qty / quantity if quantity else Decimal(1)
        if ratio != ratio.to_integral_value() or ratio < 1:
            raise WIRE.unknown("option leg ratio", str(ratio))
        leg_id = leg.get("id")
        result.append(
            BrokerOrderLeg(
                symbol=contract.symbol,
                side=side,
                ratio=int(ratio),
                position_effect=None,
                filled_quantity=filled * ratio,
                avg_fill_price=avg_price if len(raw) == 1 else None,
                broker_leg_id=str(leg_id) if leg_id is not None else None,
            )
        )
    return tuple(result)


def positions_from_wire(body: dict[str, Any], now: datetime) -> list[Position]:
    """An option position row: one gateway position per leg, quantity signed by side."""
    raw = body.get("legs")
    if not isinstance(raw, list) or not raw:
        raise WIRE.unknown("option position legs", type(raw).__name__)
    result = []
    for leg in raw:
        if not isinstance(leg, dict):
            raise WIRE.unknown("option position leg", type(leg).__name__)
        if leg.get("instrument_type") not in (None, "OPTION"):
            raise WIRE.unknown("option position leg instrument_type", leg.get("instrument_type"))
        contract = contract_from_wire(leg, strike_field="option_exercise_price")
        side = WIRE.lookup({"BUY": 1, "SELL": -1, "SHORT": -1}, leg.get("side"), "leg side")
        quantity = WIRE.decimal(leg.get("quantity"), "quantity") * side
        price = WIRE.decimal(leg.get("last_price"), "last_price")
        cost = WIRE.decimal(leg.get("cost_price"), "cost_price")
        value = price * quantity * contract.multiplier
        result.append(
            Position(
                symbol=contract.symbol,
                asset_class=AssetClass.option,
                quantity=quantity,
                avg_cost=cost,
                current_price=price,
                market_value=value,
                unrealized_pl=WIRE.opt_decimal(
                    leg.get("unrealized_profit_loss"), "unrealized_profit_loss"
                )
                or (price - cost) * quantity * contract.multiplier,
                as_of=now,
                contract=contract,
            )
        )
    return result


def replace_legs(item: dict[str, Any], quantity: Decimal) -> list[dict[str, str]]:
    """``modify_orders[].legs`` for a new strategy quantity: each leg by its ``id`` with
    ratio x quantity (3.x sample: "If it is a multi-leg option, you need to manually match it
    to the corresponding sub-leg orderId")."""
    current = WIRE.decimal(item.get("total_quantity", item.get("quantity")), "total_quantity")
    result = []
    for leg in item.get("legs") or []:
        if not isinstance(leg, dict) or leg.get("id") in (None, ""):
            raise WIRE.unknown("option order leg id", None)
        ratio = WIRE.decimal(leg.get("quantity"), "leg quantity") / current
        result.append({"id": str(leg["id"]), "quantity": str(quantity * ratio)})
    return result
