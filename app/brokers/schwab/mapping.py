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
from dataclasses import replace
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
    OrderChanges,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    Position,
    Quote,
    TimeInForce,
    Transaction,
)
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
# Equity instructions only; option instructions (BUY_TO_OPEN, ...) are not mapped yet.
_INSTRUCTIONS = {
    "BUY": OrderSide.buy,
    "SELL": OrderSide.sell,
    "BUY_TO_COVER": OrderSide.buy,
    "SELL_SHORT": OrderSide.sell,
}
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


def position_from_wire(body: object, now: datetime) -> Position:
    """One ``Position``: long and short quantities are separate fields."""
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
    if pl is None:
        pl = market_value - qty * avg
    price = (market_value / qty).quantize(Decimal("0.0001")) if qty else _ZERO
    symbol = instrument.get("symbol")
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
    )


def positions_from_account(body: object, now: datetime) -> list[Position]:
    account = securities_account(body)
    items = account.get("positions") or []
    if not isinstance(items, list):
        raise unknown("positions", type(items).__name__)
    return [position_from_wire(item, now) for item in items]


# --- orders -------------------------------------------------------------------------------


def order_status(raw: object, filled: Decimal) -> OrderStatus:
    mapped = WIRE.lookup(_STATUS, raw, "order status")
    if mapped is not None:
        return mapped
    return S.partially_filled if filled > _ZERO else S.accepted


def _fills(body: dict[str, Any]) -> tuple[Decimal, Decimal | None, datetime | None]:
    """Filled quantity, average price and last execution time from the activities."""
    activities = body.get("orderActivityCollection") or []
    if not isinstance(activities, list):
        raise unknown("orderActivityCollection", type(activities).__name__)
    qty, notional, last = _ZERO, _ZERO, None
    for activity in activities:
        if not isinstance(activity, dict) or activity.get("activityType") != "EXECUTION":
            continue
        if activity.get("executionType") not in ("FILL", None):
            continue
        for leg in activity.get("executionLegs") or []:
            if not isinstance(leg, dict):
                raise unknown("executionLegs item", type(leg).__name__)
            leg_qty = dec(leg.get("quantity"), "executionLegs.quantity")
            qty += leg_qty
            notional += leg_qty * dec(leg.get("price"), "executionLegs.price")
            if leg.get("time"):
                at = ts(leg.get("time"), "executionLegs.time")
                last = at if last is None or at > last else last
    avg = (notional / qty).quantize(Decimal("0.0001")) if qty else None
    return qty, avg, last


def order_from_wire(body: object) -> BrokerOrder:
    """A Schwab ``Order`` into a ``BrokerOrder``; UnknownBrokerValue when we cannot say it.

    Single-leg equity orders of the four unified order types only: multi-leg strategies,
    options and trailing stops are not representable yet and raise.
    """
    if not isinstance(body, dict):
        raise unknown("order payload", type(body).__name__)
    order_id = body.get("orderId")
    if isinstance(order_id, bool) or not isinstance(order_id, int | str) or order_id == "":
        raise unknown("orderId", order_id)
    strategy = body.get("orderStrategyType", "SINGLE")
    if strategy != "SINGLE":
        raise unknown("orderStrategyType", strategy)
    legs = body.get("orderLegCollection")
    if not isinstance(legs, list) or len(legs) != 1 or not isinstance(legs[0], dict):
        raise unknown("orderLegCollection", legs if not isinstance(legs, list) else len(legs))
    leg = legs[0]
    side = _INSTRUCTIONS.get(str(leg.get("instruction")))
    if side is None:
        raise unknown("instruction", leg.get("instruction"))
    instrument = leg.get("instrument")
    if not isinstance(instrument, dict) or not isinstance(instrument.get("symbol"), str):
        raise unknown("order instrument", instrument)
    if _ASSET_TYPES.get(str(instrument.get("assetType"))) is not AssetClass.equity:
        raise unknown("order assetType", instrument.get("assetType"))
    order_type = _ORDER_TYPES.get(str(body.get("orderType")))
    if order_type is None:
        raise unknown("orderType", body.get("orderType"))
    tif = _DURATIONS.get(str(body.get("duration")))
    if tif is None:
        raise unknown("duration", body.get("duration"))
    quantity = dec(body.get("quantity"), "quantity")
    exec_qty, avg, last_fill = _fills(body)
    filled = opt_dec(body.get("filledQuantity"), "filledQuantity")
    filled = exec_qty if filled is None else filled
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
        broker_order_id=str(order_id),
        client_order_id=None,  # Schwab has no client order id
        symbol=instrument["symbol"],
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
    )


_LIMITED = frozenset({"limit", "stop_limit"})
_STOPPED = frozenset({"stop", "stop_limit"})

T = TypeVar("T")


def representable(items: Iterable[object], convert: Callable[[object], T], what: str) -> list[T]:
    """Convert a list, leaving out (and logging loudly) items the gateway cannot represent.

    For lists only: one option order or trailing stop placed in Schwab's own app must not
    make a user's whole order list (or a stream catch-up) fail. A single lookup still raises.
    """
    result: list[T] = []
    for item in items:
        try:
            result.append(convert(item))
        except errors.UnknownBrokerValue as exc:
            log.error(
                "schwab %s the gateway cannot represent; left out of the list: %s",
                what,
                exc.reason,
                extra={"broker": SLUG},
            )
    return result


def orders_from_wire(body: object) -> list[BrokerOrder]:
    if not isinstance(body, list):
        raise unknown("orders payload", type(body).__name__)
    return representable(body, order_from_wire, "order")


def _price(value: Decimal) -> str:
    # schwab-py sends prices as strings (orders/generic.py); Decimal keeps what was given.
    return str(value)


def order_to_wire(order: OrderRequest) -> dict[str, Any]:
    """An ``OrderRequest`` body: one equity leg. Extended hours use the SEAMLESS session.

    ``quantity`` is a whole number (the capabilities refuse fractional quantities).
    """
    body: dict[str, Any] = {
        "session": "SEAMLESS" if order.extended_hours else "NORMAL",
        "duration": _DURATIONS_OUT[order.time_in_force],
        "orderType": _ORDER_TYPES_OUT[order.order_type],
        "orderStrategyType": "SINGLE",
        "orderLegCollection": [
            {
                "instruction": "BUY" if order.side is OrderSide.buy else "SELL",
                "quantity": int(order.quantity),
                "instrument": {"symbol": order.symbol, "assetType": "EQUITY"},
            }
        ],
    }
    if order.order_type in (OrderType.limit, OrderType.stop_limit):
        if order.limit_price is None:
            raise ValueError("a limit order needs a limit price")
        body["price"] = _price(order.limit_price)
    if order.order_type in (OrderType.stop, OrderType.stop_limit):
        if order.stop_price is None:
            raise ValueError("a stop order needs a stop price")
        body["stopPrice"] = _price(order.stop_price)
    return body


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
