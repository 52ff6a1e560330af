"""Webull OpenAPI wire format <-> normalized models. Strict: unknown values raise, never guess.

Wire reference: the official SDKs (PyPI ``webull-openapi-python-sdk`` 3.0.4 ``webull/trade/
request/v2|v3/*``, ``webull/trade/common/*``, ``samples/trade/trade_client_v3.py``;
webull-inc/webull-openapi-java-sdk ``trade/response/v3/*`` and ``trade/response/
NOrderItem.java``, serialized snake_case by its ``JsonSerializer``) and
https://developer.webull.com/apis/docs/trade-api/trade. Amounts are JSON strings (the Java
response beans type every amount ``String``). Options: ``options``.

Shapes:

* an order (detail, open orders, history) is a combo wrapper ``{"client_order_id",
  "combo_type", "orders": [item, ...]}``; a ``NORMAL`` combo has one item with
  ``client_order_id, order_id, symbol, side, status, order_type, instrument_type,
  total_quantity, filled_quantity, filled_price, limit_price, stop_price, time_in_force,
  support_trading_session, place_time, place_time_at, filled_time, filled_time_at``;
* place/replace/cancel answer ``{"client_order_id", "order_id"}``.

Webull finds orders by ``client_order_id`` (detail, cancel and replace all take it), so that
is our ``broker_order_id``. Our client order ids are ``"bg"`` + 32 hex digits; the wire id
is the 32 hex digits (the official sample uses ``uuid.uuid4().hex``; the reference allows
at most 40 characters, the official skill docs 32 alphanumerics), and ``"bg"`` is put back on
the way in.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx

from app.brokers import errors
from app.brokers.base import (
    AssetClass,
    Balances,
    BrokerOrder,
    OptionContract,
    OrderChanges,
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
from app.brokers.webull import options
from app.brokers.wire import WireReader

SLUG = "webull"
WIRE = WireReader(SLUG)  # the shared wire readers (app/brokers/wire.py), for this broker
unknown, dec, opt_dec = WIRE.unknown, WIRE.decimal, WIRE.opt_decimal
_ZERO = Decimal(0)

# ``webull/trade/common/order_status.py``: SUBMITTED, CANCELLED, FAILED, FILLED,
# PARTIAL_FILLED. SUBMITTED is working (partially filled when something filled).
_STATUS: dict[str, OrderStatus | None] = {
    "SUBMITTED": None,
    "PARTIAL_FILLED": OrderStatus.partially_filled,
    "FILLED": OrderStatus.filled,
    "CANCELLED": OrderStatus.canceled,
    "FAILED": None,  # rejected when nothing filled; see order_status()
}
OPEN_STATUSES = frozenset({"SUBMITTED", "PARTIAL_FILLED"})
# US stock order types (webull-openapi-skills references/api_reference.md "US Market").
_TYPES = {
    "MARKET": OrderType.market,
    "LIMIT": OrderType.limit,
    "STOP_LOSS": OrderType.stop,
    "STOP_LOSS_LIMIT": OrderType.stop_limit,
}
_WIRE_TYPES = {v: k for k, v in _TYPES.items()}
_TIF = {"DAY": TimeInForce.day, "GTC": TimeInForce.gtc, "IOC": TimeInForce.ioc}
_WIRE_TIF = {v: k for k, v in _TIF.items()}
# SHORT is a sell that opens a short position (``order_side.py``).
_SIDES = {"BUY": OrderSide.buy, "SELL": OrderSide.sell, "SHORT": OrderSide.sell}
_OUR_ID = re.compile(r"^bg[0-9a-f]{32}$")


def ts(value: object, field: str) -> datetime:
    """Epoch milliseconds (digits) or ISO 8601 (``yyyy-MM-ddTHH:mm:ss.SSSZ``) into UTC."""
    return WIRE.timestamp(value, field, epoch_ms=True)


def client_order_id_to_wire(client_order_id: str) -> str:
    return client_order_id[2:] if client_order_id.startswith("bg") else client_order_id


def client_order_id_from_wire(value: str) -> str:
    return "bg" + value


def order_status(raw: object, filled: Decimal) -> OrderStatus:
    mapped = WIRE.lookup(_STATUS, raw, "order status")
    if mapped is not None:
        return mapped
    if raw == "FAILED":
        return OrderStatus.canceled if filled > _ZERO else OrderStatus.rejected
    return OrderStatus.partially_filled if filled > _ZERO else OrderStatus.accepted


def order_item(body: object) -> dict[str, Any]:
    """The one order item of a NORMAL combo wrapper."""
    if not isinstance(body, dict):
        raise unknown("order payload", type(body).__name__)
    items = body.get("orders")
    if items is None:
        items = body.get("items")
    if not isinstance(items, list) or len(items) != 1 or not isinstance(items[0], dict):
        raise unknown("order items", type(items).__name__)
    combo = body.get("combo_type")
    if combo not in (None, "NORMAL"):
        raise unknown("combo_type", combo)
    item: dict[str, Any] = items[0]
    return item


def order_from_wire(body: object) -> BrokerOrder:
    """A combo wrapper (detail, open, history) into a ``BrokerOrder``: an equity order, a
    single-leg option order (``symbol`` the canonical OCC form) or a multi-leg one
    (``symbol`` the underlying, ``legs`` with their ratios), or an amount order."""
    item = order_item(body)
    assert isinstance(body, dict)
    wire_id = item.get("client_order_id") or body.get("client_order_id")
    if not isinstance(wire_id, str) or not wire_id:
        raise unknown("client_order_id", wire_id)
    order_type = _TYPES.get(str(item.get("order_type")))
    if order_type is None:
        raise unknown("order type", item.get("order_type"))
    tif = _TIF.get(str(item.get("time_in_force")))
    if tif is None:
        raise unknown("time_in_force", item.get("time_in_force"))
    side = _SIDES.get(str(item.get("side")))
    if side is None:
        raise unknown("side", item.get("side"))
    entrust = WIRE.lookup(_ENTRUST, item.get("entrust_type") or "QTY", "entrust_type")
    notional = None
    if entrust == "AMOUNT":
        notional = dec(item.get("total_cash_amount"), "total_cash_amount")
        quantity = opt_dec(item.get("total_quantity"), "total_quantity") or _ZERO
    else:
        quantity = dec(item.get("total_quantity", item.get("quantity")), "total_quantity")
    filled = opt_dec(item.get("filled_quantity"), "filled_quantity") or _ZERO
    status = order_status(item.get("status"), filled)
    placed = ts(item.get("place_time_at") or item.get("place_time"), "place_time")
    filled_at = item.get("filled_time_at") or item.get("filled_time")
    avg = opt_dec(item.get("filled_price"), "filled_price") if filled else None
    symbol = str(item.get("symbol"))
    position_effect: PositionEffect | None = None
    if item.get("side") == "SHORT":
        position_effect = PositionEffect.open
    legs: tuple[Any, ...] = ()
    price_effect: PriceEffect | None = None
    instrument = item.get("instrument_type")
    if instrument == "OPTION" or item.get("legs"):
        strategy = WIRE.lookup(
            {s: s for s in options.STRATEGIES}, item.get("option_strategy"), "option_strategy"
        )
        legs = options.legs_from_wire(item, quantity, filled, avg)
        if strategy == "SINGLE" and len(legs) == 1:
            symbol = legs[0].symbol
            legs = ()
            if item.get("position_intent"):
                _, position_effect = options.intent_from_wire(item.get("position_intent"))
        else:
            symbol = options.contract_from_wire(item["legs"][0]).underlying
            price_effect = PriceEffect.credit if side is OrderSide.sell else PriceEffect.debit
    elif instrument == "CRYPTO":
        symbol = crypto_symbol_from_wire(symbol)
    elif instrument not in (None, "EQUITY"):
        raise unknown("instrument_type", instrument)
    return BrokerOrder(
        broker_order_id=wire_id,
        client_order_id=client_order_id_from_wire(wire_id),
        symbol=symbol,
        side=side,
        quantity=quantity,
        filled_quantity=filled,
        avg_fill_price=avg,
        order_type=order_type,
        time_in_force=tif,
        status=status,
        limit_price=opt_dec(item.get("limit_price"), "limit_price"),
        stop_price=opt_dec(item.get("stop_price"), "stop_price"),
        created_at=placed,
        updated_at=ts(filled_at, "filled_time") if filled_at else placed,
        reject_reason="the order failed at Webull" if status is OrderStatus.rejected else None,
        position_effect=position_effect,
        legs=legs,
        price_effect=price_effect,
        notional=notional,
    )


def order_to_wire(order: OrderRequest) -> dict[str, Any]:
    """One entry of ``new_orders``: the docs' "Simple" stock order, a short sale (side
    ``SHORT``, ``webull/trade/common/order_side.py``), an amount order (``entrust_type``
    ``AMOUNT`` with ``total_cash_amount``, Java SDK ``request/v3/TradeOrderItem.java``), a
    crypto order (``instrument_type`` ``CRYPTO``, symbol ``BTCUSD``, 3.x sample "Crypto Order
    Example") or an option order (``options.option_order_to_wire``)."""
    if order.time_in_force not in _WIRE_TIF:
        raise errors.UnsupportedOrder(
            f"Webull takes time_in_force DAY, GTC or IOC, not {order.time_in_force.value}",
            broker=SLUG,
        )
    base: dict[str, Any] = {
        "client_order_id": client_order_id_to_wire(order.client_order_id),
        "order_type": _WIRE_TYPES[order.order_type],
        "time_in_force": _WIRE_TIF[order.time_in_force],
    }
    if order.limit_price is not None:
        base["limit_price"] = str(order.limit_price)
    if order.stop_price is not None:
        base["stop_price"] = str(order.stop_price)
    if order.is_multi_leg or is_option_symbol(order.symbol):
        if order.is_notional:
            raise errors.UnsupportedOrder("Webull option orders go by quantity", broker=SLUG)
        return options.option_order_to_wire(order, base)
    crypto = is_crypto_symbol(order.symbol)
    side = "BUY" if order.side is OrderSide.buy else "SELL"
    if order.side is OrderSide.sell and order.position_effect is PositionEffect.open:
        if crypto:
            raise errors.UnsupportedOrder("Webull does not short crypto", broker=SLUG)
        side = "SHORT"
    body: dict[str, Any] = {
        **base,
        "combo_type": "NORMAL",
        "symbol": crypto_symbol_to_wire(order.symbol) if crypto else order.symbol,
        "instrument_type": "CRYPTO" if crypto else "EQUITY",
        "market": "US",
        "side": side,
    }
    if not crypto:
        body["support_trading_session"] = "ALL" if order.extended_hours else "CORE"
    if order.is_notional:
        assert order.notional is not None
        if order.order_type is not OrderType.market:
            raise errors.UnsupportedOrder("Webull amount orders are market orders", broker=SLUG)
        body["entrust_type"] = "AMOUNT"
        body["total_cash_amount"] = str(order.notional)
    else:
        if not crypto and order.quantity != order.quantity.to_integral_value():
            raise errors.UnsupportedOrder(
                "Webull takes fractional shares by amount: send a notional instead",
                broker=SLUG,
            )
        body["entrust_type"] = "QTY"
        body["quantity"] = str(order.quantity)
    return body


CATEGORIES = ("US_EQUITY", "US_OPTION", "US_CRYPTO")


def category(entry: dict[str, Any]) -> str:
    """The ``category`` header of a placement: ``market + "_" + instrument_type`` of the
    order, or of its option legs (3.x ``add_custom_headers_from_order``)."""
    legs = entry.get("legs")
    source = legs[0] if isinstance(legs, list) and legs else entry
    return f"{source['market']}_{source['instrument_type']}"


_CRYPTO = re.compile(r"^([A-Z0-9]{2,10})-USD$")
_CRYPTO_WIRE = re.compile(r"^([A-Z0-9]{2,10})USD$")
_ENTRUST = {"QTY": "QTY", "AMOUNT": "AMOUNT"}


def is_crypto_symbol(symbol: str) -> bool:
    """The gateway's crypto form ``BTC-USD`` (Webull trades crypto against USD)."""
    return _CRYPTO.match(symbol) is not None


def crypto_symbol_to_wire(symbol: str) -> str:
    """``BTC-USD`` -> ``BTCUSD`` (the 3.x sample's crypto symbol)."""
    match = _CRYPTO.match(symbol)
    if match is None:
        raise errors.UnknownSymbol(f"{symbol} is not a crypto pair", broker=SLUG)
    return match[1] + "USD"


def crypto_symbol_from_wire(symbol: str) -> str:
    """``BTCUSD`` -> ``BTC-USD``."""
    match = _CRYPTO_WIRE.match(symbol)
    if match is None:
        raise unknown("crypto symbol", symbol)
    return f"{match[1]}-USD"


def changes_to_wire(wire_id: str, changes: OrderChanges) -> dict[str, Any]:
    """One entry of ``modify_orders``: the id and what changes."""
    body: dict[str, Any] = {"client_order_id": wire_id}
    if changes.quantity is not None:
        body["quantity"] = str(changes.quantity)
    if changes.limit_price is not None:
        body["limit_price"] = str(changes.limit_price)
    if changes.stop_price is not None:
        body["stop_price"] = str(changes.stop_price)
    if changes.time_in_force is not None:
        if changes.time_in_force not in _WIRE_TIF:
            raise errors.UnsupportedOrder("Webull takes DAY, GTC or IOC", broker=SLUG)
        body["time_in_force"] = _WIRE_TIF[changes.time_in_force]
    return body


def write_answer(body: object) -> str:
    """``{"client_order_id", "order_id"}`` (place, replace, cancel): the wire client id."""
    if not isinstance(body, dict) or not isinstance(body.get("client_order_id"), str):
        raise unknown("order answer", type(body).__name__)
    return str(body["client_order_id"])


def balances_from_wire(body: object, now: datetime) -> Balances:
    """``GET /trading/assets/balances/get``: totals and the per-currency assets (USD)."""
    if not isinstance(body, dict):
        raise unknown("balance payload", type(body).__name__)
    currency = str(body.get("total_asset_currency") or "USD")
    assets = body.get("account_currency_assets") or []
    if not isinstance(assets, list):
        raise unknown("account_currency_assets", type(assets).__name__)
    entry = next((a for a in assets if isinstance(a, dict) and a.get("currency") == currency), None)
    if entry is None:
        raise unknown("balance currency", currency)
    cash = dec(body.get("total_cash_balance"), "total_cash_balance")
    equity_raw = body.get("total_net_liquidation_value")
    equity = (
        dec(equity_raw, "total_net_liquidation_value")
        if equity_raw not in (None, "")
        else cash + dec(body.get("total_market_value") or "0", "total_market_value")
    )
    return Balances(
        cash=cash,
        equity=equity,
        buying_power=dec(entry.get("buying_power"), "buying_power"),
        currency=currency,
        as_of=now,
    )


_INSTRUMENT_TYPES = {
    "EQUITY": AssetClass.equity,
    "STOCK": AssetClass.equity,
    "ETF": AssetClass.equity,
}


def positions_from_wire(body: object, now: datetime) -> list[Position]:
    """One row of ``GET /trading/assets/positions/list``: an equity or crypto holding, or an
    option strategy (one position per leg, ``options.positions_from_wire``)."""
    if not isinstance(body, dict):
        raise unknown("position payload", type(body).__name__)
    instrument = body.get("instrument_type")
    if instrument == "OPTION" or body.get("legs"):
        return options.positions_from_wire(body, now)
    symbol = str(body.get("symbol"))
    if instrument == "CRYPTO":
        asset_class, symbol = AssetClass.crypto, crypto_symbol_from_wire(symbol)
    else:
        found = _INSTRUMENT_TYPES.get(str(instrument))
        if found is None:
            raise unknown("instrument_type", instrument)
        asset_class = found
    quantity = dec(body.get("quantity"), "quantity")
    price = dec(body.get("last_price"), "last_price")
    return [
        Position(
            symbol=symbol,
            asset_class=asset_class,
            quantity=quantity,
            avg_cost=dec(body.get("cost_price"), "cost_price"),
            current_price=price,
            market_value=opt_dec(body.get("market_value"), "market_value") or quantity * price,
            unrealized_pl=dec(body.get("unrealized_profit_loss"), "unrealized_profit_loss"),
            as_of=now,
        )
    ]


def preview_from_wire(body: object, order: OrderRequest) -> OrderPreview:
    """``POST /trading/orders/preview``: ``{"estimated_cost", "estimated_transaction_fee",
    "currency"}`` (Java SDK ``trade/response/v2/PreviewOrderResponse.java``). The cost is
    unsigned; its direction is the order's (a sale or a credit brings cash in)."""
    if not isinstance(body, dict):
        raise unknown("preview payload", type(body).__name__)
    cost = dec(body.get("estimated_cost"), "estimated_cost")
    fee = opt_dec(body.get("estimated_transaction_fee"), "estimated_transaction_fee") or _ZERO
    credit = order.side is OrderSide.sell
    direction = PriceEffect.credit if credit else PriceEffect.debit
    change = (cost if credit else -cost) - fee
    return OrderPreview(
        estimated_cash_change=change,
        direction=direction,
        buying_power_change=None,
        fees=fee,
        warnings=(),
        rejections=(),
        source=PreviewSource.broker,
    )


def option_quote_from_snapshot(body: object, now: datetime) -> Quote:
    """One row of ``GET /market-data/options/snapshots/list`` (OCC ``symbol``, ``price``,
    ``bid``, ``ask``; 3.x ``get_option_snapshot_request.py``) as a ``Quote`` keyed by the
    canonical OCC symbol."""
    if not isinstance(body, dict) or not isinstance(body.get("symbol"), str):
        raise unknown("option snapshot payload", type(body).__name__)
    contract = OptionContract.parse(body["symbol"])
    raw_time = body.get("trade_time") or body.get("quote_time")
    return Quote(
        symbol=contract.symbol,
        bid=dec(body.get("bid"), "bid"),
        ask=dec(body.get("ask"), "ask"),
        last=dec(body.get("price"), "price"),
        as_of=ts(raw_time, "trade_time") if raw_time else now,
    )


def quote_from_snapshot(body: object, now: datetime) -> Quote:
    """``GET /market-data/stocks/snapshots/list``: ``symbol, price, bid, ask, ...``."""
    if not isinstance(body, dict) or not isinstance(body.get("symbol"), str):
        raise unknown("snapshot payload", type(body).__name__)
    raw_time = body.get("trade_time") or body.get("quote_time")
    return Quote(
        symbol=body["symbol"],
        bid=dec(body.get("bid"), "bid"),
        ask=dec(body.get("ask"), "ask"),
        last=dec(body.get("price"), "price"),
        as_of=ts(raw_time, "trade_time") if raw_time else now,
    )


def trade_from_order(order: BrokerOrder) -> Transaction | None:
    """A filled (or partly filled) order as one trade at its average price."""
    if order.filled_quantity <= _ZERO or order.avg_fill_price is None:
        return None
    gross = order.filled_quantity * order.avg_fill_price
    return Transaction(
        transaction_id=order.broker_order_id,
        type=order.side.value,
        occurred_at=order.updated_at,
        amount=-gross if order.side is OrderSide.buy else gross,
        symbol=order.symbol,
        quantity=order.filled_quantity,
        price=order.avg_fill_price,
        description=f"{order.order_type.value} {order.side.value} {order.broker_order_id}",
    )


def token_from_wire(body: object) -> tuple[str, str, str]:
    """``{"token", "expires", "status"}`` (token create/check/refresh) as strings."""
    if not isinstance(body, dict):
        raise unknown("token payload", type(body).__name__)
    token, expires, status = body.get("token"), body.get("expires"), body.get("status")
    if not isinstance(token, str) or not token:
        raise unknown("token", "<missing>")
    if status not in ("PENDING", "NORMAL", "INVALID", "EXPIRED"):
        raise unknown("token status", status)
    if not isinstance(expires, int | str) or isinstance(expires, bool) or not str(expires):
        raise unknown("token expires", expires)
    return token, str(expires), str(status)


def token_expiry(expires: str) -> datetime | None:
    """``expires`` is epoch milliseconds (the SDK stores it as digits)."""
    if not expires.isdigit():
        return None
    value = int(expires)
    return datetime.fromtimestamp(value / 1000 if value > 10**11 else value, UTC)


def error_body(response: httpx.Response) -> tuple[str | None, str]:
    """``{"error_code", "message"}`` (the SDK's ``_parse_error_info_from_response_body``)."""
    try:
        body = response.json()
    except ValueError:
        return None, response.reason_phrase or f"HTTP {response.status_code}"
    if not isinstance(body, dict):
        return None, f"HTTP {response.status_code}"
    code = body.get("error_code")
    message = body.get("message")
    return (
        str(code) if isinstance(code, str | int) else None,
        message if isinstance(message, str) and message else f"HTTP {response.status_code}",
    )


def classify(response: httpx.Response, method: str) -> errors.BrokerError | None:
    """Webull's 4xx answers into the error tree (429 and 5xx are fixed in app.brokers.http)."""
    status = response.status_code
    code, message = error_body(response)
    text = f"{code or ''} {message}".lower()
    if status in (401, 403):
        return errors.AuthenticationFailed(message, broker=SLUG)
    if status == 404 or "not_found" in text or "not found" in text:
        return errors.OrderNotFound(message, broker=SLUG)
    if "insufficient" in text or "buying_power" in text or "buying power" in text:
        return errors.InsufficientFunds(message, broker=SLUG)
    if "symbol" in text or "instrument" in text:
        return errors.UnknownSymbol(message, broker=SLUG)
    if "status" in text and method == "POST":
        return errors.OrderNotModifiable(message, broker=SLUG)
    if "duplicate" in text or "exist" in text:
        return DuplicateClientOrderId(message, broker=SLUG)
    return errors.Rejected(message, broker=SLUG)


class DuplicateClientOrderId(errors.Rejected):
    """The ``client_order_id`` is already used in the account (idempotency)."""
