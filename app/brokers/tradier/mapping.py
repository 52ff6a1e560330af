"""Tradier wire format <-> normalized models. Strict: unknown values raise, never guess.

Tradier answers JSON numbers (``"quantity": 50.00000000``, ``"total_equity":
17798.360000000000000000000000``); bodies are parsed with ``parse_float=Decimal`` so no binary
float ever appears. Order ids are JSON numbers and become strings here.

Quirks, each with its doc page:

* A collection with one item is a bare object, not a list, and an empty collection is the
  string ``"null"`` (or JSON ``null``): ``{"positions": "null"}``, ``{"orders": {"order":
  {...}}}`` (https://docs.tradier.com/docs/positions, https://docs.tradier.com/docs/orders).
  ``items()`` reads all three shapes.
* Errors come as ``{"errors": {"error": "..." | ["...", ...]}}``, with status 400 or, for
  errors raised downstream (risk checks, market centres), with status **200**
  (https://docs.tradier.com/docs/error-responses). Authentication failures are API-gateway
  faults: ``{"fault": {"faultstring": "Invalid Access Token", "detail": {"errorcode":
  "keymanagement.service.invalid_access_token"}}}`` (as recorded by QuantConnect's Tradier
  brokerage, QuantConnect/Lean.Brokerages.Tradier).
* ``tag`` is the only client-supplied order label: at most 255 characters of letters, digits
  and ``-`` (https://documentation.tradier.com/brokerage-api/trading/place-equity-order).
  ``to_tag``/``from_tag`` make any client order id fit and map it back.
* ``duration`` is ``day | gtc | pre | post``; ``pre``/``post`` are day orders for the
  extended sessions (same page).
"""

from __future__ import annotations

import re
import time
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
    Position,
    Quote,
    TimeInForce,
    Transaction,
)
from app.brokers.symbols import asset_class_of
from app.brokers.wire import WireReader

SLUG = "tradier"
WIRE = WireReader(SLUG)  # the shared wire readers (app/brokers/wire.py), for this broker
unknown, dec, opt_dec, ts = WIRE.unknown, WIRE.decimal, WIRE.opt_decimal, WIRE.timestamp
epoch_ms = WIRE.epoch_ms  # quote dates (``"bid_date": 1557168406000``)
_ZERO = Decimal(0)

# Every documented order status: the REST order object
# (https://documentation.tradier.com/brokerage-api/reference/response/orders: open,
# partially_filled, filled, expired, canceled, pending, rejected, error), the older
# developer.tradier.com order page (adds submitted) and the account-streaming definitions
# (https://docs.tradier.com/docs/account-streaming-responses: adds calculated,
# accepted_for_bidding, held). None: still working; accepted or partially_filled follows from
# what has filled (see ``order_status``).
_STATUS: dict[str, OrderStatus | None] = {
    "open": None,  # working at the market
    "partially_filled": OrderStatus.partially_filled,
    "filled": OrderStatus.filled,
    "expired": OrderStatus.expired,
    "canceled": OrderStatus.canceled,
    "pending": OrderStatus.submitted,  # received, not yet acknowledged by the market
    "rejected": OrderStatus.rejected,
    "error": OrderStatus.rejected,  # failed downstream; the order is not working
    "submitted": OrderStatus.submitted,
    "calculated": None,  # done for the day, settlement pending: see order_status
    "accepted_for_bidding": None,  # auction orders awaiting the auction
    "held": None,  # contingent legs held until their trigger
}

_ORDER_TYPES = {
    "market": OrderType.market,
    "limit": OrderType.limit,
    "stop": OrderType.stop,
    "stop_limit": OrderType.stop_limit,
}
# Multi-leg order types (market/debit/credit/even) belong to classes we do not model.
_DURATIONS = {
    "day": TimeInForce.day,
    "gtc": TimeInForce.gtc,
    "pre": TimeInForce.day,  # a day order for the pre-market session
    "post": TimeInForce.day,  # a day order for the post-market session
}
_SIDES = {
    "buy": OrderSide.buy,
    "buy_to_cover": OrderSide.buy,
    "sell": OrderSide.sell,
    "sell_short": OrderSide.sell,
    "buy_to_open": OrderSide.buy,
    "buy_to_close": OrderSide.buy,
    "sell_to_open": OrderSide.sell,
    "sell_to_close": OrderSide.sell,
}
# Order classes (reference/response/orders): equity and option are single orders we model;
# the others are multi-order structures this adapter does not model (skipped by listings).
SINGLE_CLASSES = frozenset({"equity", "option"})
UNMODELED_CLASSES = frozenset({"multileg", "combo", "oto", "oco", "otoco"})

TAG_MAX = 255
_TAG_OK = re.compile(r"^[A-Za-z0-9-]{1,255}$")
_HEX_TAG = re.compile(r"^x-((?:[0-9a-f]{2})+)$")


class UnmodeledOrder(errors.UnknownBrokerValue):
    """A documented order class the adapter does not model (multileg, combo, oto, ...)."""


def plain(value: Decimal) -> str:
    """A decimal as form text without exponent (``Decimal("1E+2")`` -> ``"100"``)."""
    text = format(value.normalize(), "f")
    return text


def day(at: datetime) -> str:
    """Date filters are ``yyyy-mm-dd`` (get-account-orders, get-account-history)."""
    return at.astimezone(UTC).strftime("%Y-%m-%d")


def items(body: object, outer: str, inner: str) -> list[dict[str, Any]]:
    """``{outer: {inner: obj | [obj, ...]}}`` with ``"null"``/``null`` meaning empty."""
    if not isinstance(body, dict):
        raise unknown(f"{outer} payload", type(body).__name__)
    container = body.get(outer)
    if container is None or container == "null":
        return []
    if not isinstance(container, dict):
        raise unknown(f"{outer} payload", container)
    value = container.get(inner)
    if value is None or value == "null":
        return []
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return value
    raise unknown(f"{outer}.{inner} payload", type(value).__name__)


# --- tags <-> client order ids -------------------------------------------------------------


def to_tag(client_order_id: str) -> str:
    """Our client order id as a Tradier tag (letters, digits, '-', at most 255 characters).

    The gateway's own ids (``bg`` + 32 hex digits) fit as they are. Anything else is sent as
    ``x-`` + the UTF-8 bytes in hex, which ``from_tag`` reverses; an id that fits but starts
    with ``x-`` is hex-encoded too, so the two forms never collide.
    """
    if _TAG_OK.match(client_order_id) and not client_order_id.startswith("x-"):
        return client_order_id
    encoded = "x-" + client_order_id.encode().hex()
    if len(encoded) > TAG_MAX:
        raise errors.UnsupportedOrder(
            "the client order id is too long for a Tradier order tag", broker=SLUG
        )
    return encoded


def from_tag(tag: object) -> str | None:
    if not isinstance(tag, str) or not tag:
        return None
    match = _HEX_TAG.match(tag)
    if match is None:
        return tag
    try:
        return bytes.fromhex(match.group(1)).decode()
    except (ValueError, UnicodeDecodeError):
        return tag


# --- orders ---------------------------------------------------------------------------------


def order_status(raw: object, quantity: Decimal, filled: Decimal) -> OrderStatus:
    mapped = WIRE.lookup(_STATUS, raw, "order status")
    if mapped is not None:
        return mapped
    if raw == "calculated" and filled >= quantity > _ZERO:
        return OrderStatus.filled
    return OrderStatus.partially_filled if filled > _ZERO else OrderStatus.accepted


def check_status(raw: object) -> None:
    """Raise UnknownBrokerValue for a status outside the documented vocabulary."""
    if not isinstance(raw, str) or raw not in _STATUS:
        raise unknown("order status", raw)


def order_class(body: dict[str, Any]) -> str:
    raw = body.get("class", "equity")  # stream events carry no class
    if raw in SINGLE_CLASSES:
        return str(raw)
    if raw in UNMODELED_CLASSES:
        raise UnmodeledOrder(f"tradier {raw} orders are not modeled", broker=SLUG)
    raise unknown("order class", raw)


def order_id(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
        raise unknown("order id", value)
    return str(value)


def order_from_wire(body: object) -> BrokerOrder:
    """A Tradier order object (the inner ``order``) into a ``BrokerOrder``."""
    if not isinstance(body, dict):
        raise unknown("order payload", type(body).__name__)
    kind = order_class(body)
    order_type = _ORDER_TYPES.get(str(body.get("type")))
    if order_type is None:
        raise unknown("order type", body.get("type"))
    tif = _DURATIONS.get(str(body.get("duration")))
    if tif is None:
        raise unknown("duration", body.get("duration"))
    side = _SIDES.get(str(body.get("side")))
    if side is None:
        raise unknown("side", body.get("side"))
    quantity = dec(body.get("quantity"), "quantity")
    filled = opt_dec(body.get("exec_quantity"), "exec_quantity") or _ZERO
    status = order_status(body.get("status"), quantity, filled)
    avg = opt_dec(body.get("avg_fill_price"), "avg_fill_price")
    created = ts(body.get("create_date"), "create_date")
    updated_raw = body.get("transaction_date")
    symbol = body.get("option_symbol") if kind == "option" else body.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise unknown("symbol", symbol)
    reason = body.get("reason_description")
    reject_reason = None
    if status is OrderStatus.rejected:
        reject_reason = reason if isinstance(reason, str) and reason else "rejected by the broker"
    return BrokerOrder(
        broker_order_id=order_id(body.get("id")),
        client_order_id=from_tag(body.get("tag")),
        symbol=symbol,
        side=side,
        quantity=quantity,
        filled_quantity=filled,
        avg_fill_price=avg if filled > _ZERO else None,
        order_type=order_type,
        time_in_force=tif,
        status=status,
        # Tradier reports 0.0 for the price a type does not use (stream events).
        limit_price=(
            opt_dec(body.get("price"), "price")
            if order_type in (OrderType.limit, OrderType.stop_limit)
            else None
        ),
        stop_price=(
            opt_dec(body.get("stop_price"), "stop_price")
            if order_type in (OrderType.stop, OrderType.stop_limit)
            else None
        ),
        created_at=created,
        updated_at=ts(updated_raw, "transaction_date") if updated_raw else created,
        reject_reason=reject_reason,
    )


def order_to_form(order: OrderRequest) -> dict[str, str]:
    """The ``POST /v1/accounts/{id}/orders`` form for a single equity order.

    https://documentation.tradier.com/brokerage-api/trading/place-equity-order: class, symbol,
    side (buy|buy_to_cover|sell|sell_short), quantity (whole shares), type, duration
    (day|gtc|pre|post), price, stop, tag. Anything Tradier cannot express raises
    ``UnsupportedOrder`` before a request is sent.
    """
    if asset_class_of(order.symbol) is not AssetClass.equity:
        raise errors.UnsupportedOrder("only equity orders go to Tradier so far", broker=SLUG)
    if order.quantity != order.quantity.to_integral_value() or order.quantity <= 0:
        raise errors.UnsupportedOrder("Tradier trades whole shares only", broker=SLUG)
    if order.time_in_force not in (TimeInForce.day, TimeInForce.gtc):
        raise errors.UnsupportedOrder(
            f"Tradier has no {order.time_in_force.value} duration", broker=SLUG
        )
    if order.extended_hours:
        raise errors.UnsupportedOrder(
            "extended-hours (pre/post) orders are not mapped yet", broker=SLUG
        )
    form = {
        "class": "equity",
        "symbol": order.symbol,
        "side": order.side.value,
        "quantity": plain(order.quantity),
        "type": order.order_type.value,
        "duration": order.time_in_force.value,
        "tag": to_tag(order.client_order_id),
    }
    if order.limit_price is not None:
        form["price"] = plain(order.limit_price)
    if order.stop_price is not None:
        form["stop"] = plain(order.stop_price)
    return form


def changes_to_form(changes: OrderChanges) -> dict[str, str]:
    """The ``PUT /v1/accounts/{id}/orders/{order_id}`` form: type, duration, price, stop.

    https://documentation.tradier.com/brokerage-api/trading/change-order has no quantity:
    a size change is refused here rather than silently dropped.
    """
    if changes.quantity is not None:
        raise errors.UnsupportedOrder(
            "Tradier cannot change an order's quantity; cancel and place a new order",
            broker=SLUG,
        )
    form: dict[str, str] = {}
    if changes.limit_price is not None:
        form["price"] = plain(changes.limit_price)
    if changes.stop_price is not None:
        form["stop"] = plain(changes.stop_price)
    if changes.time_in_force is not None:
        if changes.time_in_force not in (TimeInForce.day, TimeInForce.gtc):
            raise errors.UnsupportedOrder(
                f"Tradier has no {changes.time_in_force.value} duration", broker=SLUG
            )
        form["duration"] = changes.time_in_force.value
    return form


def ack_id(body: object) -> str:
    """``{"order": {"id": 257459, "status": "ok", "partner_id": "..."}}`` -> ``"257459"``."""
    if not isinstance(body, dict) or not isinstance(body.get("order"), dict):
        raise unknown("order acknowledgement", body)
    ack = body["order"]
    if ack.get("status") != "ok":
        raise unknown("order acknowledgement status", ack.get("status"))
    return order_id(ack.get("id"))


# --- account --------------------------------------------------------------------------------


def profile_accounts(body: object) -> list[dict[str, Any]]:
    """``GET /v1/user/profile``: ``profile.account`` is one object or a list."""
    if not isinstance(body, dict) or not isinstance(body.get("profile"), dict):
        raise unknown("profile payload", body)
    return items(body, "profile", "account")


_BUYING_POWER = {"margin": "stock_buying_power", "pdt": "stock_buying_power"}


def balances_from_wire(body: object, now: datetime) -> Balances:
    """``{"balances": {..., "account_type": "margin"|"cash"|"pdt", <type>: {...}}}``.

    https://docs.tradier.com/docs/balances: the sub-object named by the account type holds
    the buying power (``stock_buying_power`` for margin/pdt, ``cash_available`` for cash).
    """
    if not isinstance(body, dict) or not isinstance(body.get("balances"), dict):
        raise unknown("balances payload", body)
    balances = body["balances"]
    kind = balances.get("account_type")
    if kind not in ("margin", "cash", "pdt"):
        raise unknown("account_type", kind)
    detail = balances.get(kind)
    if not isinstance(detail, dict):
        raise unknown(f"balances.{kind}", detail)
    field = _BUYING_POWER.get(kind, "cash_available")
    return Balances(
        cash=dec(balances.get("total_cash"), "total_cash"),
        equity=dec(balances.get("total_equity"), "total_equity"),
        buying_power=dec(detail.get(field), field),
        currency="USD",
        as_of=now,
    )


def position_from_wire(item: dict[str, Any], quote: Quote | None, now: datetime) -> Position:
    """A position (cost_basis, date_acquired, id, quantity, symbol) priced with a quote.

    https://docs.tradier.com/docs/positions has no price: the current price comes from the
    quote (last, else the bid/ask midpoint); without a quote the cost basis stands in.
    """
    symbol = item.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise unknown("position symbol", symbol)
    quantity = dec(item.get("quantity"), "quantity")
    cost = dec(item.get("cost_basis"), "cost_basis")
    avg = (cost / quantity) if quantity else _ZERO
    price = quote.last if quote is not None else avg
    market_value = quantity * price
    return Position(
        symbol=symbol,
        asset_class=asset_class_of(symbol),
        quantity=quantity,
        avg_cost=abs(avg),
        current_price=price,
        market_value=market_value,
        unrealized_pl=market_value - cost,
        as_of=now,
    )


# History event types (get-account-history ``type`` parameter): trade, option, ach, wire,
# dividend, fee, tax, journal, check, transfer, adjustment, interest.
_HISTORY_TYPES = {
    "option": "option",
    "dividend": "dividend",
    "fee": "fee",
    "tax": "tax",
    "journal": "journal",
    "transfer": "transfer",
    "adjustment": "adjustment",
    "interest": "interest",
}
_CASH_MOVES = frozenset({"ach", "wire", "check"})


def transaction_from_event(index: int, item: dict[str, Any]) -> Transaction:
    """One ``history.event``: ``{"amount", "date", "type", <type or detail>: {...}}``.

    https://docs.tradier.com/docs/history: the detail object is named after the type
    (``trade``, ``option``, ``journal``...), except dividends, whose detail is
    ``adjustment``. Events carry no id; the position in the answer plus the date and amount
    stand in (stable for the same query).
    """
    kind = item.get("type")
    amount = dec(item.get("amount"), "amount")
    occurred = ts(item.get("date"), "date")
    detail: dict[str, Any] = {}
    for key in (kind, "adjustment"):
        value = item.get(str(key))
        if isinstance(value, dict):
            detail = value
            break
    description = str(detail.get("description") or kind)
    transaction_id = f"{occurred:%Y%m%d}-{index}-{amount}"
    if kind == "trade":
        quantity = dec(detail.get("quantity"), "trade.quantity")
        return Transaction(
            transaction_id=transaction_id,
            type=OrderSide.buy.value if quantity > 0 else OrderSide.sell.value,
            occurred_at=occurred,
            amount=amount,
            symbol=str(detail.get("symbol") or "") or None,
            quantity=abs(quantity),
            price=opt_dec(detail.get("price"), "trade.price"),
            description=description,
        )
    if kind in _CASH_MOVES:
        mapped = "deposit" if amount >= 0 else "withdrawal"
    elif isinstance(kind, str) and kind in _HISTORY_TYPES:
        mapped = _HISTORY_TYPES[kind]
    else:
        raise unknown("history event type", kind)
    symbol = detail.get("symbol")
    return Transaction(
        transaction_id=transaction_id,
        type=mapped,
        occurred_at=occurred,
        amount=amount,
        symbol=symbol if isinstance(symbol, str) and symbol else None,
        quantity=opt_dec(detail.get("quantity"), "quantity"),
        description=description,
    )


# --- quotes ---------------------------------------------------------------------------------


def unmatched_symbols(body: object) -> set[str]:
    """``{"quotes": {"unmatched_symbols": {"symbol": "X" | ["X", ...]}}}``."""
    if not isinstance(body, dict) or not isinstance(body.get("quotes"), dict):
        return set()
    found = body["quotes"].get("unmatched_symbols")
    if not isinstance(found, dict):
        return set()
    symbols = found.get("symbol")
    if isinstance(symbols, str):
        return {symbols}
    if isinstance(symbols, list):
        return {s for s in symbols if isinstance(s, str)}
    return set()


def quotes_from_wire(body: object, symbols: list[str]) -> dict[str, Quote]:
    """``GET /v1/markets/quotes``: bid, ask, last (JSON numbers, ``null`` when absent) and
    ``bid_date``/``ask_date``/``trade_date`` in epoch ms (https://docs.tradier.com/docs/quotes).
    """
    wanted = set(symbols)
    result: dict[str, Quote] = {}
    for item in items(body, "quotes", "quote"):
        symbol = item.get("symbol")
        if not isinstance(symbol, str) or symbol not in wanted:
            continue
        bid = opt_dec(item.get("bid"), "bid")
        ask = opt_dec(item.get("ask"), "ask")
        if bid is None or ask is None:
            continue  # no two-sided market: no quote rather than an invented one
        last = opt_dec(item.get("last"), "last")
        stamps = [
            epoch_ms(item[key], key)
            for key in ("bid_date", "ask_date", "trade_date")
            if item.get(key)
        ]
        if not stamps:
            raise unknown("quote dates", symbol)
        result[symbol] = Quote(
            symbol=symbol,
            bid=bid,
            ask=ask,
            last=last if last is not None else (bid + ask) / 2,
            as_of=max(stamps),
        )
    return result


# --- account streaming ----------------------------------------------------------------------

STREAM_EVENTS = frozenset({"order", "heartbeat"})


def stream_event(message: object) -> dict[str, Any]:
    """One account-streaming message; ``event`` is ``order`` or ``heartbeat``.

    https://docs.tradier.com/docs/account-streaming-responses
    """
    if not isinstance(message, dict):
        raise unknown("stream message", type(message).__name__)
    if message.get("event") not in STREAM_EVENTS:
        raise unknown("stream event", message.get("event"))
    return message


def fill_from_event(event: dict[str, Any], order: BrokerOrder) -> tuple[Fill, ...]:
    """A fill when the event reports one (``last_fill_quantity`` > 0), priced from the order.

    Stream events carry no fill price; the REST order's average price is used when the whole
    quantity so far was this fill, else the average move it implies is not derivable and the
    order's average stands in. Fills are informational: status and quantities drive state.
    """
    quantity = opt_dec(event.get("last_fill_quantity"), "last_fill_quantity") or _ZERO
    if quantity <= _ZERO or order.avg_fill_price is None:
        return ()
    executed = opt_dec(event.get("exec_quantity"), "exec_quantity") or order.filled_quantity
    return (
        Fill(
            fill_id=f"{order.broker_order_id}:{plain(executed)}",
            quantity=quantity,
            price=order.avg_fill_price,
            occurred_at=order.updated_at,
        ),
    )


# --- errors ---------------------------------------------------------------------------------


def error_messages(body: object) -> list[str] | None:
    """``{"errors": {"error": "..." | [...]}}`` -> the messages, else None."""
    if not isinstance(body, dict) or "errors" not in body:
        return None
    container = body["errors"]
    found = container.get("error") if isinstance(container, dict) else container
    if isinstance(found, str):
        return [found]
    if isinstance(found, list):
        return [str(m) for m in found]
    return [str(found)]


def fault(body: object) -> tuple[str, str] | None:
    """An API-gateway fault: ``(faultstring, detail.errorcode)``."""
    if not isinstance(body, dict) or not isinstance(body.get("fault"), dict):
        return None
    found = body["fault"]
    detail = found.get("detail")
    code = detail.get("errorcode") if isinstance(detail, dict) else None
    return str(found.get("faultstring") or "fault"), str(code or "")


_INSUFFICIENT = frozenset(
    {
        "InitialMargin",
        "MaintenanceMargin",
        "TotalInitialMargin",
        "DayTradingBuyingPowerExceeded",
        "LongPositionCrossZero",
        "ShortPositionCrossZero",
        "UnexpectedSellOrder",
    }
)
_UNSUPPORTED = frozenset(
    {
        "MarketOrderIsGtc",
        "ShortOrderIsGtc",
        "IncorrectOrderQuantity",
        "IncorrectTimeInForce",
        "TradingDeniedForSecurity",
        "AssetTradingNotConfiguredForAccount",
        "ShortStockTradingDeniedForAccount",
        "ShortTradingDeniedForSecurity",
        "SellShortOrderLastPriceBelow5",
        "OpeningOrdersForOTCBBNotAccepted",
        "LimitOrderRequiredOutsideMarketHours",
        "LimitOrderRequiredDueToPriceVolatility",
    }
)
_MARKET_CLOSED = frozenset({"PreMarketTradingUnavailable"})
FINALIZED = "order already in finalized state"
UNAUTHORIZED_ACCOUNT = "Unauthorized Account"


def classify_messages(messages: list[str], method: str) -> errors.BrokerError:
    """An ``errors`` payload into the error tree. Codes per the table of
    https://docs.tradier.com/docs/error-responses; texts as Tradier sends them."""
    reason = "; ".join(m.strip() for m in messages if m.strip()) or "rejected by Tradier"
    words = {m.strip().rstrip(".") for m in messages}
    text = reason.lower()
    if words & _INSUFFICIENT:
        return errors.InsufficientFunds(reason, broker=SLUG)
    if FINALIZED in text and method in ("PUT", "DELETE"):
        return errors.OrderNotModifiable(reason, broker=SLUG)
    if "SecurityUndefined" in words or "undefined symbol" in text:
        return errors.UnknownSymbol(reason, broker=SLUG)
    if words & _MARKET_CLOSED or "market no longer available" in text:
        return errors.MarketClosed(reason, broker=SLUG)
    if words & _UNSUPPORTED:
        return errors.UnsupportedOrder(reason, broker=SLUG)
    return errors.Rejected(reason, broker=SLUG)


def classify(response: httpx.Response, method: str) -> errors.BrokerError | None:
    """Tradier's 4xx answers (429 and 5xx are fixed in app.brokers.http).

    https://docs.tradier.com/docs/error-responses: 400 carries a message; 401 is
    authentication and entitlement. An order id the account does not know is answered with
    ``Unauthorized Account: <account>`` (QuantConnect's recorded answer to cancelling an
    unknown id): on an order path that means "no such order", not a bad token.
    """
    status = response.status_code
    text = response.text.strip()
    try:
        body: object = response.json()
    except ValueError:
        body = None
    found = fault(body)
    messages = error_messages(body)
    order_path = "/orders/" in response.request.url.path
    if text.startswith(UNAUTHORIZED_ACCOUNT) and order_path:
        return errors.OrderNotFound(text, broker=SLUG)
    if status in (401, 403):
        reason = found[0] if found else (text or "unauthorized")
        return errors.AuthenticationFailed(reason, broker=SLUG)
    if found is not None and "access_token" in found[1]:
        return errors.AuthenticationFailed(found[0], broker=SLUG)
    if status == 404:
        return errors.OrderNotFound(text or "not found", broker=SLUG)
    if messages is not None:
        return classify_messages(messages, method)
    if text.startswith(UNAUTHORIZED_ACCOUNT):
        return errors.AuthenticationFailed(text, broker=SLUG)
    return errors.Rejected(found[0] if found else (text or f"HTTP {status}"), broker=SLUG)


def retry_after(response: httpx.Response) -> float | None:
    """Seconds until the rate window resets, from ``X-Ratelimit-Expiry`` (epoch ms).

    https://docs.tradier.com/docs/rate-limiting documents the X-Ratelimit-* headers.
    """
    raw = response.headers.get("X-Ratelimit-Expiry")
    if not raw:
        return None
    try:
        expiry = int(raw) / 1000
    except ValueError:
        return None
    return max(0.0, expiry - time.time())
