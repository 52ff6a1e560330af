"""Schwab Trader API wire format <-> normalized models. Strict: unknown values raise.

Wire reference: the Trader API spec ("Trader API - Account Access and User Preferences",
https://developer.schwab.com/products/trader-api--individual/details/specifications/Retail%20Trader%20API%20Production),
schemas ``Order``, ``OrderRequest``, ``SecuritiesAccount``, ``Position``, ``Transaction``,
``ServiceError``; the Market Data spec (``QuoteResponse``); alexgolec/schwab-py for the enums.

Schwab sends quantities and prices as JSON numbers; every body is parsed with
``parse_float=Decimal`` by the adapter so no binary float appears. Order ids are int64
numbers on the wire and strings here. Timestamps look like ``2024-03-19T14:30:00+0000``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import httpx

from app.brokers import errors
from app.brokers.base import (
    AssetClass,
    Balances,
    BrokerAccount,
    BrokerOrder,
    BrokerOrderLeg,
    ExpirationType,
    Fill,
    Greeks,
    InvalidOptionSymbol,
    OptionChainQuery,
    OptionContract,
    OptionExpiration,
    OptionQuote,
    OptionRight,
    OrderChanges,
    OrderLeg,
    OrderPreview,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    Position,
    PositionEffect,
    PreviewSource,
    PriceEffect,
    Quote,
    TimeInForce,
    Transaction,
    is_option_symbol,
)
from app.brokers.rows import RowList, read_rows
from app.brokers.wire import WireReader

log = logging.getLogger(__name__)

SLUG = "schwab"
WIRE = WireReader(SLUG)  # the shared wire readers (app/brokers/wire.py), for this broker
unknown, dec, opt_dec, ts = WIRE.unknown, WIRE.decimal, WIRE.opt_decimal, WIRE.timestamp
millis = WIRE.epoch_ms  # market data's ``quoteTime``, ``tradeTime``
_ZERO = Decimal(0)

S = OrderStatus
# Every value of the spec's ``apiOrderStatus`` enum (schwab-py ``Client.Order.Status``).
# ``None``: the order is live at Schwab; accepted or partially_filled by what has filled.
_STATUS: dict[str, OrderStatus | None] = {
    "AWAITING_PARENT_ORDER": None,  # a child of a trigger/OCO waiting for its parent
    "AWAITING_CONDITION": None,  # conditional order, condition not met yet
    "AWAITING_STOP_CONDITION": None,  # stop not triggered yet
    "AWAITING_MANUAL_REVIEW": S.submitted,  # Schwab has not accepted it yet
    "ACCEPTED": None,
    "AWAITING_UR_OUT": S.pending_cancel,  # waiting for the venue's cancel confirmation
    "PENDING_ACTIVATION": None,  # accepted, activates when its session opens
    "QUEUED": None,  # accepted, queued for the venue
    "WORKING": None,
    "REJECTED": S.rejected,
    "PENDING_CANCEL": S.pending_cancel,
    "CANCELED": S.canceled,
    "PENDING_REPLACE": S.pending_replace,
    "REPLACED": S.replaced,
    "FILLED": S.filled,
    "EXPIRED": S.expired,
    "NEW": S.submitted,  # received, not yet acknowledged
    "AWAITING_RELEASE_TIME": None,  # accepted, released to the venue at releaseTime
    "PENDING_ACKNOWLEDGEMENT": S.submitted,
    "PENDING_RECALL": S.pending_cancel,  # being pulled back from the venue
    # Schwab itself does not know the order's state: ours is ``unknown`` too, and
    # reconciliation keeps asking until Schwab says something definite.
    "UNKNOWN": S.unknown,
}
STATUSES = frozenset(_STATUS)
OPEN_STATUSES = frozenset(
    {k for k, v in _STATUS.items() if v is None}
    | {"AWAITING_MANUAL_REVIEW", "NEW", "PENDING_ACKNOWLEDGEMENT", "AWAITING_UR_OUT"}
    | {"PENDING_CANCEL", "PENDING_REPLACE", "PENDING_RECALL", "UNKNOWN"}
)
FINAL_STATUSES = STATUSES - OPEN_STATUSES

_ORDER_TYPES = {
    "MARKET": OrderType.market,
    "LIMIT": OrderType.limit,
    "STOP": OrderType.stop,
    "STOP_LIMIT": OrderType.stop_limit,
}
_ORDER_TYPES_OUT = {v: k for k, v in _ORDER_TYPES.items()}
# spec ``duration``: DAY | GOOD_TILL_CANCEL | FILL_OR_KILL | IMMEDIATE_OR_CANCEL |
# END_OF_WEEK | END_OF_MONTH | NEXT_END_OF_MONTH | UNKNOWN; the last four are not ours.
_DURATIONS = {
    "DAY": TimeInForce.day,
    "GOOD_TILL_CANCEL": TimeInForce.gtc,
    "FILL_OR_KILL": TimeInForce.fok,
    "IMMEDIATE_OR_CANCEL": TimeInForce.ioc,
}
_DURATIONS_OUT = {v: k for k, v in _DURATIONS.items()}
# spec ``instruction`` for equities (schwab-py ``orders/common.py EquityInstruction``).
_INSTRUCTIONS = {
    "BUY": OrderSide.buy,
    "SELL": OrderSide.sell,
    "BUY_TO_COVER": OrderSide.buy,
    "SELL_SHORT": OrderSide.sell,
}
_EQUITY_EFFECTS = {"BUY_TO_COVER": PositionEffect.close, "SELL_SHORT": PositionEffect.open}
# Options (schwab-py ``orders/common.py OptionInstruction``,
# https://github.com/alexgolec/schwab-py/blob/main/schwab/orders/common.py).
_OPTION_INSTRUCTIONS = {
    "BUY_TO_OPEN": (OrderSide.buy, PositionEffect.open),
    "SELL_TO_OPEN": (OrderSide.sell, PositionEffect.open),
    "BUY_TO_CLOSE": (OrderSide.buy, PositionEffect.close),
    "SELL_TO_CLOSE": (OrderSide.sell, PositionEffect.close),
}
_OPTION_INSTRUCTIONS_OUT = {v: k for k, v in _OPTION_INSTRUCTIONS.items()}
# A leg's ``positionEffect`` as Schwab reports it (spec ``OrderLegCollection``).
_POSITION_EFFECTS: dict[str, PositionEffect | None] = {
    "OPENING": PositionEffect.open,
    "CLOSING": PositionEffect.close,
    "AUTOMATIC": None,
}
# Combos carry their direction in ``orderType`` with a positive ``price`` (schwab-py
# ``orders/options.py`` verticals: NET_DEBIT / NET_CREDIT; ``OrderType.NET_ZERO``).
_NET_TYPES = {
    "NET_DEBIT": PriceEffect.debit,
    "NET_CREDIT": PriceEffect.credit,
    "NET_ZERO": PriceEffect.even,
}
_NET_TYPES_OUT = {v: k for k, v in _NET_TYPES.items()}
# spec/schwab-py ``ComplexOrderStrategyType``: every value, so a read-back is checked strictly.
COMPLEX_STRATEGIES = frozenset(
    {
        "NONE",
        "COVERED",
        "VERTICAL",
        "BACK_RATIO",
        "CALENDAR",
        "DIAGONAL",
        "STRADDLE",
        "STRANGLE",
        "COLLAR_SYNTHETIC",
        "BUTTERFLY",
        "CONDOR",
        "IRON_CONDOR",
        "VERTICAL_ROLL",
        "COLLAR_WITH_STOCK",
        "DOUBLE_DIAGONAL",
        "UNBALANCED_BUTTERFLY",
        "UNBALANCED_CONDOR",
        "UNBALANCED_IRON_CONDOR",
        "UNBALANCED_VERTICAL_ROLL",
        "MUTUAL_FUND_SWAP",
        "CUSTOM",
    }
)
_HUNDRED = Decimal(100)
_ASSET_TYPES = {
    "EQUITY": AssetClass.equity,
    "COLLECTIVE_INVESTMENT": AssetClass.equity,  # ETFs and closed-end funds
    "OPTION": AssetClass.option,
    "MUTUAL_FUND": AssetClass.mutual_fund,
}


def loads(text: str | bytes) -> Any:
    """JSON with every non-integer number as Decimal."""
    return json.loads(text, parse_float=Decimal)


def query_time(at: datetime) -> str:
    """``fromEnteredTime``/``toEnteredTime``: ``yyyy-MM-dd'T'HH:mm:ss.SSSZ`` in UTC (spec)."""
    at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def masked(number: str) -> str:
    return "****" + number[-4:] if len(number) > 4 else "****"


# --- accounts -----------------------------------------------------------------------------


def account_numbers(body: object) -> dict[str, str]:
    """``GET /accounts/accountNumbers``: ``[{"accountNumber", "hashValue"}]`` -> number: hash."""
    if not isinstance(body, list):
        raise unknown("accountNumbers payload", type(body).__name__)
    result: dict[str, str] = {}
    for item in body:
        if not isinstance(item, dict):
            raise unknown("accountNumbers item", type(item).__name__)
        number, hash_value = item.get("accountNumber"), item.get("hashValue")
        if not isinstance(number, str) or not isinstance(hash_value, str) or not hash_value:
            raise unknown("accountNumbers item", sorted(item))
        result[number] = hash_value
    return result


def securities_account(body: object) -> dict[str, Any]:
    """The ``securitiesAccount`` object of ``GET /accounts/{hash}`` (``Account`` schema)."""
    if not isinstance(body, dict) or not isinstance(body.get("securitiesAccount"), dict):
        raise unknown("account payload", type(body).__name__)
    account: dict[str, Any] = body["securitiesAccount"]
    if account.get("type") not in ("CASH", "MARGIN"):
        raise unknown("account type", account.get("type"))
    return account


def broker_account(account: dict[str, Any], hash_value: str) -> BrokerAccount:
    number = str(account.get("accountNumber") or "")
    kind = "Margin" if account["type"] == "MARGIN" else "Cash"
    return BrokerAccount(
        broker_account_id=hash_value,
        name=f"Schwab {kind} {masked(number)}",
        number_masked=masked(number),
        currency="USD",
    )


def balances_from_account(body: object, now: datetime) -> Balances:
    """``currentBalances``: ``MarginBalance`` has ``buyingPower``, ``CashBalance`` has
    ``cashAvailableForTrading`` (spec schemas); ``liquidationValue`` is the account's worth."""
    account = securities_account(body)
    current = account.get("currentBalances")
    if not isinstance(current, dict):
        raise unknown("currentBalances", type(current).__name__)
    if account["type"] == "MARGIN":
        buying_power = dec(current.get("buyingPower"), "buyingPower")
    else:
        buying_power = dec(current.get("cashAvailableForTrading"), "cashAvailableForTrading")
    return Balances(
        cash=dec(current.get("cashBalance"), "cashBalance"),
        equity=dec(current.get("liquidationValue"), "liquidationValue"),
        buying_power=buying_power,
        currency="USD",
        as_of=now,
    )


def _whole(value: Decimal) -> Decimal:
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value


def option_contract(instrument: object, field: str = "option instrument") -> OptionContract:
    """An ``OPTION`` instrument: the padded OCC ``symbol`` (``AAPL  261218C00150000``,
    schwab-py ``OptionSymbol.build``), ``underlyingSymbol`` and ``optionMultiplier`` (spec
    ``AccountOption``; 100 when absent)."""
    if not isinstance(instrument, dict):
        raise unknown(field, instrument)
    symbol = instrument.get("symbol")
    underlying = instrument.get("underlyingSymbol")
    raw_multiplier = instrument.get("optionMultiplier")
    multiplier = _HUNDRED if raw_multiplier is None else dec(raw_multiplier, "optionMultiplier")
    if not isinstance(symbol, str) or multiplier <= _ZERO:
        raise unknown(field, symbol)
    try:
        return OptionContract.parse(
            symbol,
            underlying=underlying if isinstance(underlying, str) and underlying else None,
            multiplier=_whole(multiplier),
        )
    except InvalidOptionSymbol:
        raise unknown(field, symbol) from None


def position_from_wire(body: object, now: datetime) -> Position:
    """One ``Position``: long and short quantities are separate fields.

    An option position keeps its contract; ``averagePrice`` is per share and
    ``marketValue`` is the position's (negative when short), so the price per share is
    ``marketValue / (quantity x multiplier)``.
    """
    if not isinstance(body, dict):
        raise unknown("position payload", type(body).__name__)
    instrument = body.get("instrument")
    if not isinstance(instrument, dict):
        raise unknown("position instrument", instrument)
    asset_class = _ASSET_TYPES.get(str(instrument.get("assetType")))
    if asset_class is None:
        raise unknown("instrument assetType", instrument.get("assetType"))
    long_qty = opt_dec(body.get("longQuantity"), "longQuantity") or _ZERO
    short_qty = opt_dec(body.get("shortQuantity"), "shortQuantity") or _ZERO
    qty = long_qty - short_qty
    market_value = dec(body.get("marketValue"), "marketValue")
    if short_qty > _ZERO and long_qty == _ZERO:
        avg = dec(body.get("averageShortPrice", body.get("averagePrice")), "averageShortPrice")
        pl = opt_dec(body.get("shortOpenProfitLoss"), "shortOpenProfitLoss")
    else:
        avg = dec(body.get("averageLongPrice", body.get("averagePrice")), "averageLongPrice")
        pl = opt_dec(body.get("longOpenProfitLoss"), "longOpenProfitLoss")
    contract = option_contract(instrument) if asset_class is AssetClass.option else None
    units = contract.multiplier if contract is not None else Decimal(1)
    if pl is None:
        pl = market_value - qty * avg * units
    price = (market_value / (qty * units)).quantize(Decimal("0.0001")) if qty else _ZERO
    symbol = contract.symbol if contract is not None else instrument.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise unknown("position symbol", symbol)
    return Position(
        symbol=symbol,
        asset_class=asset_class,
        quantity=qty,
        avg_cost=avg,
        current_price=abs(price),
        market_value=market_value,
        unrealized_pl=pl,
        as_of=now,
        contract=contract,
    )


def positions_from_account(body: object, now: datetime) -> list[Position]:
    account = securities_account(body)
    items = account.get("positions") or []
    if not isinstance(items, list):
        raise unknown("positions", type(items).__name__)
    return representable(items, lambda item: position_from_wire(item, now), "position")


# --- orders -------------------------------------------------------------------------------


def order_status(raw: object, filled: Decimal) -> OrderStatus:
    mapped = WIRE.lookup(_STATUS, raw, "order status")
    if mapped is not None:
        return mapped
    return S.partially_filled if filled > _ZERO else S.accepted


@dataclass(frozen=True, slots=True)
class _Execution:
    """One ``executionLegs`` item of an ``EXECUTION`` activity."""

    activity_id: str
    leg_id: str
    quantity: Decimal
    price: Decimal
    at: datetime | None


def _executions(body: dict[str, Any]) -> list[_Execution]:
    """Every fill of the order: ``orderActivityCollection[]`` of type ``EXECUTION`` (FILL),
    each with ``executionLegs[{legId, quantity, price, time}]`` joined to the order's legs by
    ``legId`` (spec ``OrderActivity``/``ExecutionLeg``)."""
    activities = body.get("orderActivityCollection") or []
    if not isinstance(activities, list):
        raise unknown("orderActivityCollection", type(activities).__name__)
    result: list[_Execution] = []
    for n, activity in enumerate(activities):
        if not isinstance(activity, dict) or activity.get("activityType") != "EXECUTION":
            continue
        if activity.get("executionType") not in ("FILL", None):
            continue
        activity_id = str(activity.get("activityId", n))
        for leg in activity.get("executionLegs") or []:
            if not isinstance(leg, dict):
                raise unknown("executionLegs item", type(leg).__name__)
            raw_time = leg.get("time")
            result.append(
                _Execution(
                    activity_id=activity_id,
                    leg_id=str(leg.get("legId", 1)),
                    quantity=dec(leg.get("quantity"), "executionLegs.quantity"),
                    price=dec(leg.get("price"), "executionLegs.price"),
                    at=ts(raw_time, "executionLegs.time") if raw_time else None,
                )
            )
    return result


def _fills(body: dict[str, Any]) -> tuple[Decimal, Decimal | None, datetime | None]:
    """Filled quantity, average price and last execution time of a single-leg order."""
    qty, notional, last = _ZERO, _ZERO, None
    for execution in _executions(body):
        qty += execution.quantity
        notional += execution.quantity * execution.price
        if execution.at is not None:
            last = execution.at if last is None or execution.at > last else last
    avg = (notional / qty).quantize(Decimal("0.0001")) if qty else None
    return qty, avg, last


@dataclass(frozen=True, slots=True)
class _WireLeg:
    leg_id: str
    symbol: str  # canonical: unpadded OCC for an option, the ticker for a stock
    underlying: str
    contract: OptionContract | None
    side: OrderSide
    position_effect: PositionEffect | None
    quantity: Decimal
    instruction: str = ""


def _wire_leg(leg: object, n: int) -> _WireLeg:
    if not isinstance(leg, dict):
        raise unknown("orderLegCollection item", type(leg).__name__)
    instrument = leg.get("instrument")
    if not isinstance(instrument, dict) or not isinstance(instrument.get("symbol"), str):
        raise unknown("order instrument", instrument)
    asset_class = _ASSET_TYPES.get(str(instrument.get("assetType")))
    instruction = leg.get("instruction")
    raw_effect = leg.get("positionEffect")
    effect = WIRE.lookup(_POSITION_EFFECTS, raw_effect, "positionEffect") if raw_effect else None
    if asset_class is AssetClass.option:
        contract = option_contract(instrument, "order option instrument")
        side, effect = WIRE.lookup(_OPTION_INSTRUCTIONS, instruction, "option instruction")
        symbol, underlying = contract.symbol, contract.underlying
    elif asset_class is AssetClass.equity:
        contract = None
        side = WIRE.lookup(_INSTRUCTIONS, instruction, "instruction")
        effect = _EQUITY_EFFECTS.get(str(instruction), effect)
        symbol = underlying = instrument["symbol"]
    else:
        raise unknown("order assetType", instrument.get("assetType"))
    return _WireLeg(
        instruction=str(instruction),
        leg_id=str(leg.get("legId", n)),
        symbol=symbol,
        underlying=underlying,
        contract=contract,
        side=side,
        position_effect=effect,
        quantity=dec(leg.get("quantity"), "orderLegCollection.quantity"),
    )


def order_from_wire(body: object) -> BrokerOrder:
    """A Schwab ``Order`` into a ``BrokerOrder``; UnknownBrokerValue when we cannot say it.

    Single-leg equity and option orders of the four unified order types, and multi-leg
    option orders (``NET_DEBIT``/``NET_CREDIT``/``NET_ZERO`` or ``MARKET``) whose legs come
    back with their own fills. Trailing stops and OCO/trigger wrappers are not
    representable and raise.
    """
    if not isinstance(body, dict):
        raise unknown("order payload", type(body).__name__)
    order_id = body.get("orderId")
    if isinstance(order_id, bool) or not isinstance(order_id, int | str) or order_id == "":
        raise unknown("orderId", order_id)
    strategy = body.get("orderStrategyType", "SINGLE")
    if strategy != "SINGLE":
        raise unknown("orderStrategyType", strategy)
    raw_legs = body.get("orderLegCollection")
    if not isinstance(raw_legs, list) or not raw_legs:
        raise unknown("orderLegCollection", raw_legs)
    legs = [_wire_leg(leg, n) for n, leg in enumerate(raw_legs, start=1)]
    complex_type = body.get("complexOrderStrategyType", "NONE")
    if complex_type not in COMPLEX_STRATEGIES:
        raise unknown("complexOrderStrategyType", complex_type)
    raw_type = str(body.get("orderType"))
    price_effect = _NET_TYPES.get(raw_type)
    order_type = OrderType.limit if price_effect is not None else _ORDER_TYPES.get(raw_type)
    if order_type is None:
        raise unknown("orderType", body.get("orderType"))
    tif = _DURATIONS.get(str(body.get("duration")))
    if tif is None:
        raise unknown("duration", body.get("duration"))
    quantity = dec(body.get("quantity"), "quantity")
    multi = len(legs) > 1
    if multi:
        if order_type not in (OrderType.market, OrderType.limit):
            raise unknown("multi-leg orderType", raw_type)
        return _multi_leg_order(body, str(order_id), legs, order_type, tif, quantity, price_effect)
    if price_effect is not None:
        raise unknown("single-leg orderType", raw_type)
    [leg] = legs
    exec_qty, avg, last_fill = _fills(body)
    filled = opt_dec(body.get("filledQuantity"), "filledQuantity")
    filled = exec_qty if filled is None else filled
    return _order(
        body,
        str(order_id),
        symbol=leg.symbol,
        side=leg.side,
        quantity=quantity,
        filled=filled,
        avg=avg,
        last_fill=last_fill,
        order_type=order_type,
        tif=tif,
        # An equity order states its effect only as a short sale or a cover (SELL_SHORT,
        # BUY_TO_COVER); plain BUY / SELL carry none, as the gateway sends them.
        position_effect=(
            leg.position_effect
            if leg.contract is not None or leg.instruction in _EQUITY_EFFECTS
            else None
        ),
    )


def _multi_leg_order(
    body: dict[str, Any],
    order_id: str,
    legs: list[_WireLeg],
    order_type: OrderType,
    tif: TimeInForce,
    quantity: Decimal,
    price_effect: PriceEffect | None,
) -> BrokerOrder:
    """A combo: ``quantity`` in strategy units, each leg ``ratio`` x that many; per-leg fills
    from ``executionLegs`` by ``legId``; the average fill is the net price per unit."""
    underlyings = {leg.underlying for leg in legs}
    if len(underlyings) != 1 or quantity <= _ZERO:
        raise unknown("multi-leg underlying", sorted(underlyings))
    executions = _executions(body)
    result: list[BrokerOrderLeg] = []
    net, complete, last_fill = _ZERO, True, None
    for leg in legs:
        ratio = leg.quantity / quantity
        if ratio != ratio.to_integral_value() or ratio <= _ZERO:
            raise unknown("leg quantity", leg.quantity)
        mine = [e for e in executions if e.leg_id == leg.leg_id]
        leg_qty = sum((e.quantity for e in mine), _ZERO)
        leg_avg = (
            (sum((e.quantity * e.price for e in mine), _ZERO) / leg_qty).quantize(Decimal("0.0001"))
            if leg_qty
            else None
        )
        for e in mine:
            if e.at is not None:
                last_fill = e.at if last_fill is None or e.at > last_fill else last_fill
        if leg_avg is None:
            complete = False
        else:
            # Net price per share of the strategy: a stock leg's ratio is in shares (100 per
            # contract), so it weighs ratio / 100 (a buy-write's price is stock - call).
            weight = ratio if leg.contract is not None else ratio / _HUNDRED
            net += leg_avg * weight * (1 if leg.side is OrderSide.buy else -1)
        result.append(
            BrokerOrderLeg(
                symbol=leg.symbol,
                side=leg.side,
                ratio=int(ratio),
                position_effect=leg.position_effect,
                filled_quantity=leg_qty,
                avg_fill_price=leg_avg,
                broker_leg_id=leg.leg_id,
            )
        )
    filled = opt_dec(body.get("filledQuantity"), "filledQuantity")
    if filled is None:
        filled = min(leg.filled_quantity / leg.ratio for leg in result)
    side = OrderSide.sell if price_effect is PriceEffect.credit else OrderSide.buy
    avg = abs(net).quantize(Decimal("0.0001")) if complete and filled > _ZERO else None
    order = _order(
        body,
        order_id,
        symbol=next(iter(underlyings)),
        side=side,
        quantity=quantity,
        filled=filled,
        avg=avg,
        last_fill=last_fill,
        order_type=order_type,
        tif=tif,
        position_effect=None,
    )
    return replace(order, legs=tuple(result), price_effect=price_effect)


def _order(
    body: dict[str, Any],
    order_id: str,
    *,
    symbol: str,
    side: OrderSide,
    quantity: Decimal,
    filled: Decimal,
    avg: Decimal | None,
    last_fill: datetime | None,
    order_type: OrderType,
    tif: TimeInForce,
    position_effect: PositionEffect | None,
) -> BrokerOrder:
    status = order_status(body.get("status"), filled)
    created = ts(body.get("enteredTime"), "enteredTime")
    closed = body.get("closeTime")
    updated = ts(closed, "closeTime") if closed else (last_fill or created)
    replaced_by = None
    replacing = body.get("replacingOrderCollection") or []
    if isinstance(replacing, list) and replacing and isinstance(replacing[0], dict):
        new_id = replacing[0].get("orderId")
        replaced_by = str(new_id) if isinstance(new_id, int | str) and new_id != "" else None
    description = body.get("statusDescription")
    reject_reason = None
    if status is S.rejected:
        reject_reason = description if isinstance(description, str) and description else None
        reject_reason = reject_reason or "rejected by the broker"
    return BrokerOrder(
        broker_order_id=order_id,
        client_order_id=None,  # Schwab has no client order id
        symbol=symbol,
        side=side,
        quantity=quantity,
        filled_quantity=filled,
        avg_fill_price=avg,
        order_type=order_type,
        time_in_force=tif,
        status=status,
        limit_price=opt_dec(body.get("price"), "price") if order_type.value in _LIMITED else None,
        stop_price=opt_dec(body.get("stopPrice"), "stopPrice")
        if order_type.value in _STOPPED
        else None,
        created_at=created,
        updated_at=max(updated, created),
        reject_reason=reject_reason,
        replaced_by=replaced_by,
        position_effect=position_effect,
    )


def fills_from_wire(body: object) -> tuple[Fill, ...]:
    """Every execution of an order as fills, each leg's tagged with its symbol (multi-leg).

    Fill ids are ``order:activity:leg``, stable across reads, so a consumer seeing the same
    order again sees the same fills.
    """
    if not isinstance(body, dict):
        raise unknown("order payload", type(body).__name__)
    raw_legs = body.get("orderLegCollection")
    if not isinstance(raw_legs, list) or not raw_legs:
        raise unknown("orderLegCollection", raw_legs)
    legs = {leg.leg_id: leg for leg in (_wire_leg(x, n) for n, x in enumerate(raw_legs, 1))}
    multi = len(legs) > 1
    at_entry = ts(body.get("enteredTime"), "enteredTime")
    result = []
    for e in _executions(body):
        leg = legs.get(e.leg_id)
        if leg is None:
            raise unknown("executionLegs.legId", e.leg_id)
        result.append(
            Fill(
                fill_id=f"{body.get('orderId')}:{e.activity_id}:{e.leg_id}",
                quantity=e.quantity,
                price=e.price,
                occurred_at=e.at or at_entry,
                leg_symbol=leg.symbol if multi else None,
            )
        )
    return tuple(result)


_LIMITED = frozenset({"limit", "stop_limit"})
_STOPPED = frozenset({"stop", "stop_limit"})

T = TypeVar("T")


def representable(
    items: Iterable[object], convert: Callable[[object], T | None], what: str
) -> RowList[T]:
    """Convert a list with ``read_rows``: an item the gateway cannot represent is left out,
    logged with Schwab's id for it and counted (``RowList.skipped``).

    For lists only: one order placed in Schwab's own app in a form we do not model must not
    make a user's whole order list (or a stream catch-up) fail. A single lookup still raises.
    """
    return read_rows(items, convert, broker=SLUG, kind=what, row_id=_row_id)


def _row_id(item: object) -> object:
    if not isinstance(item, dict):
        return "?"
    for key in ("orderId", "activityId"):
        if key in item:
            return item[key]
    instrument = item.get("instrument")
    if isinstance(instrument, dict) and "symbol" in instrument:
        return instrument["symbol"]
    account = item.get("securitiesAccount")
    if isinstance(account, dict) and "accountNumber" in account:
        return masked(str(account["accountNumber"]))
    return "?"


def orders_from_wire(body: object) -> list[BrokerOrder]:
    if not isinstance(body, list):
        raise unknown("orders payload", type(body).__name__)
    return representable(body, order_from_wire, "order")


def _price(value: Decimal) -> str:
    # schwab-py sends prices as strings (orders/generic.py); Decimal keeps what was given.
    return str(value)


def _leg_contract(symbol: str) -> OptionContract | None:
    """The contract of an option leg; None for a stock leg (a covered call's shares)."""
    if not is_option_symbol(symbol):
        return None
    return OptionContract.parse(symbol)


def complex_strategy(legs: tuple[OrderLeg, ...] | list[OrderLeg]) -> str:
    """``complexOrderStrategyType`` inferred from the legs, never taken from the caller.

    Values from schwab-py ``ComplexOrderStrategyType``
    (https://github.com/alexgolec/schwab-py/blob/main/schwab/orders/common.py); the shapes are
    the textbook ones (one underlying, one ``ratio`` unless a ratio is part of the shape):

    * COVERED: shares and one call on the other side (or short shares and a short put);
    * COLLAR_WITH_STOCK: long shares, a long put and a short call, one expiration;
    * VERTICAL: two calls or two puts, one expiration, two strikes, opposite sides, 1:1;
      BACK_RATIO: the same with unequal ratios;
    * CALENDAR: same right and strike, two expirations, opposite sides;
      DIAGONAL: same right, two strikes and two expirations, opposite sides;
    * STRADDLE / STRANGLE: a call and a put on the same side, one expiration, same / two
      strikes;
    * BUTTERFLY: one right, one expiration, three equally spaced strikes, wings 1 on one side
      and body 2 on the other;
    * CONDOR: one right, one expiration, four strikes, outer pair one side, inner pair the
      other, all 1:1;
    * IRON_CONDOR: a put vertical below a call vertical, one expiration, the inner strikes on
      one side and the outer on the other, all 1:1;
    * anything else: CUSTOM.
    """
    options = [(leg, _leg_contract(leg.symbol)) for leg in legs]
    stock = [leg for leg, c in options if c is None]
    opts = [(leg, c) for leg, c in options if c is not None]
    if len(legs) < 2:
        return "NONE"
    if len(stock) > 1:
        return "CUSTOM"
    if stock:
        shares = stock[0]
        if len(opts) == 1:
            leg, c = opts[0]
            opposite = leg.side is not shares.side
            if shares.ratio == leg.ratio * c.multiplier and (
                (c.right is OptionRight.call and opposite)
                or (c.right is OptionRight.put and not opposite and shares.side is OrderSide.sell)
            ):
                return "COVERED"
        if len(opts) == 2 and shares.side is OrderSide.buy:
            by_right = {c.right: (leg, c) for leg, c in opts}
            put, call = by_right.get(OptionRight.put), by_right.get(OptionRight.call)
            if (
                put is not None
                and call is not None
                and put[0].side is OrderSide.buy
                and call[0].side is OrderSide.sell
                and put[1].expiration == call[1].expiration
                and put[0].ratio == call[0].ratio
                and shares.ratio == put[0].ratio * put[1].multiplier
            ):
                return "COLLAR_WITH_STOCK"
        return "CUSTOM"
    expirations = {c.expiration for _, c in opts}
    rights = {c.right for _, c in opts}
    ratios = {leg.ratio for leg, _ in opts}
    if len(opts) == 2:
        (a, ca), (b, cb) = opts
        opposite = a.side is not b.side
        if len(rights) == 1 and opposite:
            if len(expirations) == 1 and ca.strike != cb.strike:
                return "VERTICAL" if len(ratios) == 1 else "BACK_RATIO"
            if len(expirations) == 2 and len(ratios) == 1:
                return "CALENDAR" if ca.strike == cb.strike else "DIAGONAL"
        if len(rights) == 2 and not opposite and len(expirations) == 1 and len(ratios) == 1:
            return "STRADDLE" if ca.strike == cb.strike else "STRANGLE"
        return "CUSTOM"
    if len(expirations) != 1:
        return "CUSTOM"
    ordered = sorted(opts, key=lambda lc: lc[1].strike)
    strikes = [c.strike for _, c in ordered]
    sides = [leg.side for leg, _ in ordered]
    if len(opts) == 3 and len(rights) == 1 and len(set(strikes)) == 3:
        low, mid, high = (leg for leg, _ in ordered)
        if (
            strikes[1] - strikes[0] == strikes[2] - strikes[1]
            and low.side is high.side
            and mid.side is not low.side
            and low.ratio == high.ratio == 1
            and mid.ratio == 2
        ):
            return "BUTTERFLY"
        return "CUSTOM"
    if len(opts) == 4 and len(ratios) == 1 and len(set(strikes)) == 4:
        outer_same = sides[0] is sides[3] and sides[1] is sides[2] and sides[0] is not sides[1]
        if len(rights) == 1 and outer_same:
            return "CONDOR"
        put_strikes = [c.strike for _, c in ordered if c.right is OptionRight.put]
        call_strikes = [c.strike for _, c in ordered if c.right is OptionRight.call]
        if (
            outer_same
            and len(put_strikes) == 2
            and len(call_strikes) == 2
            and max(put_strikes) < min(call_strikes)
        ):
            return "IRON_CONDOR"
    return "CUSTOM"


def _option_leg_wire(symbol: str, side: OrderSide, effect: PositionEffect, qty: int) -> Any:
    contract = OptionContract.parse(symbol)
    return {
        "instruction": _OPTION_INSTRUCTIONS_OUT[(side, effect)],
        "quantity": qty,
        # Schwab takes the OCC symbol padded to six characters (schwab-py OptionSymbol.build).
        "instrument": {"symbol": contract.occ_padded, "assetType": "OPTION"},
    }


def equity_instruction(side: OrderSide, effect: PositionEffect | None) -> str:
    """An equity leg's ``instruction``: a sell that opens is ``SELL_SHORT``, a buy that
    closes ``BUY_TO_COVER`` (schwab-py ``EquityInstruction``; Trader API spec
    ``instruction`` enum, https://developer.schwab.com/products/trader-api--individual);
    otherwise ``BUY`` / ``SELL``."""
    if side is OrderSide.sell:
        return "SELL_SHORT" if effect is PositionEffect.open else "SELL"
    return "BUY_TO_COVER" if effect is PositionEffect.close else "BUY"


def order_to_wire(order: OrderRequest) -> dict[str, Any]:
    """An ``OrderRequest`` body: one equity or option leg, or a combo.

    ``quantity`` is a whole number (the capabilities refuse fractional quantities). A combo
    (schwab-py ``orders/options.py`` verticals; https://github.com/alexgolec/schwab-py) is
    ``orderStrategyType: SINGLE`` with ``orderLegCollection`` legs of ``ratio x quantity``,
    a top-level ``quantity`` in strategy units, ``complexOrderStrategyType`` inferred here
    and, for a limit, ``orderType`` NET_DEBIT / NET_CREDIT / NET_ZERO with a positive
    ``price``. Extended hours use the SEAMLESS session.
    """
    if order.is_multi_leg:
        return _combo_to_wire(order)
    body: dict[str, Any] = {
        "session": "SEAMLESS" if order.extended_hours else "NORMAL",
        "duration": _DURATIONS_OUT[order.time_in_force],
        "orderType": _ORDER_TYPES_OUT[order.order_type],
        "orderStrategyType": "SINGLE",
    }
    if is_option_symbol(order.symbol):
        if order.position_effect is None:
            raise ValueError("an option order needs a position effect")
        leg = _option_leg_wire(order.symbol, order.side, order.position_effect, int(order.quantity))
        body["orderLegCollection"] = [leg]
    else:
        body["orderLegCollection"] = [
            {
                "instruction": equity_instruction(order.side, order.position_effect),
                "quantity": int(order.quantity),
                "instrument": {"symbol": order.symbol, "assetType": "EQUITY"},
            }
        ]
    if order.order_type in (OrderType.limit, OrderType.stop_limit):
        if order.limit_price is None:
            raise ValueError("a limit order needs a limit price")
        body["price"] = _price(order.limit_price)
    if order.order_type in (OrderType.stop, OrderType.stop_limit):
        if order.stop_price is None:
            raise ValueError("a stop order needs a stop price")
        body["stopPrice"] = _price(order.stop_price)
    return body


def _combo_to_wire(order: OrderRequest) -> dict[str, Any]:
    if order.order_type is OrderType.market:
        order_type = "MARKET"
    elif order.order_type is OrderType.limit:
        if order.price_effect is None or order.limit_price is None:
            raise ValueError("a limit combo needs a limit price and a price effect")
        if order.limit_price < _ZERO:
            raise ValueError("a combo's limit price is unsigned (its direction is price_effect)")
        if order.price_effect is PriceEffect.even and order.limit_price != _ZERO:
            raise ValueError("an even combo has a zero net price")
        order_type = _NET_TYPES_OUT[order.price_effect]
    else:
        raise ValueError(f"Schwab combos are market or limit, not {order.order_type.value}")
    units = int(order.quantity)
    legs: list[Any] = []
    for leg in order.legs:
        qty = leg.ratio * units
        if is_option_symbol(leg.symbol):
            legs.append(_option_leg_wire(leg.symbol, leg.side, leg.position_effect, qty))
        else:
            legs.append(
                {
                    "instruction": "BUY" if leg.side is OrderSide.buy else "SELL",
                    "quantity": qty,
                    "instrument": {"symbol": leg.symbol, "assetType": "EQUITY"},
                }
            )
    body: dict[str, Any] = {
        "session": "NORMAL",
        "duration": _DURATIONS_OUT[order.time_in_force],
        "orderType": order_type,
        "complexOrderStrategyType": complex_strategy(order.legs),
        "quantity": units,
        "orderStrategyType": "SINGLE",
        "orderLegCollection": legs,
    }
    # NET_ZERO and MARKET combos carry no price (jkoelker/schwab-mcp
    # src/schwab_mcp/tools/orders.py place_option_combo_order, a client in daily use).
    if order_type in ("NET_DEBIT", "NET_CREDIT") and order.limit_price is not None:
        body["price"] = _price(order.limit_price)
    return body


def request_legs(order: BrokerOrder) -> tuple[OrderLeg, ...]:
    """A read-back combo's legs as request legs (for a replace, which sends a whole order)."""
    return tuple(
        OrderLeg(
            symbol=leg.symbol,
            side=leg.side,
            ratio=leg.ratio,
            position_effect=leg.position_effect or PositionEffect.open,
        )
        for leg in order.legs
    )


def replacement_request(current: BrokerOrder, changes: OrderChanges) -> OrderRequest:
    """The full order a replace sends (``PUT`` takes a whole ``OrderRequest``)."""
    return OrderRequest(
        client_order_id="",
        symbol=current.symbol,
        side=current.side,
        quantity=changes.quantity if changes.quantity is not None else current.quantity,
        order_type=current.order_type,
        time_in_force=changes.time_in_force or current.time_in_force,
        limit_price=changes.limit_price if changes.limit_price is not None else current.limit_price,
        stop_price=changes.stop_price if changes.stop_price is not None else current.stop_price,
        position_effect=current.position_effect,
        legs=request_legs(current),
        price_effect=current.price_effect,
    )


def submitted_order(order_id: str, order: OrderRequest, at: datetime) -> BrokerOrder:
    """What we know of an order Schwab took (201) but we could not read back yet."""
    return BrokerOrder(
        broker_order_id=order_id,
        client_order_id=None,
        symbol=order.symbol,
        side=order.side,
        quantity=order.quantity,
        filled_quantity=_ZERO,
        avg_fill_price=None,
        order_type=order.order_type,
        time_in_force=order.time_in_force,
        status=S.submitted,
        limit_price=order.limit_price,
        stop_price=order.stop_price,
        created_at=at,
        updated_at=at,
        position_effect=order.position_effect,
        legs=tuple(
            BrokerOrderLeg(
                symbol=leg.symbol,
                side=leg.side,
                ratio=leg.ratio,
                position_effect=leg.position_effect,
                filled_quantity=_ZERO,
                avg_fill_price=None,
            )
            for leg in order.legs
        ),
        price_effect=order.price_effect,
    )


def with_replaces(order: BrokerOrder, old_id: str) -> BrokerOrder:
    return replace(order, replaces=old_id)


_LOCATION = re.compile(r"/trader/v1/accounts/([^/]+)/orders/(\d+)/?$")


def order_id_from_location(location: str | None, account_hash: str) -> str | None:
    """The new order's id from ``Location: .../trader/v1/accounts/{hash}/orders/{id}``
    (schwab-py ``Utils.extract_order_id``); None when absent or for another account."""
    if not location:
        return None
    match = _LOCATION.search(httpx.URL(location).path)
    if match is None or match.group(1) != account_hash:
        return None
    return match.group(2)


# --- transactions -------------------------------------------------------------------------

# spec ``TransactionType`` (schwab-py ``Client.Transactions.TransactionType``).
TRANSACTION_TYPES = (
    "TRADE",
    "RECEIVE_AND_DELIVER",
    "DIVIDEND_OR_INTEREST",
    "ACH_RECEIPT",
    "ACH_DISBURSEMENT",
    "CASH_RECEIPT",
    "CASH_DISBURSEMENT",
    "ELECTRONIC_FUND",
    "WIRE_OUT",
    "WIRE_IN",
    "JOURNAL",
    "MEMORANDUM",
    "MARGIN_CALL",
    "MONEY_MARKET",
    "SMA_ADJUSTMENT",
)
_CASH_TYPES = {
    "ACH_RECEIPT": "deposit",
    "CASH_RECEIPT": "deposit",
    "WIRE_IN": "deposit",
    "ACH_DISBURSEMENT": "withdrawal",
    "CASH_DISBURSEMENT": "withdrawal",
    "WIRE_OUT": "withdrawal",
    "DIVIDEND_OR_INTEREST": "dividend",
    "JOURNAL": "journal",
    "RECEIVE_AND_DELIVER": "transfer",
}


# An option's end of life is a RECEIVE_AND_DELIVER transaction (spec ``TransactionType``)
# whose one ``transferItems`` entry is the contract (``instrument.assetType`` OPTION, padded
# OCC ``symbol``; spec ``TransferItem{instrument, amount, cost, price, feeType,
# positionEffect}``, copy in creacominc/ccSchwabManager
# ccSchwabManager/DataTypes/MarketData/Transaction/SapiTransferItem.swift) and whose
# ``description`` names the event. The spec leaves ``description`` free text; the wording is
# TD Ameritrade's, kept by Schwab ("REMOVAL OF OPTION DUE TO EXPIRATION|ASSIGNMENT|EXERCISE",
# as community importers of these transactions match it). Any other RECEIVE_AND_DELIVER
# stays a ``transfer``. The spec does not say what the sign of ``amount`` means here, so it
# is reported unsigned and the lifecycle sweep takes the side from the account's positions
# (app/services/lifecycle.py).
_OPTION_REMOVALS = {
    "REMOVAL OF OPTION DUE TO EXPIRATION": "option_expiration",
    "REMOVAL OF OPTION DUE TO ASSIGNMENT": "option_assignment",
    "REMOVAL OF OPTION DUE TO EXERCISE": "option_exercise",
}


def _option_removal(body: dict[str, Any], description: str) -> tuple[str, dict[str, Any]] | None:
    """(lifecycle type, the contract's transfer item) of a RECEIVE_AND_DELIVER that removes
    an option, else None."""
    kind = next(
        (t for text, t in _OPTION_REMOVALS.items() if description.upper().startswith(text)),
        None,
    )
    if kind is None:
        return None
    items = [
        i
        for i in body.get("transferItems") or []
        if isinstance(i, dict)
        and isinstance(i.get("instrument"), dict)
        and i["instrument"].get("assetType") == "OPTION"
    ]
    if len(items) != 1:
        raise unknown("option removal transferItems", body.get("transferItems"))
    return kind, items[0]


def transaction_from_wire(body: object) -> Transaction | None:
    """One ``Transaction``; None for types we do not report (memoranda, SMA adjustments...)."""
    if not isinstance(body, dict):
        raise unknown("transaction payload", type(body).__name__)
    kind = body.get("type")
    if kind not in TRANSACTION_TYPES:
        raise unknown("transaction type", kind)
    activity_id = body.get("activityId")
    occurred = ts(body.get("time") or body.get("tradeDate"), "time")
    amount = dec(body.get("netAmount"), "netAmount")
    description = str(body.get("description") or kind)
    removal = _option_removal(body, description) if kind == "RECEIVE_AND_DELIVER" else None
    if removal is not None:
        lifecycle, item = removal
        contract = option_contract(item["instrument"], "option removal instrument")
        price = opt_dec(item.get("price"), "transferItems.price")
        return Transaction(
            transaction_id=str(activity_id),
            type=lifecycle,
            occurred_at=occurred,
            amount=amount,
            symbol=contract.symbol,
            quantity=dec(item.get("amount"), "transferItems.amount").copy_abs(),
            price=price,
            description=description,
        )
    if kind == "TRADE":
        items = [
            i
            for i in body.get("transferItems") or []
            if isinstance(i, dict)
            and isinstance(i.get("instrument"), dict)
            and i["instrument"].get("assetType") != "CURRENCY"
        ]
        if not items:
            raise unknown("TRADE transferItems", body.get("transferItems"))
        item = items[0]
        qty = dec(item.get("amount"), "transferItems.amount")
        price = dec(item.get("price"), "transferItems.price")
        return Transaction(
            transaction_id=str(activity_id),
            type="buy" if amount < _ZERO else "sell",  # netAmount: cash out for a buy
            occurred_at=occurred,
            amount=amount,
            symbol=str(item["instrument"].get("symbol") or "") or None,
            quantity=abs(qty),
            price=price,
            description=description,
        )
    mapped = _CASH_TYPES.get(kind)
    if mapped is None:
        return None
    if kind == "DIVIDEND_OR_INTEREST" and "interest" in description.lower():
        mapped = "interest"
    return Transaction(
        transaction_id=str(activity_id),
        type=mapped,
        occurred_at=occurred,
        amount=amount,
        description=description,
    )


# --- quotes -------------------------------------------------------------------------------


def invalid_symbols(body: object) -> set[str]:
    """``QuoteResponse.errors.invalidSymbols`` (the quote call answers 200 with them)."""
    if not isinstance(body, dict):
        return set()
    errs = body.get("errors")
    if not isinstance(errs, dict):
        return set()
    found = errs.get("invalidSymbols") or []
    return {s for s in found if isinstance(s, str)}


def quotes_from_wire(body: object, symbols: list[str]) -> dict[str, Quote]:
    """``GET /marketdata/v1/quotes``: ``{"AAPL": {"quote": {"bidPrice", "askPrice",
    "lastPrice", "quoteTime", ...}, ...}, "errors": {...}}``."""
    if not isinstance(body, dict):
        raise unknown("quotes payload", type(body).__name__)
    result: dict[str, Quote] = {}
    for symbol in symbols:
        entry = body.get(symbol)
        if not isinstance(entry, dict):
            continue
        quote = entry.get("quote")
        if not isinstance(quote, dict):
            raise unknown("quote object", type(quote).__name__)
        bid = dec(quote.get("bidPrice"), "bidPrice")
        ask = dec(quote.get("askPrice"), "askPrice")
        last_raw = quote.get("lastPrice")
        last = dec(last_raw, "lastPrice") if last_raw is not None else (bid + ask) / 2
        at = quote.get("quoteTime", quote.get("tradeTime"))
        result[symbol] = Quote(
            symbol=symbol, bid=bid, ask=ask, last=last, as_of=millis(at, "quoteTime")
        )
    return result


# --- option chains ------------------------------------------------------------------------

# ``expirationType`` of ``/expirationchain`` and chain contracts (Market Data spec; the
# z-Wind/schwab_api model, https://github.com/z-Wind/schwab_api
# src/model/market_data/quote_response/option.rs): S third Friday, W weekly, Q quarterly
# (last business day of the quarter), M end of month.
_EXPIRATION_TYPES = {
    "S": ExpirationType.standard,
    "W": ExpirationType.weekly,
    "Q": ExpirationType.quarterly,
    "M": ExpirationType.end_of_month,
}
_RIGHTS = {"CALL": OptionRight.call, "PUT": OptionRight.put}
# A greek or volatility the chain cannot compute comes as the string "NaN" (the TD Ameritrade
# chain Schwab inherited: https://github.com/studerw/td-ameritrade-client/issues/40) or as the
# -999 sentinel (seen in community dumps; unconfirmed): either is "no value", never a number.
_NO_VALUE = Decimal(-999)


def expirations_from_wire(body: object) -> list[OptionExpiration]:
    """``GET /marketdata/v1/expirationchain``: ``{"expirationList": [{"expirationDate":
    "2024-05-17", "daysToExpiration", "expirationType": "S", "settlementType", "optionRoots",
    "standard"}]}`` (z-Wind/schwab_api ``tests/model/MarketData/ExpirationChain_real.json``)."""
    if not isinstance(body, dict) or not isinstance(body.get("expirationList"), list):
        raise unknown("expirationchain payload", type(body).__name__)
    found: dict[Any, ExpirationType] = {}
    for item in body["expirationList"]:
        if not isinstance(item, dict):
            raise unknown("expirationList item", type(item).__name__)
        day = ts(item.get("expirationDate"), "expirationDate", date_only=True).date()
        found[day] = WIRE.lookup(_EXPIRATION_TYPES, item.get("expirationType"), "expirationType")
    return [OptionExpiration(expiration=d, expiration_type=t) for d, t in sorted(found.items())]


def _greek(value: object, field: str) -> Decimal | None:
    if isinstance(value, str) and value.lower() == "nan":
        return None
    found = opt_dec(value, field)
    return None if found is None or found == _NO_VALUE else found


def chain_from_wire(body: object, query: OptionChainQuery) -> list[OptionQuote]:
    """``GET /marketdata/v1/chains``: ``callExpDateMap``/``putExpDateMap`` keyed
    ``"YYYY-MM-DD:DTE"`` then strike (``"150.0"``), each a list of contracts.

    Contracts carry ``bid``/``ask``/``last`` in live answers (the spec's schema names them
    ``bidPrice``/``askPrice``/``lastPrice``; both are read, z-Wind/schwab_api
    ``src/model/market_data/option_chain.rs``), greeks, ``openInterest``, ``multiplier``,
    ``quoteTimeInLong`` and ``volatility`` in **percent** (divided by 100 here). A symbol
    Schwab does not know answers ``"status": "FAILED"`` (the TD Ameritrade API's behaviour,
    which Schwab's chain kept; unconfirmed): ``UnknownSymbol``.
    """
    if not isinstance(body, dict):
        raise unknown("chain payload", type(body).__name__)
    if body.get("status") == "FAILED":
        raise errors.UnknownSymbol(f"Schwab lists no options on {query.underlying}", broker=SLUG)
    underlying = body.get("symbol") or query.underlying
    result: list[OptionQuote] = []
    for key, right in (("callExpDateMap", OptionRight.call), ("putExpDateMap", OptionRight.put)):
        by_expiry = body.get(key) or {}
        if not isinstance(by_expiry, dict):
            raise unknown(key, type(by_expiry).__name__)
        for by_strike in by_expiry.values():
            if not isinstance(by_strike, dict):
                raise unknown(f"{key} strikes", type(by_strike).__name__)
            for contracts in by_strike.values():
                if not isinstance(contracts, list):
                    raise unknown(f"{key} contracts", type(contracts).__name__)
                for item in contracts:
                    result.append(_chain_contract(item, right, str(underlying)))
    result.sort(key=lambda q: (q.contract.expiration, q.contract.strike, q.contract.right.value))
    return result


def _chain_contract(item: object, right: OptionRight, underlying: str) -> OptionQuote:
    if not isinstance(item, dict):
        raise unknown("chain contract", type(item).__name__)
    if WIRE.lookup(_RIGHTS, item.get("putCall"), "putCall") is not right:
        raise unknown("putCall", item.get("putCall"))
    raw_multiplier = item.get("multiplier")
    multiplier = _HUNDRED if raw_multiplier is None else dec(raw_multiplier, "multiplier")
    symbol = item.get("symbol")
    try:
        contract = OptionContract.parse(
            str(symbol), underlying=underlying, multiplier=_whole(multiplier)
        )
    except InvalidOptionSymbol:
        raise unknown("chain contract symbol", symbol) from None
    if contract.right is not right:
        raise unknown("chain contract symbol", symbol)

    def price(short: str, long: str) -> Decimal | None:
        return _greek(item.get(short, item.get(long)), short)

    volatility = _greek(item.get("volatility"), "volatility")
    interest = item.get("openInterest")
    raw_time = item.get("quoteTimeInLong")
    return OptionQuote(
        contract=contract,
        bid=price("bid", "bidPrice"),
        ask=price("ask", "askPrice"),
        last=price("last", "lastPrice"),
        open_interest=int(dec(interest, "openInterest")) if interest is not None else None,
        greeks=Greeks(
            delta=_greek(item.get("delta"), "delta"),
            gamma=_greek(item.get("gamma"), "gamma"),
            theta=_greek(item.get("theta"), "theta"),
            vega=_greek(item.get("vega"), "vega"),
            rho=_greek(item.get("rho"), "rho"),
            iv=None if volatility is None else volatility / _HUNDRED,
        ),
        source="broker",
        as_of=millis(raw_time, "quoteTimeInLong"),
    )


# --- preview ------------------------------------------------------------------------------


def _messages(validation: dict[str, Any], key: str) -> tuple[str, ...]:
    items = validation.get(key) or []
    if not isinstance(items, list):
        raise unknown(f"orderValidationResult.{key}", type(items).__name__)
    found = []
    for item in items:
        if not isinstance(item, dict):
            raise unknown(f"orderValidationResult.{key} item", type(item).__name__)
        message = item.get("activityMessage")
        if isinstance(message, str) and message.strip():
            found.append(message.strip())
    return tuple(found)


def _charges(
    block: object, legs_key: str, values_key: str, types: frozenset[str] | None
) -> Decimal:
    """The sum of a ``commissionAndFee`` block's values of ``types`` (None: every type)."""
    if not isinstance(block, dict):
        return _ZERO
    total = _ZERO
    for leg in block.get(legs_key) or []:
        for value in (leg.get(values_key) or []) if isinstance(leg, dict) else []:
            if isinstance(value, dict) and (types is None or value.get("type") in types):
                total += dec(value.get("value"), f"{values_key}.value")
    return total


# ``commissionAndFee``: ``commission.commissionLegs[].commissionValues[{value, type}]``
# (BASE_CHARGE, COMMISSION) and ``fee.feeLegs[].feeValues[{value, type}]`` (SEC_FEE,
# OPT_REG_FEE, TAF_FEE, ...). The commission counted is the COMMISSION line (BASE_CHARGE is
# its base, not an extra charge: unconfirmed); every fee line is added.
_COMMISSION_TYPES = frozenset({"COMMISSION"})


def preview_from_wire(
    body: object, order: OrderRequest, buying_power: Decimal | None
) -> OrderPreview:
    """``POST /accounts/{hash}/previewOrder`` (z-Wind/schwab_api
    ``tests/model/Trader/PreviewOrder_real.json``): ``orderStrategy.orderBalance{orderValue,
    projectedBuyingPower, projectedCommission}``, ``orderValidationResult{rejects, warns,
    alerts, reviews}`` and ``commissionAndFee``.

    HTTP 200 can still carry ``rejects``: they become ``rejections`` (the order would be
    refused). ``orderValue`` is unsigned; its direction is the order's (a buy or debit pays,
    a sell or credit receives). The buying-power change is ``projectedBuyingPower`` minus
    the account's buying power now (``buying_power``), when both are known.
    """
    if not isinstance(body, dict):
        raise unknown("previewOrder payload", type(body).__name__)
    strategy = body.get("orderStrategy") or {}
    validation = body.get("orderValidationResult") or {}
    if not isinstance(strategy, dict) or not isinstance(validation, dict):
        raise unknown("previewOrder payload", sorted(body))
    balance = strategy.get("orderBalance") or {}
    if not isinstance(balance, dict):
        raise unknown("orderBalance", type(balance).__name__)
    value = abs(opt_dec(balance.get("orderValue"), "orderValue") or _ZERO)
    if order.is_multi_leg:
        direction = order.price_effect or (
            PriceEffect.credit if order.side is OrderSide.sell else PriceEffect.debit
        )
    else:
        direction = PriceEffect.debit if order.side is OrderSide.buy else PriceEffect.credit
    if direction is PriceEffect.even:
        cash = _ZERO
    else:
        cash = -value if direction is PriceEffect.debit else value
    projected = opt_dec(balance.get("projectedBuyingPower"), "projectedBuyingPower")
    fees_block = body.get("commissionAndFee") or {}
    fees_block = fees_block if isinstance(fees_block, dict) else {}
    fees = _charges(
        fees_block.get("commission"), "commissionLegs", "commissionValues", _COMMISSION_TYPES
    )
    fees += _charges(fees_block.get("fee"), "feeLegs", "feeValues", None)
    return OrderPreview(
        estimated_cash_change=cash,
        direction=direction,
        buying_power_change=None
        if projected is None or buying_power is None
        else projected - buying_power,
        fees=fees,
        warnings=_messages(validation, "warns")
        + _messages(validation, "alerts")
        + _messages(validation, "reviews"),
        rejections=_messages(validation, "rejects"),
        source=PreviewSource.broker,
    )


# --- user preference (streamer) -----------------------------------------------------------


def streamer_info(body: object) -> dict[str, str]:
    """``GET /userPreference`` -> ``streamerInfo[0]`` (schwab-py testdata/preferences.json)."""
    if not isinstance(body, dict):
        raise unknown("userPreference payload", type(body).__name__)
    infos = body.get("streamerInfo")
    if not isinstance(infos, list) or not infos or not isinstance(infos[0], dict):
        raise unknown("streamerInfo", infos)
    info = infos[0]
    wanted = (
        "streamerSocketUrl",
        "schwabClientCustomerId",
        "schwabClientCorrelId",
        "schwabClientChannel",
        "schwabClientFunctionId",
    )
    if not all(isinstance(info.get(k), str) and info.get(k) for k in wanted):
        raise unknown("streamerInfo fields", sorted(info))
    return {k: info[k] for k in wanted}


# --- errors -------------------------------------------------------------------------------


def error_message(response: httpx.Response) -> str:
    """The broker's words from either error shape Schwab uses.

    ``ServiceError`` (trader spec): ``{"message": "...", "errors": ["..."]}``; the gateway
    form (QuantConnect Lean ``ErrorsResponse``): ``{"errors": [{"id", "status", "title",
    "detail", "source"}]}``.
    """
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or f"HTTP {response.status_code}"
    parts: list[str] = []
    if isinstance(body, dict):
        message = body.get("message")
        if isinstance(message, str) and message:
            parts.append(message)
        errs = body.get("errors")
        if isinstance(errs, list):
            for item in errs:
                if isinstance(item, str) and item:
                    parts.append(item)
                elif isinstance(item, dict):
                    text = item.get("detail") or item.get("title")
                    if isinstance(text, str) and text:
                        parts.append(text)
    return "; ".join(parts) or response.reason_phrase or f"HTTP {response.status_code}"


def classify(response: httpx.Response, method: str) -> errors.BrokerError | None:
    """Schwab's 4xx answers into the error tree (429 and 5xx are fixed in app.brokers.http).

    401: the access token is missing, expired or revoked. 403: the token may not act on this
    resource (account not linked to the grant, product not approved): both are connection
    problems. 404: no such order/account. 400 (and 422): the request was refused, with
    Schwab's reason. Refusing to cancel or replace an order that is done is told apart by
    the adapter, which reads the order's status (Schwab's wording is not documented).
    """
    status = response.status_code
    message = error_message(response)
    text = message.lower()
    if status in (401, 403):
        return errors.AuthenticationFailed(message, broker=SLUG)
    if status == 404:
        return errors.OrderNotFound(message, broker=SLUG)
    if status in (400, 422):
        if "buying power" in text or "insufficient" in text:
            return errors.InsufficientFunds(message, broker=SLUG)
        if "symbol" in text and ("invalid" in text or "not found" in text):
            return errors.UnknownSymbol(message, broker=SLUG)
        if "market" in text and "closed" in text:
            return errors.MarketClosed(message, broker=SLUG)
        return errors.Rejected(message, broker=SLUG)
    return None
