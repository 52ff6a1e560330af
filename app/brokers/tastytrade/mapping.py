"""tastytrade wire format <-> normalized models. Strict: unknown values raise, never guess.

Quirks handled here, each with its doc page:

* JSON keys are dasherized (``order-type``, ``time-in-force``, ``underlying-symbol``):
  https://developer.tastytrade.com/docs/guides/error-handling ("JSON keys are dasherized").
* Every answer wraps its payload as ``{"data": ..., "context": "..."}`` and lists as
  ``{"data": {"items": [...]}}``: https://developer.tastytrade.com/order-management (the
  ``/orders/live`` example).
* Decimals arrive as strings (``"price": "3.0"``) and sometimes as JSON numbers (``"size": 1``,
  leg ``"quantity": 1`` in the same example); both are read as ``Decimal`` (numbers are parsed
  with ``parse_float=Decimal`` by the caller, never as binary floats).
* Prices are unsigned; the sign is ``price-effect``: ``Debit`` (you pay) or ``Credit`` (you
  receive): https://developer.tastytrade.com/order-submission.
* ``updated-at`` on an order is epoch milliseconds in recorded answers
  (``"updated-at": 1748439528049``) while ``received-at`` is RFC 3339 with an offset
  (``"2025-05-28T13:38:47.851+00:00"``); ``ts`` reads both.
* Order ids are integers on the wire (``"id": 270561``); ours are their decimal strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx

from app.brokers import errors
from app.brokers.base import (
    AssetClass,
    Balances,
    BrokerOrder,
    Fill,
    OrderChanges,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Position,
    Quote,
    TimeInForce,
    Transaction,
)
from app.brokers.wire import WireReader

SLUG = "tastytrade"
WIRE = WireReader(SLUG)  # the shared wire readers (app/brokers/wire.py), for this broker
unknown, dec, opt_dec = WIRE.unknown, WIRE.decimal, WIRE.opt_decimal
_ZERO = Decimal(0)

# Every status of the order lifecycle (https://developer.tastytrade.com/order-flow and
# https://developer.tastytrade.com/docs/concepts/order-lifecycle/; the same thirteen values
# are tastyware/tastytrade ``OrderStatus``). ``None``: a working order, accepted or
# partially filled depending on what has filled. "Cancelled" is decided in ``order_status``
# (a cancel that completes a replacement is our ``replaced``).
_STATUS: dict[str, OrderStatus | None] = {
    # Submission phase.
    "Received": None,  # tastytrade holds it and routes it when the market opens
    "Routed": OrderStatus.submitted,  # being sent to an exchange
    "In Flight": OrderStatus.submitted,  # left tastytrade, exchange ack pending
    "Contingent": None,  # dormant until a related order moves (replacements, OTO legs)
    # Working phase.
    "Live": None,
    "Cancel Requested": OrderStatus.pending_cancel,
    "Replace Requested": OrderStatus.pending_replace,
    # Terminal phase.
    "Filled": OrderStatus.filled,
    "Cancelled": OrderStatus.canceled,
    "Expired": OrderStatus.expired,
    "Rejected": OrderStatus.rejected,
    # An administrator removed the order (or its rest) from the account: it no longer works
    # and nothing more fills (QuantConnect/Lean.Brokerages.Tastytrade OrderStatus.cs docs).
    "Removed": OrderStatus.canceled,
    "Partially Removed": OrderStatus.canceled,
}
# Wire statuses of orders that are finished (``status[]`` filter values for closed orders).
CLOSED_WIRE_STATUSES = (
    "Filled",
    "Cancelled",
    "Expired",
    "Rejected",
    "Removed",
    "Partially Removed",
)

_ORDER_TYPES = {
    "Market": OrderType.market,
    "Limit": OrderType.limit,
    "Stop": OrderType.stop,
    "Stop Limit": OrderType.stop_limit,
}
_ORDER_TYPES_OUT = {v: k for k, v in _ORDER_TYPES.items()}

# time-in-force values we model: (ours, extended hours). "GTD", "Ext Overnight" and
# "GTC Ext Overnight" exist too (postAccountsAccountNumberOrders enum) and are not modelled.
_TIF: dict[str, tuple[TimeInForce, bool]] = {
    "Day": (TimeInForce.day, False),
    "GTC": (TimeInForce.gtc, False),
    "IOC": (TimeInForce.ioc, False),
    "Ext": (TimeInForce.day, True),
    "GTC Ext": (TimeInForce.gtc, True),
}

# Leg actions (https://developer.tastytrade.com/order-submission): the side, whatever the
# position effect. "Buy"/"Sell" are for futures; "Allocate" is not a trade we model.
_ACTIONS = {
    "Buy to Open": OrderSide.buy,
    "Buy to Close": OrderSide.buy,
    "Buy": OrderSide.buy,
    "Sell to Open": OrderSide.sell,
    "Sell to Close": OrderSide.sell,
    "Sell": OrderSide.sell,
}

# instrument-type values (tastyware/tastytrade ``InstrumentType`` plus "Event Contract" from
# the orders swagger). None: a real instrument type the gateway does not model (yet).
_INSTRUMENT_TYPES: dict[str, AssetClass | None] = {
    "Equity": AssetClass.equity,
    "Equity Option": AssetClass.option,
    "Cryptocurrency": AssetClass.crypto,
    "Bond": None,
    "Currency Pair": None,
    "Equity Offering": None,
    "Event Contract": None,
    "Fixed Income Security": None,
    "Future": None,
    "Future Option": None,
    "Index": None,
    "Liquidity Pool": None,
    "Unknown": None,
    "Warrant": None,
}

_PRICE_EFFECTS = {"Debit": Decimal(-1), "Credit": Decimal(1), "None": _ZERO}


def ts(value: object, field: str = "timestamp") -> datetime:
    """RFC 3339 (``Z`` or an offset, any fraction) or epoch milliseconds, as UTC."""
    return WIRE.timestamp(value, field, epoch_ms=True)


def wire_time(at: datetime) -> str:
    """Query-string datetimes (``start-at``/``end-at``): UTC, second precision."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def data_of(body: object) -> Any:
    """The ``data`` member of an answer; UnknownBrokerValue when the wrapper is missing."""
    if not isinstance(body, dict) or "data" not in body:
        raise unknown("response wrapper", type(body).__name__)
    return body["data"]


def items_of(body: object) -> list[Any]:
    """``data.items`` of a list answer."""
    data = data_of(body)
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise unknown("list payload", type(items).__name__)
    return items


@dataclass(frozen=True, slots=True)
class Page:
    """The ``pagination`` member of a paginated answer (``page-offset``, ``total-pages``)."""

    offset: int
    total_pages: int

    @property
    def last(self) -> bool:
        return self.offset >= self.total_pages - 1


def page_of(body: object) -> Page | None:
    pagination = body.get("pagination") if isinstance(body, dict) else None
    if not isinstance(pagination, dict):
        return None
    offset, total = pagination.get("page-offset"), pagination.get("total-pages")
    if not isinstance(offset, int) or not isinstance(total, int):
        raise unknown("pagination", pagination)
    return Page(offset=offset, total_pages=total)


def _str_id(value: object, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str) or value in ("", -1):
        raise unknown(field, value)
    return str(value)


def _opt_id(value: object) -> str | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, int | str):
        return str(value)
    return None


# --- symbols ---------------------------------------------------------------------------


def to_wire_symbol(symbol: str) -> str:
    """Equities travel as tickers (``AAPL``, ``BRK/B``); our crypto pairs ``BTC-USD`` as
    ``BTC/USD`` (https://developer.tastytrade.com/order-submission)."""
    return symbol.replace("-", "/") if re.fullmatch(r"[A-Z0-9]+-[A-Z]+", symbol) else symbol


def from_wire_symbol(symbol: str, asset_class: AssetClass) -> str:
    if asset_class is AssetClass.crypto:
        return symbol.replace("/", "-")
    if asset_class is AssetClass.option:
        # OCC with the root padded to six characters: "AAPL  240119C00150000".
        return re.sub(r"\s+", " ", symbol.strip())
    return symbol


# --- orders ----------------------------------------------------------------------------


def order_status(raw: object, quantity: Decimal, filled: Decimal, replacing: bool) -> OrderStatus:
    if not isinstance(raw, str) or raw not in _STATUS:
        raise unknown("order status", raw)
    if raw == "Cancelled" and replacing:
        # The original of a cancel-replace ends "Cancelled" once its replacement routes
        # (https://developer.tastytrade.com/order-flow, "Replacement orders may also be
        # Contingent"); ``replacing-order-id`` names the replacement.
        return OrderStatus.replaced
    mapped = _STATUS[raw]
    if mapped is not None:
        return mapped
    return OrderStatus.partially_filled if filled > _ZERO else OrderStatus.accepted


def single_leg(body: dict[str, Any]) -> dict[str, Any]:
    legs = body.get("legs")
    if not isinstance(legs, list) or len(legs) != 1 or not isinstance(legs[0], dict):
        raise unknown("order legs", legs if not isinstance(legs, list) else f"{len(legs)} legs")
    leg: dict[str, Any] = legs[0]
    return leg


def is_modelled(body: object) -> bool:
    """Whether an order is one the gateway can represent: one equity leg.

    Orders the user placed elsewhere (spreads, futures, complex orders) are legal at
    tastytrade and are not errors; the caller leaves them out of its lists. Orders that
    pass this check are mapped strictly.
    """
    if not isinstance(body, dict):
        return False
    legs = body.get("legs")
    return (
        isinstance(legs, list)
        and len(legs) == 1
        and isinstance(legs[0], dict)
        and legs[0].get("instrument-type") == "Equity"
    )


def _fills(leg: dict[str, Any]) -> list[Fill]:
    raw = leg.get("fills") or []
    if not isinstance(raw, list):
        raise unknown("fills", type(raw).__name__)
    fills = []
    for item in raw:
        if not isinstance(item, dict):
            raise unknown("fill", type(item).__name__)
        fills.append(
            Fill(
                fill_id=_str_id(item.get("fill-id"), "fill-id"),
                quantity=dec(item.get("quantity"), "fill quantity"),
                price=dec(item.get("fill-price"), "fill-price"),
                occurred_at=ts(item.get("filled-at"), "filled-at"),
            )
        )
    return fills


def fills_of(body: dict[str, Any]) -> tuple[Fill, ...]:
    return tuple(_fills(single_leg(body)))


def order_from_wire(body: object) -> BrokerOrder:
    """A tastytrade ``Order`` (orders swagger ``Order``; SDK ``PlacedOrder``) into a
    ``BrokerOrder``. Only single-leg equity orders are modelled (``is_modelled``)."""
    if not isinstance(body, dict):
        raise unknown("order payload", type(body).__name__)
    leg = single_leg(body)
    instrument = leg.get("instrument-type")
    if instrument not in _INSTRUMENT_TYPES:
        raise unknown("instrument-type", instrument)
    asset_class = _INSTRUMENT_TYPES[instrument]
    if asset_class is not AssetClass.equity:
        raise unknown("order instrument-type (not modelled)", instrument)
    side = _ACTIONS.get(str(leg.get("action")))
    if side is None:
        raise unknown("leg action", leg.get("action"))
    order_type = _ORDER_TYPES.get(str(body.get("order-type")))
    if order_type is None:
        raise unknown("order-type", body.get("order-type"))
    tif = _TIF.get(str(body.get("time-in-force")))
    if tif is None:
        raise unknown("time-in-force", body.get("time-in-force"))
    quantity = dec(leg.get("quantity"), "leg quantity")
    fills = _fills(leg)
    remaining = opt_dec(leg.get("remaining-quantity"), "remaining-quantity")
    # ``remaining-quantity`` is authoritative for how much filled: an order may be "Filled"
    # before every fill is published (fills stream one by one).
    filled = (
        quantity - remaining if remaining is not None else sum((f.quantity for f in fills), _ZERO)
    )
    avg_fill_price = None
    filled_in_fills = sum((f.quantity for f in fills), _ZERO)
    if filled_in_fills > _ZERO:
        avg_fill_price = sum((f.quantity * f.price for f in fills), _ZERO) / filled_in_fills
    replacing = _opt_id(body.get("replacing-order-id"))
    status = order_status(body.get("status"), quantity, filled, replacing is not None)
    price = opt_dec(body.get("price"), "price")
    stop = opt_dec(body.get("stop-trigger"), "stop-trigger")
    # The docs' own examples omit the timestamps; the newest one present stands in.
    stamps = [
        ts(body[key], key)
        for key in ("updated-at", "terminal-at", "cancelled-at", "live-at", "received-at")
        if body.get(key) is not None
    ]
    if not stamps:
        raise unknown("order timestamps", None)
    updated = max(stamps)
    received = body.get("received-at")
    created = ts(received, "received-at") if received else min(stamps)
    external = body.get("external-identifier")
    reject_reason = body.get("reject-reason")
    return BrokerOrder(
        broker_order_id=_str_id(body.get("id"), "order id"),
        client_order_id=external if isinstance(external, str) and external else None,
        symbol=from_wire_symbol(str(leg.get("symbol")), AssetClass.equity),
        side=side,
        quantity=quantity,
        filled_quantity=filled,
        avg_fill_price=avg_fill_price,
        order_type=order_type,
        time_in_force=tif[0],
        status=status,
        limit_price=price.copy_abs() if price is not None else None,
        stop_price=stop,
        created_at=created,
        updated_at=updated,
        reject_reason=(
            str(reject_reason or "rejected by the broker")
            if status is OrderStatus.rejected
            else None
        ),
        replaced_by=replacing,
        replaces=_opt_id(body.get("replaces-order-id")),
    )


def tif_to_wire(tif: TimeInForce, extended_hours: bool) -> str:
    """Our time in force (plus the extended-hours flag) as tastytrade's ``time-in-force``."""
    if tif is TimeInForce.fok:
        raise errors.UnsupportedOrder("tastytrade has no fill-or-kill time in force", broker=SLUG)
    if extended_hours:
        if tif is TimeInForce.day:
            return "Ext"
        if tif is TimeInForce.gtc:
            return "GTC Ext"
        raise errors.UnsupportedOrder(
            "tastytrade takes extended-hours orders as day or gtc only", broker=SLUG
        )
    return {TimeInForce.day: "Day", TimeInForce.gtc: "GTC", TimeInForce.ioc: "IOC"}[tif]


def _price_effect(side: OrderSide) -> str:
    # "you can't buy for a credit or sell for a debit" (cant_buy_for_credit).
    return "Debit" if side is OrderSide.buy else "Credit"


def _action(side: OrderSide) -> str:
    """Buys open, sells close. tastytrade turns a closing order into an opening one when
    there is nothing to close (and the reverse) unless strict-position-effect-validation is
    set (tastyware/tastytrade ``AdvancedInstructions``), so a sell without a long position
    opens a short, as a sell does at other brokers."""
    return "Buy to Open" if side is OrderSide.buy else "Sell to Close"


def order_to_wire(order: OrderRequest, source: str) -> dict[str, Any]:
    """The ``POST /accounts/{account_number}/orders`` body (dasherized, decimal strings).

    ``external-identifier`` carries our client order id: tastytrade echoes it on the order
    but does not deduplicate on it
    (https://developer.tastytrade.com/docs/guides/idempotency-and-retries/).
    """
    body: dict[str, Any] = {
        "time-in-force": tif_to_wire(order.time_in_force, order.extended_hours),
        "order-type": _ORDER_TYPES_OUT[order.order_type],
        "external-identifier": order.client_order_id,
        "source": source,
        "legs": [
            {
                "instrument-type": "Equity",
                "symbol": to_wire_symbol(order.symbol),
                "quantity": str(order.quantity),
                "action": _action(order.side),
            }
        ],
    }
    if order.order_type in (OrderType.limit, OrderType.stop_limit):
        if order.limit_price is None:
            raise errors.UnsupportedOrder("a limit order needs a limit price", broker=SLUG)
        body["price"] = str(order.limit_price)
        body["price-effect"] = _price_effect(order.side)
    if order.order_type in (OrderType.stop, OrderType.stop_limit):
        if order.stop_price is None:
            raise errors.UnsupportedOrder("a stop order needs a stop price", broker=SLUG)
        body["stop-trigger"] = str(order.stop_price)
    return body


def replacement_to_wire(
    current: dict[str, Any], changes: OrderChanges, external_identifier: str, source: str
) -> dict[str, Any]:
    """The ``PUT /accounts/{account_number}/orders/{id}`` body: the order's terms with the
    changes applied, without legs (the original legs are kept). Only price, order type and
    time in force can change in a cancel-replace
    (https://developer.tastytrade.com/order-management/, "Cancel Replace").
    """
    if changes.quantity is not None:
        raise errors.UnsupportedOrder(
            "tastytrade cannot change an order's quantity; cancel it and place a new one",
            broker=SLUG,
        )
    order = order_from_wire(current)
    raw_tif = str(current.get("time-in-force"))
    extended = _TIF[raw_tif][1]
    tif = changes.time_in_force or order.time_in_force
    body: dict[str, Any] = {
        "order-type": _ORDER_TYPES_OUT[order.order_type],
        "time-in-force": raw_tif if changes.time_in_force is None else tif_to_wire(tif, extended),
        "external-identifier": external_identifier,
        "source": source,
    }
    limit = changes.limit_price if changes.limit_price is not None else order.limit_price
    stop = changes.stop_price if changes.stop_price is not None else order.stop_price
    if order.order_type in (OrderType.limit, OrderType.stop_limit) and limit is not None:
        body["price"] = str(limit)
        body["price-effect"] = _price_effect(order.side)
    if order.order_type in (OrderType.stop, OrderType.stop_limit) and stop is not None:
        body["stop-trigger"] = str(stop)
    return body


# --- accounts, balances, positions -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WireAccount:
    number: str
    name: str
    closed: bool


def account_from_wire(item: object) -> WireAccount:
    """One ``/customers/me/accounts`` item: ``{"account": {...}, "authority-level": ...}``."""
    account = item.get("account") if isinstance(item, dict) else None
    if not isinstance(account, dict):
        raise unknown("account item", type(item).__name__)
    number = account.get("account-number")
    if not isinstance(number, str) or not number:
        raise unknown("account-number", number)
    name = account.get("nickname") or account.get("account-type-name") or "tastytrade"
    return WireAccount(number=number, name=str(name), closed=account.get("is-closed") is True)


def balances_from_wire(data: object, now: datetime) -> Balances:
    """``GET /accounts/{account_number}/balances``: cash, net liquidating value and equity
    buying power (tastyware/tastytrade ``AccountBalance``)."""
    if not isinstance(data, dict):
        raise unknown("balances payload", type(data).__name__)
    updated = data.get("updated-at")
    return Balances(
        cash=dec(data.get("cash-balance"), "cash-balance"),
        equity=dec(data.get("net-liquidating-value"), "net-liquidating-value"),
        buying_power=dec(data.get("equity-buying-power"), "equity-buying-power"),
        currency=str(data.get("currency") or "USD"),
        as_of=ts(updated, "updated-at") if updated else now,
    )


def position_from_wire(item: object, now: datetime) -> Position | None:
    """One ``/accounts/{account_number}/positions`` item; None for instrument types the
    gateway does not model (futures, bonds, ...). ``quantity`` is unsigned and
    ``quantity-direction`` says Long or Short; prices come from ``mark-price``/``mark``
    (asked for with ``include-marks``), else the last ``close-price``."""
    if not isinstance(item, dict):
        raise unknown("position payload", type(item).__name__)
    instrument = item.get("instrument-type")
    if instrument not in _INSTRUMENT_TYPES:
        raise unknown("instrument-type", instrument)
    asset_class = _INSTRUMENT_TYPES[instrument]
    if asset_class is None:
        return None
    direction = item.get("quantity-direction")
    quantity = dec(item.get("quantity"), "quantity").copy_abs()
    if direction == "Short":
        quantity = -quantity
    elif direction == "Zero":
        quantity = _ZERO
    elif direction != "Long":
        raise unknown("quantity-direction", direction)
    multiplier = opt_dec(item.get("multiplier"), "multiplier") or Decimal(1)
    price = (
        opt_dec(item.get("mark-price"), "mark-price")
        or opt_dec(item.get("mark"), "mark")
        or dec(item.get("close-price"), "close-price")
    )
    avg_cost = dec(item.get("average-open-price"), "average-open-price")
    updated = item.get("updated-at")
    return Position(
        symbol=from_wire_symbol(str(item.get("symbol")), asset_class),
        asset_class=asset_class,
        quantity=quantity,
        avg_cost=avg_cost,
        current_price=price,
        market_value=quantity * price * multiplier,
        unrealized_pl=(price - avg_cost) * quantity * multiplier,
        as_of=ts(updated, "updated-at") if updated else now,
    )


# --- transactions ----------------------------------------------------------------------

# "Money Movement" sub-types into our transaction types; anything else is "other" with the
# broker's own description (the list of sub-types is not published as an enum).
_MONEY_MOVEMENTS = {
    "Deposit": "deposit",
    "Withdrawal": "withdrawal",
    "Dividend": "dividend",
    "Credit Interest": "interest",
    "Debit Interest": "interest",
    "Fee": "fee",
    "Transfer": "transfer",
}


def signed(value: object, effect: object, field: str) -> Decimal:
    """An unsigned amount and its ``<field>-effect``: Debit is negative, Credit positive."""
    amount = dec(value, field).copy_abs()
    if effect is None:
        return amount
    sign = _PRICE_EFFECTS.get(str(effect))
    if sign is None:
        raise unknown(f"{field}-effect", effect)
    return amount * sign


def transaction_from_wire(item: object) -> Transaction:
    """One ``/accounts/{account_number}/transactions`` item (SDK ``Transaction``)."""
    if not isinstance(item, dict):
        raise unknown("transaction payload", type(item).__name__)
    kind = item.get("transaction-type")
    sub_type = item.get("transaction-sub-type")
    if kind == "Trade":
        side = _ACTIONS.get(str(item.get("action")))
        if side is None:
            raise unknown("transaction action", item.get("action"))
        type_ = side.value
    elif kind == "Money Movement" and sub_type in _MONEY_MOVEMENTS:
        type_ = _MONEY_MOVEMENTS[str(sub_type)]
    elif isinstance(kind, str) and kind:
        type_ = "other"
    else:
        raise unknown("transaction-type", kind)
    symbol = item.get("symbol")
    return Transaction(
        transaction_id=_str_id(item.get("id"), "transaction id"),
        type=type_,
        occurred_at=ts(item.get("executed-at"), "executed-at"),
        amount=signed(item.get("net-value"), item.get("net-value-effect"), "net-value"),
        symbol=symbol if isinstance(symbol, str) and symbol else None,
        quantity=opt_dec(item.get("quantity"), "quantity"),
        price=opt_dec(item.get("price"), "price"),
        description=str(item.get("description") or sub_type or kind),
    )


# --- market data -----------------------------------------------------------------------


def quotes_from_wire(items: list[Any], symbols: list[str]) -> dict[str, Quote]:
    """``GET /market-data/by-type`` items (SDK ``MarketData``) for the asked symbols.

    A symbol without both a bid and an ask is left out (halted, or no quote yet); ``last``
    falls back to ``mark`` when no trade has printed.
    """
    by_symbol = {item.get("symbol"): item for item in items if isinstance(item, dict)}
    result: dict[str, Quote] = {}
    for symbol in symbols:
        item = by_symbol.get(to_wire_symbol(symbol))
        if item is None:
            continue
        bid = opt_dec(item.get("bid"), "bid")
        ask = opt_dec(item.get("ask"), "ask")
        if bid is None or ask is None:
            continue
        last = opt_dec(item.get("last"), "last") or opt_dec(item.get("mark"), "mark")
        result[symbol] = Quote(
            symbol=symbol,
            bid=bid,
            ask=ask,
            last=last if last is not None else (bid + ask) / 2,
            as_of=ts(item.get("updated-at"), "updated-at"),
        )
    return result


# --- account streamer ------------------------------------------------------------------


def update_from_notification(message: dict[str, Any], account_ref: str) -> OrderUpdate | None:
    """One account-streamer notification: ``{"type": "Order", "data": {...}, "timestamp":
    <epoch ms>}``; None for the other types (AccountBalance, CurrentPosition, ...) and for
    orders the gateway does not model. ``fills`` are all the order's fills so far."""
    if message.get("type") != "Order":
        return None
    data = message.get("data")
    if not is_modelled(data):
        return None
    assert isinstance(data, dict)
    order = order_from_wire(data)
    stamp = message.get("timestamp")
    occurred = ts(stamp, "timestamp") if stamp is not None else order.updated_at
    return OrderUpdate(
        account_ref=account_ref, order=order, occurred_at=occurred, fills=fills_of(data)
    )


# --- errors ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WireError:
    code: str | None
    message: str
    nested: tuple[tuple[str | None, str], ...]

    @property
    def codes(self) -> frozenset[str]:
        return frozenset(c for c in (self.code, *(n[0] for n in self.nested)) if c)

    @property
    def reason(self) -> str:
        details = "; ".join(m for _, m in self.nested if m)
        return f"{self.message}: {details}" if details else self.message


def error_of(response: httpx.Response) -> WireError:
    """``{"error": {"code", "message", "errors": [{"code", "message"} | {"domain",
    "reason"}]}}`` (https://developer.tastytrade.com/docs/guides/error-handling;
    tastyware/tastytrade ``validate_response``), tolerant of anything else."""
    fallback = response.reason_phrase or f"HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        return WireError(None, fallback, ())
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, str):
        return WireError(error, str(body.get("error_description") or error), ())
    if not isinstance(error, dict):
        return WireError(None, fallback, ())
    nested: list[tuple[str | None, str]] = []
    for item in error.get("errors") or []:
        if isinstance(item, dict):
            code = item.get("code") or item.get("domain")
            text = item.get("message") or item.get("reason") or ""
            nested.append((str(code) if code else None, str(text)))
    code = error.get("code")
    message = error.get("message")
    return WireError(
        str(code) if code else None,
        str(message) if message else fallback,
        tuple(nested),
    )


class TokenRejected(errors.AuthenticationFailed):
    """A 401 on an API call: the access token is expired or revoked. A new one (from the
    refresh token) may work, so the request is retried once with it; the 401 means the
    request itself was refused, so resending even a write is safe."""


# Codes in recorded answers: preflight failures name their cause in ``errors[].code``.
_INSUFFICIENT = frozenset({"margin_check_failed"})  # "does not have sufficient buying power"
_NOT_MODIFIABLE = frozenset({"cannot_update_order"})  # cancel/replace of a finished order


def classify(response: httpx.Response, method: str) -> errors.BrokerError | None:
    """tastytrade's 4xx answers into the error tree (429 and 5xx are fixed in
    app.brokers.http). https://developer.tastytrade.com/reference/errors/: 401 is an
    expired/invalid access token (or a missing User-Agent), 403 a token or account not
    allowed to do this, 404 an unknown account/symbol/order, 400/422 a refused request
    (422 ``preflight_check_failure`` with the causes in ``errors``)."""
    status = response.status_code
    error = error_of(response)
    path = response.request.url.path if response.request is not None else ""
    if status == 401:
        return TokenRejected(error.reason, broker=SLUG)
    if status == 403:
        return errors.AuthenticationFailed(error.reason, broker=SLUG)
    if status == 404:
        if "/instruments/" in path:
            return errors.UnknownSymbol(error.reason, broker=SLUG)
        return errors.OrderNotFound(error.reason, broker=SLUG)
    if status in (400, 409, 422):
        if error.codes & _INSUFFICIENT:
            return errors.InsufficientFunds(error.reason, broker=SLUG)
        if error.codes & _NOT_MODIFIABLE and method in ("PUT", "PATCH", "DELETE"):
            return errors.OrderNotModifiable(error.reason, broker=SLUG)
        return errors.Rejected(error.reason, broker=SLUG)
    return None
