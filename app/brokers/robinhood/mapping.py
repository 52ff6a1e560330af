"""Robinhood Crypto Trading API wire format <-> normalized models. Strict: unknown values raise.

Wire reference: https://docs.robinhood.com/crypto/trading/ (Redoc, "Trading API 1.0.0").
The docs' response samples type some amounts as JSON numbers (``average_price``,
``filled_asset_quantity``, ``total_quantity``, the best bid/ask prices) and others as strings
(``buying_power``, execution prices); bodies are parsed with ``parse_float=Decimal`` and
both shapes are accepted, so no binary float ever appears.

Client order ids: Robinhood requires a UUID (``client_order_id`` "string <uuid>"; the docs'
error example is "Must be a valid UUID."). Ours are ``"bg"`` + 32 hex digits, which is a
UUID's hex form, so the mapping is exact both ways: ``bg<hex>`` <-> ``UUID(hex)``. Any other
id (tests use shorter ones) is sent as a name-based UUID (uuid5), found again the same way.
"""

from __future__ import annotations

import re
import uuid
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

SLUG = "robinhood"
WIRE = WireReader(SLUG)  # the shared wire readers (app/brokers/wire.py), for this broker
unknown, dec, opt_dec, ts = WIRE.unknown, WIRE.decimal, WIRE.opt_decimal, WIRE.timestamp
_ZERO = Decimal(0)
_OUR_ID = re.compile(r"^bg[0-9a-f]{32}$")
_NAMESPACE = uuid.UUID("5b0c3f4e-8d4a-4f57-9a51-6b0a0c6f2d11")  # our uuid5 namespace

# Order ``state`` (docs: "Get Crypto Orders", query enum open, canceled, partially_filled,
# filled, failed). ``open`` is accepted or partially filled depending on what filled.
_STATES: dict[str, OrderStatus | None] = {
    "open": None,
    "partially_filled": OrderStatus.partially_filled,
    "filled": OrderStatus.filled,
    "canceled": OrderStatus.canceled,
    "failed": None,  # rejected when nothing filled; see order_status()
}
OPEN_STATES = frozenset({"open", "partially_filled"})

# Order ``type`` (docs enum limit, market, stop_limit, stop_loss) and its config object.
_TYPES = {
    "market": OrderType.market,
    "limit": OrderType.limit,
    "stop_loss": OrderType.stop,
    "stop_limit": OrderType.stop_limit,
}
_WIRE_TYPES = {v: k for k, v in _TYPES.items()}
# ``time_in_force`` inside the order configs: the docs show "gtc"; "gfd" (good for day) is
# in the community client's schema (Jayson-Fong/hood hood/schema/trading.py). Others
# ("gfw", "gfm") have no equivalent here and raise.
_TIF = {"gtc": TimeInForce.gtc, "gfd": TimeInForce.day}
_SIDES = {"buy": OrderSide.buy, "sell": OrderSide.sell}
ACCOUNT_STATUSES = frozenset({"active", "deactivated", "sell_only"})


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def client_order_id_to_wire(client_order_id: str) -> str:
    """Our client order id as the UUID Robinhood requires (see the module docstring)."""
    if _OUR_ID.match(client_order_id):
        return str(uuid.UUID(hex=client_order_id[2:]))
    return str(uuid.uuid5(_NAMESPACE, client_order_id))


def client_order_id_from_wire(value: object) -> str | None:
    """The inverse of ``client_order_id_to_wire`` for our ids: ``bg`` + the UUID's hex."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return "bg" + uuid.UUID(value).hex
    except ValueError:
        raise unknown("client_order_id", value) from None


def asset_code(symbol: str) -> str:
    """``BTC-USD`` -> ``BTC`` (holdings are keyed by asset code)."""
    return symbol.split("-", 1)[0]


def symbol_for_asset(code: str) -> str:
    """Holdings name the asset; every pair this API trades is quoted in USD ("Only USD
    symbols are accepted", docs: Get Estimated Price)."""
    return f"{code}-USD"


def _config(body: dict[str, Any], wire_type: str) -> dict[str, Any]:
    config = body.get(f"{wire_type}_order_config")
    if not isinstance(config, dict):
        raise unknown(f"{wire_type}_order_config", config)
    return config


def order_status(raw: object, quantity: Decimal, filled: Decimal) -> OrderStatus:
    mapped = WIRE.lookup(_STATES, raw, "order state")
    if mapped is not None:
        return mapped
    if raw == "failed":
        # A failed order that filled in part ended with the rest unfilled: canceled.
        return OrderStatus.canceled if filled > _ZERO else OrderStatus.rejected
    return OrderStatus.partially_filled if filled > _ZERO else OrderStatus.accepted


def order_from_wire(body: object) -> BrokerOrder:
    """A Robinhood order object into a ``BrokerOrder``; UnknownBrokerValue when it is not one."""
    if not isinstance(body, dict):
        raise unknown("order payload", type(body).__name__)
    wire_type = body.get("type")
    order_type = _TYPES.get(str(wire_type))
    if order_type is None:
        raise unknown("order type", wire_type)
    config = _config(body, str(wire_type))
    filled = opt_dec(body.get("filled_asset_quantity"), "filled_asset_quantity") or _ZERO
    quantity = opt_dec(config.get("asset_quantity"), "asset_quantity")
    notional = opt_dec(config.get("quote_amount"), "quote_amount")
    if quantity is None:
        if notional is None:
            raise unknown("asset_quantity", config.get("asset_quantity"))
        # A quote_amount order: its size in coins is what filled, as Robinhood reports it
        # (``filled_asset_quantity``, ``average_price``), 0 until it fills.
        quantity = filled
    if order_type is OrderType.market:
        # Market configs carry no time_in_force; a market order works until it fills.
        tif = TimeInForce.gtc
    else:
        tif_raw = config.get("time_in_force")
        found_tif = _TIF.get(str(tif_raw))
        if found_tif is None:
            raise unknown("time_in_force", tif_raw)
        tif = found_tif
    side = _SIDES.get(str(body.get("side")))
    if side is None:
        raise unknown("side", body.get("side"))
    order_id = body.get("id")
    if not isinstance(order_id, str) or not order_id:
        raise unknown("order id", order_id)
    status = order_status(body.get("state"), quantity, filled)
    created = ts(body.get("created_at"), "created_at")
    updated_raw = body.get("updated_at")
    average = opt_dec(body.get("average_price"), "average_price")
    return BrokerOrder(
        broker_order_id=order_id,
        client_order_id=client_order_id_from_wire(body.get("client_order_id")),
        symbol=str(body.get("symbol")),
        side=side,
        quantity=quantity,
        filled_quantity=filled,
        avg_fill_price=average if filled > _ZERO else None,
        order_type=order_type,
        time_in_force=tif,
        status=status,
        limit_price=opt_dec(config.get("limit_price"), "limit_price"),
        stop_price=opt_dec(config.get("stop_price"), "stop_price"),
        created_at=created,
        updated_at=ts(updated_raw, "updated_at") if updated_raw else created,
        reject_reason="the order failed at Robinhood" if status is OrderStatus.rejected else None,
        notional=notional,
    )


def fills_from_wire(body: object) -> list[Fill]:
    """An order's ``executions`` as fills (ids are derived: executions carry none)."""
    if not isinstance(body, dict):
        raise unknown("order payload", type(body).__name__)
    executions = body.get("executions") or []
    if not isinstance(executions, list):
        raise unknown("executions", type(executions).__name__)
    result = []
    for index, item in enumerate(executions):
        if not isinstance(item, dict):
            raise unknown("execution", type(item).__name__)
        result.append(
            Fill(
                fill_id=f"{body.get('id')}:{index}",
                quantity=dec(item.get("quantity"), "execution quantity"),
                price=dec(item.get("effective_price"), "effective_price"),
                occurred_at=ts(item.get("timestamp"), "execution timestamp"),
            )
        )
    return result


def order_to_wire(order: OrderRequest) -> dict[str, Any]:
    """The ``POST /api/v1/crypto/trading/orders/`` body: the type's config object only.

    Decimals go out as strings (the docs' own example sends ``"asset_quantity": "0.1"``).
    Raises ``UnsupportedOrder`` for what the API cannot express.
    """
    if order.time_in_force is not TimeInForce.gtc:
        raise errors.UnsupportedOrder(
            "Robinhood crypto orders are good until canceled (time_in_force gtc)", broker=SLUG
        )
    if order.extended_hours:
        raise errors.UnsupportedOrder("crypto trades around the clock; no extended hours")
    wire_type = _WIRE_TYPES[order.order_type]
    config: dict[str, str]
    if order.notional is not None:
        # A dollar amount is ``quote_amount`` of a limit, stop-loss or stop-limit config; the
        # market config takes ``asset_quantity`` only ("Place New Crypto Order"; hood:
        # "Cannot specify quote amount for market orders").
        if order.order_type is OrderType.market:
            raise errors.NotSupported(
                "Robinhood takes a dollar amount (quote_amount) on limit and stop orders, "
                "not on market orders",
                broker=SLUG,
            )
        if order.notional <= 0:
            raise errors.UnsupportedOrder("the amount must be positive", broker=SLUG)
        config = {"quote_amount": str(order.notional)}
    else:
        config = {"asset_quantity": str(order.quantity)}
    if order.order_type in (OrderType.limit, OrderType.stop_limit):
        if order.limit_price is None:
            raise errors.UnsupportedOrder("a limit order needs a limit price", broker=SLUG)
        config["limit_price"] = str(order.limit_price)
    if order.order_type in (OrderType.stop, OrderType.stop_limit):
        if order.stop_price is None:
            raise errors.UnsupportedOrder("a stop order needs a stop price", broker=SLUG)
        config["stop_price"] = str(order.stop_price)
    if order.order_type is not OrderType.market:
        config["time_in_force"] = "gtc"
    return {
        "client_order_id": client_order_id_to_wire(order.client_order_id),
        "side": order.side.value,
        "type": wire_type,
        "symbol": order.symbol,
        f"{wire_type}_order_config": config,
    }


def account_from_wire(body: object) -> dict[str, Any]:
    """``GET /api/v1/crypto/trading/accounts/``: one object for the key's account."""
    if not isinstance(body, dict) or not isinstance(body.get("account_number"), str):
        raise unknown("account payload", type(body).__name__)
    if body.get("status") not in ACCOUNT_STATUSES:
        raise unknown("account status", body.get("status"))
    return body


def balances_from_account(body: dict[str, Any], holdings_value: Decimal, now: datetime) -> Balances:
    """The crypto account reports buying power only: that is its cash; equity adds the
    holdings at the current mid price."""
    cash = dec(body.get("buying_power"), "buying_power")
    return Balances(
        cash=cash,
        equity=cash + holdings_value,
        buying_power=cash,
        currency=str(body.get("buying_power_currency") or "USD"),
        as_of=now,
    )


def holding_quantity(body: object) -> tuple[str, Decimal]:
    """One holding: (asset code, total quantity)."""
    if not isinstance(body, dict) or not isinstance(body.get("asset_code"), str):
        raise unknown("holding payload", type(body).__name__)
    return body["asset_code"], dec(body.get("total_quantity"), "total_quantity")


def position(
    symbol: str, quantity: Decimal, avg_cost: Decimal, price: Decimal, now: datetime
) -> Position:
    market_value = quantity * price
    return Position(
        symbol=symbol,
        asset_class=AssetClass.crypto,
        quantity=quantity,
        avg_cost=avg_cost,
        current_price=price,
        market_value=market_value,
        unrealized_pl=market_value - quantity * avg_cost,
        as_of=now,
    )


def quote_from_wire(body: object) -> Quote:
    """One best bid/ask result: the spread-inclusive bid and ask; ``price`` is the mid."""
    if not isinstance(body, dict) or not isinstance(body.get("symbol"), str):
        raise unknown("best bid/ask payload", type(body).__name__)
    return Quote(
        symbol=body["symbol"],
        bid=dec(body.get("bid_inclusive_of_sell_spread"), "bid_inclusive_of_sell_spread"),
        ask=dec(body.get("ask_inclusive_of_buy_spread"), "ask_inclusive_of_buy_spread"),
        last=dec(body.get("price"), "price"),
        as_of=ts(body.get("timestamp"), "timestamp"),
    )


def trades_from_order(body: object) -> list[Transaction]:
    """An order's executions as buy/sell transactions (the API has no activity endpoint)."""
    order = order_from_wire(body)
    result = []
    for fill in fills_from_wire(body):
        gross = fill.quantity * fill.price
        result.append(
            Transaction(
                transaction_id=fill.fill_id,
                type=order.side.value,
                occurred_at=fill.occurred_at,
                amount=-gross if order.side is OrderSide.buy else gross,
                symbol=order.symbol,
                quantity=fill.quantity,
                price=fill.price,
                description=f"{order.order_type.value} {order.side.value} {order.broker_order_id}",
            )
        )
    return result


def error_body(response: httpx.Response) -> tuple[str | None, str, str | None]:
    """``{"type", "errors": [{"detail", "attr"}]}`` (docs: Error Responses) as (type, the
    details joined, the first attr); tolerant of the plain-text bodies some answers carry."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return None, text or response.reason_phrase or f"HTTP {response.status_code}", None
    if not isinstance(body, dict):
        return None, f"HTTP {response.status_code}", None
    kind = body.get("type") if isinstance(body.get("type"), str) else None
    details: list[str] = []
    attr: str | None = None
    for item in body.get("errors") or []:
        if isinstance(item, dict):
            if isinstance(item.get("detail"), str):
                details.append(item["detail"])
            if attr is None and isinstance(item.get("attr"), str):
                attr = item["attr"]
    return kind, "; ".join(details) or f"HTTP {response.status_code}", attr


def classify(response: httpx.Response, method: str) -> errors.BrokerError | None:
    """Robinhood's 4xx answers into the error tree (429 and 5xx are fixed in app.brokers.http).

    400 is ``validation_error`` (``attr`` names the field); other 4xx are ``client_error``.
    """
    status = response.status_code
    _kind, message, attr = error_body(response)
    text = message.lower()
    if status in (401, 403):
        return errors.AuthenticationFailed(message, broker=SLUG)
    if status == 404:
        return errors.OrderNotFound(message, broker=SLUG)
    if status == 400:
        if method == "POST" and _request_path(response).endswith("/cancel/"):
            return errors.OrderNotModifiable(message, broker=SLUG)
        if "insufficient" in text or "buying power" in text:
            return errors.InsufficientFunds(message, broker=SLUG)
        if attr == "symbol":
            return errors.UnknownSymbol(message, broker=SLUG)
        if attr == "client_order_id":
            return DuplicateClientOrderId(message, broker=SLUG)
        return errors.Rejected(message, broker=SLUG)
    return None


def _request_path(response: httpx.Response) -> str:
    try:
        return response.request.url.path
    except RuntimeError:  # a response built without its request (tests)
        return ""


class DuplicateClientOrderId(errors.Rejected):
    """A 400 on ``client_order_id``: the id is malformed or already used (idempotency)."""
