"""SnapTrade option wire format <-> normalized models. Strict: unknown values raise.

Wire reference: the official OpenAPI spec (passiv/snaptrade-sdks ``api.yaml``, copy in
../shared/specs/snaptrade-api.yaml). What it says, and what this module does with it:

* One endpoint places single- and multi-leg option orders: ``POST /accounts/{id}/trading/
  options`` (``Trading_placeMlegOrder``) with an ``MlegTradeForm``: ``order_type`` (MARKET,
  LIMIT, STOP_LOSS_MARKET, STOP_LOSS_LIMIT), ``time_in_force`` (Day, GTC, FOK, IOC),
  ``limit_price``/``stop_price`` as decimal *strings*, ``price_effect`` (CREDIT, DEBIT, EVEN;
  a net-even order "is implicitly priced at 0, so the field may be omitted and must be 0 if
  sent") and ``legs[{instrument{symbol (21-character OCC), instrument_type OPTION|EQUITY},
  action BUY_TO_OPEN|..., units (integer contracts)}]``. The impact call
  (``.../trading/options/impact``, "up to 4 legs") takes the same body and answers
  ``OptionImpact`` ``{estimated_cash_change, cash_change_direction, estimated_fee_total}``.
* The placement answers ``MlegOrderResponse`` ``{brokerage_order_id, orders[]}`` where "each
  record represents a single order leg" (``AccountOrderRecord``); reading an order back with
  its legs is the V2 format (``AccountOrderRecordV2`` with ``legs[]`` and ``price_effect``,
  ``GET /accounts/{id}/orders/details/v2/{brokerageOrderId}``): the V1 detail "only works for
  single-leg orders at this time".
* Prices on option orders are per share ("For option orders, this represents the price per
  share"), as in the gateway. Positions (``/positions/all``, ``OptionInstrument``): ``price``
  and ``cost_basis`` per share, ``units`` signed, ``multiplier`` per contract (10 for minis).
  The deprecated ``/holdings`` (410 for customers from May 11, 2026) has ``option_positions``
  whose ``average_purchase_price`` is *per contract* ("divide this value by the number of
  shares per contract"); it is not read: ``/positions/all`` is already per share.
* Option quotes: ``GET /accounts/{id}/quotes/options?symbol=<OCC>`` (``OptionQuote``): one
  derived ``synthetic_price``, ``implied_volatility`` and greeks, no bid or ask ("derived
  values [...] not suitable for trading purposes"); the spec marks it deprecated and says it
  "will cease to return data as of October 1, 2026".
* Activities: ``OPTIONEXPIRATION``, ``OPTIONASSIGNMENT``, ``OPTIONEXERCISE`` with the contract
  in ``option_symbol`` (``UniversalActivity.type``) and the activity's ``id``. ``units`` is
  "the number of units of the security for the transaction", with no sign convention stated
  for these types, so the lifecycle sweep (app/services/lifecycle.py) takes the closed side
  from the account's known positions, not from it. The spec warns the ``id`` "can change if
  the transaction is deleted and re-added" (rare: SnapTrade re-fetching the brokerage's
  data); such a re-added event would be a second order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from app.brokers import errors
from app.brokers.base import (
    BrokerOrder,
    BrokerOrderLeg,
    InvalidOptionSymbol,
    OptionContract,
    OrderLeg,
    OrderPreview,
    OrderRequest,
    OrderSide,
    OrderType,
    PositionEffect,
    PreviewSource,
    PriceEffect,
    Quote,
    TimeInForce,
    is_option_symbol,
)
from app.brokers.rows import RowList, read_rows
from app.brokers.snaptrade.mapping import (
    SLUG,
    WIRE,
    contract_of,
    dec,
    opt_dec,
    order_status,
    tidy,
    ts,
    unknown,
)

_ZERO = Decimal(0)
MAX_LEGS = 4  # "Simulates an option order with up to 4 legs" (Trading_getOptionImpact)

# MlegOrderTypeStrict
_MLEG_TYPES_OUT = {
    OrderType.market: "MARKET",
    OrderType.limit: "LIMIT",
    OrderType.stop: "STOP_LOSS_MARKET",
    OrderType.stop_limit: "STOP_LOSS_LIMIT",
}
# TimeInForceStrict (the same enum as the equity impact form)
_TIF_OUT = {
    TimeInForce.day: "Day",
    TimeInForce.gtc: "GTC",
    TimeInForce.fok: "FOK",
    TimeInForce.ioc: "IOC",
}
_PRICE_EFFECT_OUT = {
    PriceEffect.debit: "DEBIT",
    PriceEffect.credit: "CREDIT",
    PriceEffect.even: "EVEN",
}
# MlegActionStrict for an option leg
_ACTIONS_OUT = {
    (OrderSide.buy, PositionEffect.open): "BUY_TO_OPEN",
    (OrderSide.buy, PositionEffect.close): "BUY_TO_CLOSE",
    (OrderSide.sell, PositionEffect.open): "SELL_TO_OPEN",
    (OrderSide.sell, PositionEffect.close): "SELL_TO_CLOSE",
}
# ActionStrictV2 (and the V1 record's ``action`` on option legs): side and, where said, effect
_ACTIONS_IN: dict[str, tuple[OrderSide, PositionEffect | None]] = {
    "BUY_TO_OPEN": (OrderSide.buy, PositionEffect.open),
    "BUY_TO_CLOSE": (OrderSide.buy, PositionEffect.close),
    "SELL_TO_OPEN": (OrderSide.sell, PositionEffect.open),
    "SELL_TO_CLOSE": (OrderSide.sell, PositionEffect.close),
    "BUY": (OrderSide.buy, None),
    "SELL": (OrderSide.sell, None),
    "BUY_COVER": (OrderSide.buy, PositionEffect.close),
    "SELL_SHORT": (OrderSide.sell, PositionEffect.open),
}
# AccountOrderRecordV2.order_type / time_in_force (upper case in the V2 format)
_V2_TYPES = {
    "MARKET": OrderType.market,
    "LIMIT": OrderType.limit,
    "STOP": OrderType.stop,
    "STOP_LIMIT": OrderType.stop_limit,
}
_V2_TIF = {
    "DAY": TimeInForce.day,
    "GTC": TimeInForce.gtc,
    "FOK": TimeInForce.fok,
    "IOC": TimeInForce.ioc,
}
# V1 records of option legs use the V1 vocabulary (``Limit``, ``Day``)
_V1_TYPES = {
    "Market": OrderType.market,
    "Limit": OrderType.limit,
    "Stop": OrderType.stop,
    "StopLimit": OrderType.stop_limit,
}
_V1_TIF = {
    "Day": TimeInForce.day,
    "GTC": TimeInForce.gtc,
    "FOK": TimeInForce.fok,
    "IOC": TimeInForce.ioc,
}
# AccountOrderRecordV2.price_effect; UNKNOWN: the direction could not be determined
_PRICE_EFFECT_IN: dict[str, PriceEffect | None] = {
    "DEBIT": PriceEffect.debit,
    "CREDIT": PriceEffect.credit,
    "EVEN": PriceEffect.even,
    "UNKNOWN": None,
}
# AccountOrderRecordStatusV2 of a leg (the V2 order's own status is the V1 enum)
_LEG_STATUSES = frozenset(
    {
        "PENDING",
        "REJECTED",
        "CANCELED",
        "CANCEL_PENDING",
        "PARTIAL_CANCELED",
        "EXECUTED",
        "PARTIALLY_EXECUTED",
        "REPLACED",
        "REPLACE_PENDING",
        "EXPIRED",
    }
)


def _obj(value: object, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise unknown(field, type(value).__name__)
    return value


def is_option_order(order: OrderRequest) -> bool:
    return order.is_multi_leg or is_option_symbol(order.symbol)


def wire_symbol(symbol: str) -> str:
    """Our symbol (canonical unpadded OCC, or padded) as SnapTrade takes it: 21 characters."""
    return OptionContract.parse(symbol).occ_padded


def _refuse(reason: str) -> errors.UnsupportedOrder:
    return errors.UnsupportedOrder(reason, broker=SLUG)


def _whole(value: Decimal, field: str) -> int:
    if value != value.to_integral_value() or value <= 0:
        raise _refuse(f"{field} must be a whole number of contracts above zero, not {value}")
    return int(value)


def order_legs(order: OrderRequest) -> tuple[OrderLeg, ...]:
    """The legs to send: a multi-leg order's own, or the single leg of a one-contract order."""
    if order.is_multi_leg:
        return order.legs
    if order.position_effect is None:
        raise _refuse("an option order needs a position effect (open or close)")
    return (OrderLeg(order.symbol, order.side, 1, order.position_effect),)


def order_direction(order: OrderRequest) -> PriceEffect | None:
    """Which way cash moves: a multi-leg order's price effect (None: a market combo that
    names none); a single leg: buy = debit, sell = credit."""
    if order.is_multi_leg:
        return order.price_effect
    return PriceEffect.debit if order.side is OrderSide.buy else PriceEffect.credit


def check_option_order(order: OrderRequest) -> tuple[OrderLeg, ...]:
    """What SnapTrade's form cannot carry, refused before any request (``UnsupportedOrder``):
    more than 4 legs, a repeated or malformed contract, legs on several underlyings, ratios
    that are not whole or share a factor, fractional strategy units, extended hours."""
    legs = order_legs(order)
    units = _whole(order.quantity, "quantity")
    if len(legs) > MAX_LEGS:
        raise _refuse(f"SnapTrade takes at most {MAX_LEGS} legs, not {len(legs)}")
    if order.is_multi_leg and len(legs) < 2:
        raise _refuse("a multi-leg order has at least two legs")
    contracts = []
    for leg in legs:
        try:
            contracts.append(OptionContract.parse(leg.symbol))
        except InvalidOptionSymbol as exc:
            raise _refuse(f"{leg.symbol!r} is not an OCC option symbol") from exc
        if leg.ratio < 1:
            raise _refuse(f"leg ratio {leg.ratio} must be 1 or more")
        _whole(Decimal(leg.ratio * units), "leg quantity")
    if len({c.symbol for c in contracts}) != len(contracts):
        raise _refuse("each leg must be a different contract")
    if len({c.underlying for c in contracts}) != 1:
        raise _refuse("every leg must be on the same underlying")
    if math.gcd(*(leg.ratio for leg in legs)) != 1:
        raise _refuse("leg ratios must have no common factor")
    if order.is_multi_leg and contracts[0].underlying != order.symbol.upper():
        raise _refuse(f"the legs' underlying is {contracts[0].underlying}, not {order.symbol}")
    if order.extended_hours:
        raise _refuse("SnapTrade's option form has no extended-hours session")
    return legs


def mleg_form(order: OrderRequest) -> dict[str, Any]:
    """The ``MlegTradeForm`` of an option order (one leg or several); checked first."""
    legs = check_option_order(order)
    units = int(order.quantity)
    direction = order_direction(order)
    form: dict[str, Any] = {
        "order_type": _MLEG_TYPES_OUT[order.order_type],
        "time_in_force": _TIF_OUT[order.time_in_force],
        "legs": [
            {
                "instrument": {"symbol": wire_symbol(leg.symbol), "instrument_type": "OPTION"},
                "action": _ACTIONS_OUT[(leg.side, leg.position_effect)],
                "units": leg.ratio * units,
            }
            for leg in legs
        ],
    }
    if order.order_type in (OrderType.limit, OrderType.stop_limit):
        if direction is None:
            raise _refuse("a priced multi-leg order needs a price effect (debit, credit, even)")
        form["price_effect"] = _PRICE_EFFECT_OUT[direction]
        if direction is PriceEffect.even:
            if order.limit_price not in (None, _ZERO):
                raise _refuse("a net-even order is priced at 0")
            form["limit_price"] = "0"
        else:
            if order.limit_price is None or order.limit_price <= 0:
                raise _refuse("a limit order needs a limit price above zero (unsigned)")
            form["limit_price"] = str(tidy(order.limit_price))
    if order.order_type in (OrderType.stop, OrderType.stop_limit):
        if order.stop_price is None or order.stop_price <= 0:
            raise _refuse("a stop order needs a stop price above zero")
        form["stop_price"] = str(tidy(order.stop_price))
    return form


# --- impact (preview) ---------------------------------------------------------------------

_DIRECTIONS: dict[str, PriceEffect | None] = {
    "DEBIT": PriceEffect.debit,
    "CREDIT": PriceEffect.credit,
    "EVEN": PriceEffect.even,
    "UNKNOWN": None,
}


def impact_direction(body: object) -> PriceEffect | None:
    """The ``cash_change_direction`` of an ``OptionImpact`` (None: null or UNKNOWN)."""
    raw = _obj(body, "option impact").get("cash_change_direction")
    if raw is None:
        return None
    return WIRE.lookup(_DIRECTIONS, raw, "cash_change_direction")


def preview_from_impact(body: object, order: OrderRequest) -> OrderPreview:
    """An ``OptionImpact`` as an ``OrderPreview`` (signed from the account's side: a debit is
    cash leaving it). Where SnapTrade cannot tell the direction, the order's is taken and a
    warning says so; where it contradicts the order's, the preview carries a rejection."""
    impact = _obj(body, "option impact")
    change = dec(impact.get("estimated_cash_change"), "estimated_cash_change")
    fees = opt_dec(impact.get("estimated_fee_total"), "estimated_fee_total") or _ZERO
    wanted = order_direction(order)
    said = impact_direction(impact)
    warnings: list[str] = []
    rejections: list[str] = []
    direction: PriceEffect = said if said is not None else (wanted or PriceEffect.debit)
    if said is None:
        warnings.append(
            "SnapTrade could not tell the cash direction; "
            + ("the order's is shown" if wanted else "shown as a debit (the cautious reading)")
        )
    elif wanted is not None and said is not wanted:
        rejections.append(f"the order says {wanted.value} but SnapTrade's impact is a {said.value}")
    magnitude = abs(change)
    signed = -magnitude if direction is PriceEffect.debit else magnitude
    if direction is PriceEffect.even:
        signed = _ZERO
    return OrderPreview(
        estimated_cash_change=tidy(signed),
        direction=direction,
        buying_power_change=None,
        fees=fees,
        warnings=tuple(warnings),
        rejections=tuple(rejections),
        source=PreviewSource.broker,
    )


# --- orders -------------------------------------------------------------------------------


def _net(legs: Sequence[BrokerOrderLeg]) -> Decimal | None:
    """The net price per strategy unit the legs' fills make (positive: a debit)."""
    total = _ZERO
    for leg in legs:
        if leg.avg_fill_price is None:
            return None
        total += (1 if leg.side is OrderSide.buy else -1) * leg.ratio * leg.avg_fill_price
    return total


def _units(quantities: Sequence[Decimal]) -> Decimal:
    if not quantities or any(q <= 0 or q != q.to_integral_value() for q in quantities):
        raise unknown("leg quantities", [str(q) for q in quantities])
    return Decimal(math.gcd(*(int(q) for q in quantities)))


def _leg(
    symbol: str,
    action: object,
    total: Decimal,
    filled: Decimal,
    price: Decimal | None,
    units: Decimal,
    leg_id: object,
) -> BrokerOrderLeg:
    found = _ACTIONS_IN.get(str(action))
    if found is None:
        raise unknown("leg action", action)
    ratio = total / units
    if ratio != ratio.to_integral_value() or ratio < 1:
        raise unknown("leg quantity", str(total))
    return BrokerOrderLeg(
        symbol=symbol,
        side=found[0],
        ratio=int(ratio),
        position_effect=found[1],
        filled_quantity=filled,
        avg_fill_price=price if filled > _ZERO else None,
        broker_leg_id=leg_id if isinstance(leg_id, str) and leg_id else None,
    )


def _strategy(legs: tuple[BrokerOrderLeg, ...], units: Decimal) -> tuple[Decimal, Decimal | None]:
    """Strategy units filled (the fewest any leg has filled) and the net fill price."""
    filled = min(
        (leg.filled_quantity / leg.ratio).to_integral_value(rounding=ROUND_FLOOR) for leg in legs
    )
    net = _net(legs) if filled > _ZERO else None
    return filled, net


def _single_or_multi(
    *,
    order_id: str,
    legs: tuple[BrokerOrderLeg, ...],
    units: Decimal,
    underlying: str,
    order_type: OrderType,
    tif: TimeInForce,
    status_raw: object,
    limit: Decimal | None,
    stop: Decimal | None,
    price_effect: PriceEffect | None,
    execution: Decimal | None,
    created: datetime,
    updated: datetime,
) -> BrokerOrder:
    """A ``BrokerOrder`` of option legs: a plain option order for one leg (its symbol, side
    and effect at the top, no ``legs``), a multi-leg one otherwise (the underlying, the side
    from the price effect, each leg with its fills)."""
    filled, net = _strategy(legs, units)
    status = order_status(status_raw, units, filled)
    if len(legs) == 1:
        leg = legs[0]
        return BrokerOrder(
            broker_order_id=order_id,
            client_order_id=None,
            symbol=leg.symbol,
            side=leg.side,
            quantity=units,
            filled_quantity=leg.filled_quantity,
            avg_fill_price=leg.avg_fill_price if execution is None or not filled else execution,
            order_type=order_type,
            time_in_force=tif,
            status=status,
            limit_price=limit,
            stop_price=stop,
            created_at=created,
            updated_at=max(updated, created),
            position_effect=leg.position_effect,
        )
    if price_effect is None and net is not None:
        price_effect = (
            PriceEffect.debit if net > 0 else PriceEffect.credit if net < 0 else PriceEffect.even
        )
    avg = execution if execution is not None and filled > _ZERO else net
    return BrokerOrder(
        broker_order_id=order_id,
        client_order_id=None,
        symbol=underlying,
        side=OrderSide.sell if price_effect is PriceEffect.credit else OrderSide.buy,
        quantity=units,
        filled_quantity=filled,
        avg_fill_price=None if avg is None or not filled else tidy(abs(avg)),
        order_type=order_type,
        time_in_force=tif,
        status=status,
        limit_price=limit,
        stop_price=stop,
        created_at=created,
        updated_at=max(updated, created),
        legs=legs,
        price_effect=price_effect,
    )


def _prices(record: dict[str, Any], order_type: OrderType) -> tuple[Decimal | None, Decimal | None]:
    limit = (
        opt_dec(record.get("limit_price"), "limit_price")
        if order_type in (OrderType.limit, OrderType.stop_limit)
        else None
    )
    stop = (
        opt_dec(record.get("stop_price"), "stop_price")
        if order_type in (OrderType.stop, OrderType.stop_limit)
        else None
    )
    return (None if limit is None else abs(limit)), stop


def order_v2_from_wire(body: object) -> BrokerOrder:
    """An ``AccountOrderRecordV2`` of option legs (one or several) into a ``BrokerOrder``."""
    record = _obj(body, "order payload")
    order_id = record.get("brokerage_order_id")
    if not isinstance(order_id, str) or not order_id:
        raise unknown("brokerage_order_id", order_id)
    order_type = WIRE.lookup(_V2_TYPES, record.get("order_type"), "order type")
    tif = WIRE.lookup(_V2_TIF, record.get("time_in_force"), "time_in_force")
    price_effect = WIRE.lookup(_PRICE_EFFECT_IN, record.get("price_effect"), "price_effect")
    raw_legs = record.get("legs")
    if not isinstance(raw_legs, list) or not raw_legs:
        raise unknown("order legs", raw_legs)
    items = [_obj(item, "order leg") for item in raw_legs]
    for item in items:
        instrument = _obj(item.get("instrument"), "leg instrument")
        if instrument.get("asset_type") != "OPTION":
            raise unknown("leg asset_type (only option orders are read here)", instrument)
        status = item.get("status")
        if status is not None and status not in _LEG_STATUSES:
            raise unknown("leg status", status)
    totals = [dec(item.get("total_quantity"), "leg total_quantity") for item in items]
    units = _units(totals)
    contracts = [contract_of(item["instrument"].get("symbol")) for item in items]
    legs = tuple(
        _leg(
            contract.symbol,
            item.get("action"),
            total,
            opt_dec(item.get("filled_quantity"), "leg filled_quantity") or _ZERO,
            opt_dec(item.get("execution_price"), "leg execution_price"),
            units,
            item.get("leg_id"),
        )
        for item, total, contract in zip(items, totals, contracts, strict=True)
    )
    limit, stop = _prices(record, order_type)
    if price_effect is PriceEffect.even and order_type is OrderType.limit:
        limit = _ZERO
    created = ts(record.get("time_placed"), "time_placed")
    executed = record.get("time_executed")
    return _single_or_multi(
        order_id=order_id,
        legs=legs,
        units=units,
        underlying=contracts[0].underlying,
        order_type=order_type,
        tif=tif,
        status_raw=record.get("status"),
        limit=limit,
        stop=stop,
        price_effect=price_effect,
        execution=opt_dec(record.get("execution_price"), "execution_price"),
        created=created,
        updated=ts(executed, "time_executed") if executed else created,
    )


def orders_v2_from_wire(body: object) -> RowList[BrokerOrder]:
    """The option orders of an ``AccountOrdersV2Response`` (equity and crypto orders are read
    from the V1 list, and left out here)."""
    answer = _obj(body, "orders payload")
    orders = answer.get("orders")
    if not isinstance(orders, list):
        raise unknown("orders", type(orders).__name__)
    return read_rows(orders, _option_order_v2, broker="snaptrade", kind="order")


def _option_order_v2(item: object) -> BrokerOrder | None:
    """One ``AccountOrderRecordV2``: an option order with its legs (None: equity or crypto)."""
    record = _obj(item, "order payload")
    legs = record.get("legs")
    if not isinstance(legs, list) or not legs:
        raise unknown("order legs", legs)
    kinds = {
        _obj(_obj(leg, "order leg").get("instrument"), "leg instrument").get("asset_type")
        for leg in legs
    }
    return order_v2_from_wire(record) if kinds == {"OPTION"} else None


def _v1_status(records: list[dict[str, Any]]) -> str:
    """One status for the records of one order's legs: theirs when they agree; else a fill
    on some leg makes it PARTIAL, and otherwise the order is still working (ACCEPTED)."""
    statuses = {str(r.get("status")) for r in records}
    if len(statuses) == 1:
        return statuses.pop()
    for status in statuses:
        if status not in _V1_KNOWN:
            raise unknown("order status", status)
    filled = any((opt_dec(r.get("filled_quantity"), "filled_quantity") or 0) > 0 for r in records)
    return "PARTIAL" if filled else "ACCEPTED"


_V1_KNOWN = frozenset(
    {
        "PENDING",
        "ACCEPTED",
        "FAILED",
        "REJECTED",
        "CANCELED",
        "PARTIAL_CANCELED",
        "CANCEL_PENDING",
        "EXECUTED",
        "PARTIAL",
        "REPLACE_PENDING",
        "REPLACED",
        "STOPPED",
        "SUSPENDED",
        "EXPIRED",
        "QUEUED",
        "TRIGGERED",
        "ACTIVATED",
        "PENDING_RISK_REVIEW",
        "CONTINGENT_ORDER",
    }
)


def placed_from_wire(body: object, order: OrderRequest) -> BrokerOrder:
    """A ``MlegOrderResponse`` (one ``AccountOrderRecord`` per leg) into the placed order.

    The records say each leg's contract, action, quantities, fills and status; the order's
    price effect is the one we sent (a V1 record carries none).
    """
    answer = _obj(body, "option order answer")
    order_id = answer.get("brokerage_order_id")
    if not isinstance(order_id, str) or not order_id:
        raise unknown("brokerage_order_id", order_id)
    records = answer.get("orders")
    if not isinstance(records, list) or not records:
        raise unknown("option order records", records)
    items = [_obj(r, "order record") for r in records]
    contracts = [
        contract_of(_obj(r.get("option_symbol"), "option_symbol").get("ticker")) for r in items
    ]
    totals = [dec(r.get("total_quantity"), "total_quantity") for r in items]
    units = _units(totals)
    legs = tuple(
        _leg(
            contract.symbol,
            r.get("action"),
            total,
            opt_dec(r.get("filled_quantity"), "filled_quantity") or _ZERO,
            opt_dec(r.get("execution_price"), "execution_price"),
            units,
            r.get("brokerage_order_id"),
        )
        for r, total, contract in zip(items, totals, contracts, strict=True)
    )
    first = items[0]
    order_type = WIRE.lookup(_V1_TYPES, first.get("order_type"), "order type")
    tif = WIRE.lookup(_V1_TIF, first.get("time_in_force"), "time_in_force")
    limit, stop = _prices(first, order_type)
    direction = order_direction(order)
    if not order.is_multi_leg and order.order_type is OrderType.market:
        direction = None  # a plain order carries no price effect
    created = min(ts(r.get("time_placed"), "time_placed") for r in items)
    return _single_or_multi(
        order_id=order_id,
        legs=legs,
        units=units,
        underlying=contracts[0].underlying,
        order_type=order_type,
        tif=tif,
        status_raw=_v1_status(items),
        limit=limit,
        stop=stop,
        price_effect=direction,
        execution=None,
        created=created,
        updated=created,
    )


def is_option_record(body: object) -> bool:
    return isinstance(body, dict) and body.get("option_symbol") is not None


# --- positions and quotes -----------------------------------------------------------------


def option_quote_from_wire(body: object, symbol: str, now: datetime) -> Quote:
    """An ``OptionQuote``: one derived price (``synthetic_price``) stands for bid, ask and
    last, since SnapTrade reports no book for a contract; ``as_of`` is its ``timestamp``."""
    answer = _obj(body, "option quote")
    if contract_of(answer.get("symbol")).symbol != OptionContract.parse(symbol).symbol:
        raise unknown("option quote symbol", answer.get("symbol"))
    price = dec(answer.get("synthetic_price"), "synthetic_price")
    stamp = answer.get("timestamp")
    return Quote(
        symbol=symbol,
        bid=price,
        ask=price,
        last=price,
        as_of=ts(stamp, "timestamp") if stamp else now,
    )
