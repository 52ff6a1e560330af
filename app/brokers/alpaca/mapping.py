"""Alpaca wire format <-> normalized models. Strict: unknown values raise, never guess.

Alpaca sends every quantity and price as a JSON string (spec schemas ``Order``, ``Account``,
``Position``), which is parsed straight into ``Decimal``. Market data sends JSON numbers;
those responses are parsed with ``parse_float=Decimal`` so no binary float ever appears.

Wire reference: the Trading API OpenAPI spec (https://docs.alpaca.markets/openapi/trading-api.json,
copy in ../shared/specs/alpaca-trading-api.json) and https://docs.alpaca.markets/docs/orders-at-alpaca.
"""

from __future__ import annotations

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

SLUG = "alpaca"
WIRE = WireReader(SLUG)  # the shared wire readers (app/brokers/wire.py), for this broker
unknown, dec, opt_dec, ts = WIRE.unknown, WIRE.decimal, WIRE.opt_decimal, WIRE.timestamp
_ZERO = Decimal(0)

# Every value of the spec's OrderStatus enum. Statuses that leave the order working map to
# accepted / partially_filled depending on what has filled (see ``_OPEN``).
# https://docs.alpaca.markets/docs/orders-at-alpaca#order-lifecycle
_STATUS: dict[str, OrderStatus | None] = {
    "new": None,  # routed, working
    "partially_filled": OrderStatus.partially_filled,
    "filled": OrderStatus.filled,
    "done_for_day": None,  # done for today, works again next session (GTC)
    "canceled": OrderStatus.canceled,
    "expired": OrderStatus.expired,
    "replaced": OrderStatus.replaced,
    "pending_cancel": OrderStatus.pending_cancel,
    "pending_replace": OrderStatus.pending_replace,
    "accepted": None,  # received by Alpaca, not yet routed; still a live order
    "pending_new": OrderStatus.submitted,  # routed, not yet acknowledged by the venue
    "accepted_for_bidding": None,  # auction orders (IPO) awaiting the auction
    "stopped": None,  # a trade is guaranteed but has not happened yet
    "rejected": OrderStatus.rejected,
    "suspended": None,  # not eligible for trading right now, still open
    "calculated": None,  # completed for the day, settlement pending: see _status()
    "held": None,  # bracket legs held until the parent fills
}

_ORDER_TYPES = {
    "market": OrderType.market,
    "limit": OrderType.limit,
    "stop": OrderType.stop,
    "stop_limit": OrderType.stop_limit,
}
_TIF = {
    "day": TimeInForce.day,
    "gtc": TimeInForce.gtc,
    "ioc": TimeInForce.ioc,
    "fok": TimeInForce.fok,
}
_ASSET_CLASSES = {
    "us_equity": AssetClass.equity,
    "us_option": AssetClass.option,
    "crypto": AssetClass.crypto,
}
_SIDES = {"buy": OrderSide.buy, "sell": OrderSide.sell}


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def to_alpaca_symbol(symbol: str) -> str:
    """Our crypto pairs are ``BTC-USD``; Alpaca's are ``BTC/USD``."""
    return symbol.replace("-", "/")


def from_alpaca_symbol(symbol: str, asset_class: AssetClass | None = None) -> str:
    """``BTC/USD`` -> ``BTC-USD``; positions use ``BTCUSD`` for crypto.

    https://docs.alpaca.markets/docs/crypto-trading ("BTC/USD" in orders, "BTCUSD" in positions)
    """
    if "/" in symbol:
        return symbol.replace("/", "-")
    if asset_class is AssetClass.crypto:
        for quote_ccy in ("USDT", "USDC", "USD", "BTC"):
            if symbol.endswith(quote_ccy) and len(symbol) > len(quote_ccy):
                return f"{symbol[: -len(quote_ccy)]}-{quote_ccy}"
    return symbol


def order_status(raw: object, quantity: Decimal, filled: Decimal) -> OrderStatus:
    mapped = WIRE.lookup(_STATUS, raw, "order status")
    if mapped is not None:
        return mapped
    if raw == "calculated" and filled >= quantity > _ZERO:
        return OrderStatus.filled
    return OrderStatus.partially_filled if filled > _ZERO else OrderStatus.accepted


def order_from_wire(body: object) -> BrokerOrder:
    """An Alpaca ``Order`` object into a ``BrokerOrder``; UnknownBrokerValue when it is not one."""
    if not isinstance(body, dict):
        raise unknown("order payload", type(body).__name__)
    raw_type = body.get("type", body.get("order_type"))
    order_type = _ORDER_TYPES.get(str(raw_type))
    if order_type is None:
        raise unknown("order type", raw_type)
    tif = _TIF.get(str(body.get("time_in_force")))
    if tif is None:
        raise unknown("time_in_force", body.get("time_in_force"))
    side = _SIDES.get(str(body.get("side")))
    if side is None:
        raise unknown("side", body.get("side"))
    qty = opt_dec(body.get("qty"), "qty")
    if qty is None:
        # Notional orders have no qty until filled; the gateway never sends them.
        raise unknown("qty", body.get("qty"))
    filled = opt_dec(body.get("filled_qty"), "filled_qty") or _ZERO
    asset_class = _ASSET_CLASSES.get(str(body.get("asset_class")))
    created = ts(body.get("created_at"), "created_at")
    updated_raw = body.get("updated_at")
    updated = ts(updated_raw, "updated_at") if updated_raw else created
    status = order_status(body.get("status"), qty, filled)
    order_id = body.get("id")
    if not isinstance(order_id, str) or not order_id:
        raise unknown("order id", order_id)
    client_order_id = body.get("client_order_id")
    return BrokerOrder(
        broker_order_id=order_id,
        client_order_id=client_order_id if isinstance(client_order_id, str) else None,
        symbol=from_alpaca_symbol(str(body.get("symbol")), asset_class),
        side=side,
        quantity=qty,
        filled_quantity=filled,
        avg_fill_price=opt_dec(body.get("filled_avg_price"), "filled_avg_price"),
        order_type=order_type,
        time_in_force=tif,
        status=status,
        limit_price=opt_dec(body.get("limit_price"), "limit_price"),
        stop_price=opt_dec(body.get("stop_price"), "stop_price"),
        created_at=created,
        updated_at=updated,
        reject_reason="rejected by the broker" if status is OrderStatus.rejected else None,
        replaced_by=_opt_str(body.get("replaced_by")),
        replaces=_opt_str(body.get("replaces")),
    )


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _price(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def order_to_wire(order: OrderRequest) -> dict[str, Any]:
    """The ``POST /v2/orders`` body. Decimals go out as strings, as the spec declares them."""
    body: dict[str, Any] = {
        "symbol": to_alpaca_symbol(order.symbol),
        "qty": str(order.quantity),
        "side": order.side.value,
        "type": order.order_type.value,
        "time_in_force": order.time_in_force.value,
        "client_order_id": order.client_order_id,
    }
    if order.limit_price is not None:
        body["limit_price"] = str(order.limit_price)
    if order.stop_price is not None:
        body["stop_price"] = str(order.stop_price)
    if order.extended_hours:
        body["extended_hours"] = True
    return body


def changes_to_wire(changes: OrderChanges) -> dict[str, Any]:
    """The ``PATCH /v2/orders/{id}`` body: only the attributes that change."""
    body: dict[str, Any] = {}
    if changes.quantity is not None:
        body["qty"] = str(changes.quantity)
    if changes.limit_price is not None:
        body["limit_price"] = _price(changes.limit_price)
    if changes.stop_price is not None:
        body["stop_price"] = _price(changes.stop_price)
    if changes.time_in_force is not None:
        body["time_in_force"] = changes.time_in_force.value
    return body


def balances_from_account(body: object, now: datetime) -> Balances:
    if not isinstance(body, dict):
        raise unknown("account payload", type(body).__name__)
    return Balances(
        cash=dec(body.get("cash"), "cash"),
        equity=dec(body.get("equity"), "equity"),
        buying_power=dec(body.get("buying_power"), "buying_power"),
        currency=str(body.get("currency") or "USD"),
        as_of=now,
    )


def position_from_wire(body: object, now: datetime) -> Position:
    if not isinstance(body, dict):
        raise unknown("position payload", type(body).__name__)
    asset_class = _ASSET_CLASSES.get(str(body.get("asset_class")))
    if asset_class is None:
        raise unknown("asset_class", body.get("asset_class"))
    qty = dec(body.get("qty"), "qty")
    side = body.get("side")
    if side not in ("long", "short"):
        raise unknown("position side", side)
    if side == "short" and qty > _ZERO:
        qty = -qty  # short positions report qty negative; be robust if one does not
    return Position(
        symbol=from_alpaca_symbol(str(body.get("symbol")), asset_class),
        asset_class=asset_class,
        quantity=qty,
        avg_cost=dec(body.get("avg_entry_price"), "avg_entry_price"),
        current_price=dec(body.get("current_price"), "current_price"),
        market_value=dec(body.get("market_value"), "market_value"),
        unrealized_pl=dec(body.get("unrealized_pl"), "unrealized_pl"),
        as_of=now,
    )


# Non-trade activity types (spec ``ActivityType``) into our transaction types.
_ACTIVITY_TYPES = {
    "CSD": "deposit",
    "CSW": "withdrawal",
    "DIV": "dividend",
    "DIVCGL": "dividend",
    "DIVCGS": "dividend",
    "DIVNRA": "dividend",
    "DIVROC": "dividend",
    "DIVTXEX": "dividend",
    "INT": "interest",
    "FEE": "fee",
    "JNLC": "journal",
    "JNLS": "journal",
    "TRANS": "transfer",
}


def transaction_from_activity(body: object) -> Transaction | None:
    """One activity into a transaction; None for activity types we do not report."""
    if not isinstance(body, dict):
        raise unknown("activity payload", type(body).__name__)
    activity_type = body.get("activity_type")
    activity_id = str(body.get("id"))
    if activity_type == "FILL":
        side = _SIDES.get(str(body.get("side")).replace("sell_short", "sell"))
        if side is None:
            raise unknown("activity side", body.get("side"))
        qty = dec(body.get("qty"), "qty")
        price = dec(body.get("price"), "price")
        gross = qty * price
        return Transaction(
            transaction_id=activity_id,
            type=side.value,
            occurred_at=ts(body.get("transaction_time"), "transaction_time"),
            amount=-gross if side is OrderSide.buy else gross,
            symbol=from_alpaca_symbol(str(body.get("symbol"))),
            quantity=qty,
            price=price,
            description=f"{body.get('type', 'fill')} of order {body.get('order_id')}",
        )
    kind = _ACTIVITY_TYPES.get(str(activity_type))
    if kind is None:
        return None
    occurred = body.get("date") or body.get("created_at")
    if isinstance(occurred, str) and len(occurred) == 10:
        occurred += "T00:00:00Z"  # NTA ``date`` is a calendar date in the spec examples
    symbol = body.get("symbol")
    return Transaction(
        transaction_id=activity_id,
        type=kind,
        occurred_at=ts(occurred, "date"),
        amount=dec(body.get("net_amount"), "net_amount"),
        symbol=symbol if isinstance(symbol, str) and symbol else None,
        quantity=opt_dec(body.get("qty"), "qty"),
        description=str(body.get("description") or activity_type),
    )


def quotes_from_wire(
    quotes_body: object, trades_body: object, symbols: list[str]
) -> dict[str, Quote]:
    """``/v2/stocks/quotes/latest`` and ``/v2/stocks/trades/latest`` into quotes.

    https://docs.alpaca.markets/reference/stocklatestquotes: ``{"quotes": {"AAPL": {"ap",
    "bp", "t", ...}}}``; prices are JSON numbers (parsed as Decimal by the caller).
    """
    if not isinstance(quotes_body, dict) or not isinstance(trades_body, dict):
        raise unknown("market data payload", type(quotes_body).__name__)
    quotes = quotes_body.get("quotes") or {}
    trades = trades_body.get("trades") or {}
    if not isinstance(quotes, dict) or not isinstance(trades, dict):
        raise unknown("market data payload", "quotes")
    result: dict[str, Quote] = {}
    for symbol in symbols:
        wire = to_alpaca_symbol(symbol)
        quote = quotes.get(wire)
        if not isinstance(quote, dict):
            continue
        bid = dec(quote.get("bp"), "bp")
        ask = dec(quote.get("ap"), "ap")
        trade = trades.get(wire)
        last = dec(trade.get("p"), "p") if isinstance(trade, dict) else (bid + ask) / 2
        result[symbol] = Quote(
            symbol=symbol, bid=bid, ask=ask, last=last, as_of=ts(quote.get("t"), "t")
        )
    return result


# trade_updates events (https://docs.alpaca.markets/docs/websocket-streaming#order-updates).
# Each carries the full order; the order's own status decides our status. Events that do
# not change the order (a refused cancel or replace) still carry its current state.
TRADE_EVENTS = frozenset(
    {
        "new",
        "fill",
        "partial_fill",
        "canceled",
        "expired",
        "done_for_day",
        "replaced",
        "rejected",
        "pending_new",
        "stopped",
        "pending_cancel",
        "pending_replace",
        "calculated",
        "suspended",
        "order_replace_rejected",
        "order_cancel_rejected",
        "accepted",
        "restated",
        "held",
    }
)


def update_from_event(data: object, account_ref: str) -> OrderUpdate:
    """One ``trade_updates`` ``data`` object into an OrderUpdate."""
    if not isinstance(data, dict):
        raise unknown("trade update", type(data).__name__)
    event = data.get("event")
    if event not in TRADE_EVENTS:
        raise unknown("trade update event", event)
    order = order_from_wire(data.get("order"))
    raw_at = data.get("timestamp") or data.get("at")
    occurred = ts(raw_at) if raw_at else order.updated_at
    fills: tuple[Fill, ...] = ()
    if event in ("fill", "partial_fill"):
        fills = (
            Fill(
                fill_id=str(data.get("execution_id") or f"{order.broker_order_id}:{raw_at}"),
                quantity=dec(data.get("qty"), "qty"),
                price=dec(data.get("price"), "price"),
                occurred_at=occurred,
            ),
        )
    return OrderUpdate(account_ref=account_ref, order=order, occurred_at=occurred, fills=fills)


def error_body(response: httpx.Response) -> tuple[int | None, str]:
    """``{"code": 40310000, "message": "..."}`` (spec schema ``Error``), tolerant of others."""
    try:
        body = response.json()
    except ValueError:
        return None, response.reason_phrase or f"HTTP {response.status_code}"
    if not isinstance(body, dict):
        return None, f"HTTP {response.status_code}"
    code = body.get("code")
    message = body.get("message")
    return (
        int(code) if isinstance(code, int | float) else None,
        message if isinstance(message, str) and message else f"HTTP {response.status_code}",
    )


def classify(response: httpx.Response, method: str) -> errors.BrokerError | None:
    """Alpaca's 4xx answers into the error tree (429 and 5xx are fixed in app.brokers.http).

    Alpaca's codes are the HTTP status followed by five digits (40310000, 42210000, ...);
    the message carries the specifics. https://docs.alpaca.markets/docs/orders-at-alpaca
    and https://docs.alpaca.markets/reference/postorder (403: "buying power or shares is
    not sufficient", 422: "input parameters are not recognized").
    """
    status = response.status_code
    _code, message = error_body(response)
    text = message.lower()
    if status == 401:
        return errors.AuthenticationFailed(message, broker=SLUG)
    if status == 403:
        # 403 is also how Alpaca refuses an order for lack of funds or shares.
        if "insufficient" in text or "not sufficient" in text or "buying power" in text:
            return errors.InsufficientFunds(message, broker=SLUG)
        if "market" in text and "closed" in text:
            return errors.MarketClosed(message, broker=SLUG)
        if "not authorized" in text or "forbidden" in text or "unauthorized" in text:
            return errors.AuthenticationFailed(message, broker=SLUG)
        return errors.Rejected(message, broker=SLUG)
    if status == 404:
        if "asset" in text:
            return errors.UnknownSymbol(message, broker=SLUG)
        return errors.OrderNotFound(message, broker=SLUG)
    if status in (400, 422):
        if method in ("PATCH", "DELETE") and (
            "cancelable" in text or "replaceable" in text or "already in" in text or "state" in text
        ):
            return errors.OrderNotModifiable(message, broker=SLUG)
        if "asset" in text and ("not found" in text or "could not find" in text):
            return errors.UnknownSymbol(message, broker=SLUG)
        if "not tradable" in text or "fractional" in text or "not supported" in text:
            return errors.UnsupportedOrder(message, broker=SLUG)
        if "market" in text and ("closed" in text or "hours" in text):
            return errors.MarketClosed(message, broker=SLUG)
        if "insufficient" in text:
            return errors.InsufficientFunds(message, broker=SLUG)
        return errors.Rejected(message, broker=SLUG)
    return None


DUPLICATE_CLIENT_ORDER_ID = "client_order_id must be unique"
