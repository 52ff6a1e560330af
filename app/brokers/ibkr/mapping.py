"""IBKR Client Portal Web API wire format <-> normalized models. Strict: unknowns raise.

Wire reference: IBKR Campus "Client Portal Web API"
(https://www.interactivebrokers.com/campus/ibkr-api-page/cpapi-v1/) and, for recorded
answers, ``Voyz/ibind`` ``test/integration/client/ibkr_responses.py`` (accounts, auth
status, tickle, positions, ledger, live orders, order status).

Two order shapes: live orders (``GET /iserver/account/orders``) are camelCase with
``status``, ``orderType`` ``Limit``/``Market``/``Stop``/``Stop Limit``, ``side``
``BUY``/``SELL``, ``order_ref`` (our ``cOID``); an order's status
(``GET /iserver/account/order/status/{id}``) is snake_case with ``order_status``,
``order_type`` ``LIMIT``..., ``side`` ``B``/``S`` and no client order id.
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

SLUG = "ibkr"
WIRE = WireReader(SLUG)  # the shared wire readers (app/brokers/wire.py), for this broker
unknown, dec, opt_dec = WIRE.unknown, WIRE.decimal, WIRE.opt_decimal
_ZERO = Decimal(0)

# Order statuses (ibind ``live_orders`` filter docs; TWS API ``OrderStatus``,
# ib-api-reloaded/ib_async ``order.py``). None: depends on what filled.
_STATUS: dict[str, OrderStatus | None] = {
    "PendingSubmit": OrderStatus.submitted,
    "ApiPending": OrderStatus.submitted,
    "PreSubmitted": None,  # accepted, held (e.g. until the session or a trigger)
    "Submitted": None,
    "WarnState": None,  # working, with a warning attached
    "Filled": OrderStatus.filled,
    "PendingCancel": OrderStatus.pending_cancel,
    "Cancelled": OrderStatus.canceled,
    "ApiCancelled": OrderStatus.canceled,
    "Inactive": None,  # not working: rejected, or canceled after a fill; see order_status()
    "ValidationError": OrderStatus.rejected,
}
OPEN_STATUSES = frozenset(
    {"PendingSubmit", "ApiPending", "PreSubmitted", "Submitted", "WarnState", "PendingCancel"}
)
_LIVE_TYPES = {
    "Market": OrderType.market,
    "Limit": OrderType.limit,
    "Stop": OrderType.stop,
    "Stop Limit": OrderType.stop_limit,
}
_STATUS_TYPES = {
    "MARKET": OrderType.market,
    "LIMIT": OrderType.limit,
    "STOP": OrderType.stop,
    "STOP_LIMIT": OrderType.stop_limit,
}
_WIRE_TYPES = {
    OrderType.market: "MKT",
    OrderType.limit: "LMT",
    OrderType.stop: "STP",
    OrderType.stop_limit: "STOP_LIMIT",
}
_TIF = {"DAY": TimeInForce.day, "GTC": TimeInForce.gtc, "IOC": TimeInForce.ioc}
_WIRE_TIF = {v: k for k, v in _TIF.items()}
_SIDES = {"BUY": OrderSide.buy, "SELL": OrderSide.sell, "B": OrderSide.buy, "S": OrderSide.sell}


def order_time(value: object, field: str) -> datetime:
    """``order_time``/``lastExecutionTime`` ``yyMMddHHmmss`` (UTC), or epoch milliseconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        return WIRE.epoch_ms(value, field)
    if not isinstance(value, str) or len(value) != 12 or not value.isdigit():
        raise unknown(field, value)
    try:
        return datetime.strptime(value, "%y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        raise unknown(field, value) from None


def order_status(raw: object, filled: Decimal) -> OrderStatus:
    mapped = WIRE.lookup(_STATUS, raw, "order status")
    if mapped is not None:
        return mapped
    if raw == "Inactive":
        return OrderStatus.canceled if filled > _ZERO else OrderStatus.rejected
    return OrderStatus.partially_filled if filled > _ZERO else OrderStatus.accepted


def _prices(
    order_type: OrderType, price: Decimal | None, aux: Decimal | None
) -> tuple[Decimal | None, Decimal | None]:
    """(limit, stop) from IBKR's ``price``/``auxPrice``: a stop's trigger is its ``price``;
    a stop-limit's limit is ``price`` and its trigger ``auxPrice``."""
    if order_type is OrderType.stop:
        return None, price
    if order_type is OrderType.stop_limit:
        return price, aux
    if order_type is OrderType.limit:
        return price, None
    return None, None


def order_from_status(body: object) -> BrokerOrder:
    """``GET /iserver/account/order/status/{orderId}`` into a ``BrokerOrder``."""
    if not isinstance(body, dict):
        raise unknown("order status payload", type(body).__name__)
    order_id = body.get("order_id")
    if not isinstance(order_id, int | str) or isinstance(order_id, bool) or not str(order_id):
        raise unknown("order_id", order_id)
    order_type = _STATUS_TYPES.get(str(body.get("order_type")))
    if order_type is None:
        raise unknown("order type", body.get("order_type"))
    tif = _TIF.get(str(body.get("tif")))
    if tif is None:
        raise unknown("tif", body.get("tif"))
    side = _SIDES.get(str(body.get("side")))
    if side is None:
        raise unknown("side", body.get("side"))
    quantity = dec(body.get("total_size"), "total_size")
    filled = opt_dec(body.get("cum_fill"), "cum_fill") or _ZERO
    status = order_status(body.get("order_status"), filled)
    has_limit = order_type in (OrderType.limit, OrderType.stop_limit)
    has_stop = order_type in (OrderType.stop, OrderType.stop_limit)
    limit = opt_dec(body.get("limit_price"), "limit_price") if has_limit else None
    stop = opt_dec(body.get("stop_price"), "stop_price") if has_stop else None
    placed = order_time(body.get("order_time"), "order_time")
    return BrokerOrder(
        broker_order_id=str(order_id),
        client_order_id=None,  # the status answer carries no cOID
        symbol=str(body.get("symbol")),
        side=side,
        quantity=quantity,
        filled_quantity=filled,
        avg_fill_price=opt_dec(body.get("average_price"), "average_price") if filled else None,
        order_type=order_type,
        time_in_force=tif,
        status=status,
        limit_price=limit,
        stop_price=stop,
        created_at=placed,
        updated_at=placed,
        reject_reason=_reason(body, status),
    )


def _reason(body: dict[str, Any], status: OrderStatus) -> str | None:
    if status is not OrderStatus.rejected:
        return None
    text = body.get("order_status_description") or body.get("status_description")
    return str(text) if text else "rejected by IBKR"


def order_from_live(body: object) -> BrokerOrder:
    """One ``GET /iserver/account/orders`` entry into a ``BrokerOrder``."""
    if not isinstance(body, dict):
        raise unknown("live order payload", type(body).__name__)
    order_id = body.get("orderId")
    if not isinstance(order_id, int | str) or isinstance(order_id, bool) or not str(order_id):
        raise unknown("orderId", order_id)
    order_type = _LIVE_TYPES.get(str(body.get("orderType")))
    if order_type is None:
        raise unknown("orderType", body.get("orderType"))
    tif = _TIF.get(str(body.get("timeInForce")))
    if tif is None:
        raise unknown("timeInForce", body.get("timeInForce"))
    side = _SIDES.get(str(body.get("side")))
    if side is None:
        raise unknown("side", body.get("side"))
    filled = opt_dec(body.get("filledQuantity"), "filledQuantity") or _ZERO
    quantity = opt_dec(body.get("totalSize"), "totalSize")
    if quantity is None:
        quantity = filled + (opt_dec(body.get("remainingQuantity"), "remainingQuantity") or _ZERO)
    status = order_status(body.get("status"), filled)
    limit, stop = _prices(
        order_type, opt_dec(body.get("price"), "price"), opt_dec(body.get("auxPrice"), "auxPrice")
    )
    at_raw = body.get("lastExecutionTime_r", body.get("lastExecutionTime"))
    at = order_time(at_raw, "lastExecutionTime")
    ref = body.get("order_ref")
    return BrokerOrder(
        broker_order_id=str(order_id),
        client_order_id=ref if isinstance(ref, str) and ref else None,
        symbol=str(body.get("ticker") or body.get("description1")),
        side=side,
        quantity=quantity,
        filled_quantity=filled,
        avg_fill_price=opt_dec(body.get("avgPrice"), "avgPrice") if filled else None,
        order_type=order_type,
        time_in_force=tif,
        status=status,
        limit_price=limit,
        stop_price=stop,
        created_at=at,
        updated_at=at,
        reject_reason="rejected by IBKR" if status is OrderStatus.rejected else None,
    )


def order_to_wire(order: OrderRequest, account_id: str, conid: int) -> dict[str, Any]:
    """One entry of ``{"orders": [...]}`` (``POST /iserver/account/{accountId}/orders``)."""
    if order.time_in_force not in _WIRE_TIF:
        raise errors.UnsupportedOrder(
            f"IBKR takes time in force DAY, GTC or IOC, not {order.time_in_force.value}",
            broker=SLUG,
        )
    body: dict[str, Any] = {
        "acctId": account_id,
        "conid": conid,
        "secType": f"{conid}:STK",
        "cOID": order.client_order_id,
        "orderType": _WIRE_TYPES[order.order_type],
        "side": "BUY" if order.side is OrderSide.buy else "SELL",
        "quantity": number(order.quantity),
        "tif": _WIRE_TIF[order.time_in_force],
        "outsideRTH": order.extended_hours,
    }
    body.update(prices_to_wire(order.order_type, order.limit_price, order.stop_price))
    return body


def number(value: Decimal) -> int | float:
    """IBKR takes JSON numbers. Share counts are integers; prices have at most a few
    decimals, far inside a double's 15 exact digits, so the float's text is the decimal's."""
    if value == value.to_integral_value():
        return int(value)
    result = float(value)
    if Decimal(repr(result)) != value:
        raise errors.UnsupportedOrder(f"{value} cannot be sent exactly", broker=SLUG)
    return result


def prices_to_wire(
    order_type: OrderType, limit: Decimal | None, stop: Decimal | None
) -> dict[str, int | float]:
    if order_type is OrderType.limit and limit is not None:
        return {"price": number(limit)}
    if order_type is OrderType.stop and stop is not None:
        return {"price": number(stop)}
    if order_type is OrderType.stop_limit and limit is not None and stop is not None:
        return {"price": number(limit), "auxPrice": number(stop)}
    if order_type is OrderType.market:
        return {}
    raise errors.UnsupportedOrder(f"a {order_type.value} order needs its prices", broker=SLUG)


def wire_type(order_type: OrderType) -> str:
    return _WIRE_TYPES[order_type]


def wire_tif(tif: TimeInForce) -> str:
    if tif not in _WIRE_TIF:
        raise errors.UnsupportedOrder("IBKR takes DAY, GTC or IOC", broker=SLUG)
    return _WIRE_TIF[tif]


def balances_from_summary(body: object, now: datetime) -> Balances:
    """``GET /portfolio/{accountId}/summary``: ``{"totalcashvalue": {"amount", "currency"},
    "netliquidation": {...}, "buyingpower": {...}, ...}``."""
    if not isinstance(body, dict):
        raise unknown("summary payload", type(body).__name__)

    def amount(key: str) -> tuple[Decimal, str]:
        entry = body.get(key)
        if not isinstance(entry, dict):
            raise unknown(key, entry)
        return dec(entry.get("amount"), key), str(entry.get("currency") or "USD")

    cash, currency = amount("totalcashvalue")
    return Balances(
        cash=cash,
        equity=amount("netliquidation")[0],
        buying_power=amount("buyingpower")[0],
        currency=currency,
        as_of=now,
    )


_ASSET_CLASSES = {"STK": AssetClass.equity, "OPT": AssetClass.option, "CRYPTO": AssetClass.crypto}


def position_from_wire(body: object, now: datetime) -> Position:
    """One ``GET /portfolio/{accountId}/positions/{page}`` entry (ibind's ``positions``)."""
    if not isinstance(body, dict):
        raise unknown("position payload", type(body).__name__)
    asset_class = _ASSET_CLASSES.get(str(body.get("assetClass")))
    if asset_class is None:
        raise unknown("assetClass", body.get("assetClass"))
    return Position(
        symbol=str(body.get("ticker") or body.get("contractDesc")),
        asset_class=asset_class,
        quantity=dec(body.get("position"), "position"),
        avg_cost=dec(body.get("avgPrice", body.get("avgCost")), "avgPrice"),
        current_price=dec(body.get("mktPrice"), "mktPrice"),
        market_value=dec(body.get("mktValue"), "mktValue"),
        unrealized_pl=dec(body.get("unrealizedPnl"), "unrealizedPnl"),
        as_of=now,
    )


# Snapshot field ids (https://www.interactivebrokers.com/campus/ibkr-api-page/cpapi-v1/
# #market-data-fields): 31 last price, 84 bid, 86 ask.
SNAPSHOT_FIELDS = "31,84,86"


def quote_from_snapshot(body: object, symbol: str) -> Quote | None:
    """One snapshot entry; None while the fields are not there yet (the first request for
    a conid only starts the subscription)."""
    if not isinstance(body, dict):
        raise unknown("snapshot payload", type(body).__name__)
    if not all(body.get(k) not in (None, "") for k in ("31", "84", "86")):
        return None
    updated = body.get("_updated")
    return Quote(
        symbol=symbol,
        bid=dec(body["84"], "84"),
        ask=dec(body["86"], "86"),
        last=dec(str(body["31"]).lstrip("C").lstrip("H"), "31"),  # "C"/"H": closing/halted
        as_of=order_time(updated, "_updated") if isinstance(updated, int) else datetime.now(UTC),
    )


def trade_from_execution(body: object) -> Transaction:
    """One ``GET /iserver/account/trades`` execution as a buy/sell transaction."""
    if not isinstance(body, dict):
        raise unknown("trade payload", type(body).__name__)
    side = _SIDES.get(str(body.get("side")))
    if side is None:
        raise unknown("trade side", body.get("side"))
    size, price = dec(body.get("size"), "size"), dec(body.get("price"), "price")
    gross = size * price
    return Transaction(
        transaction_id=str(body.get("execution_id")),
        type=side.value,
        occurred_at=order_time(body.get("trade_time_r"), "trade_time_r"),
        amount=-gross if side is OrderSide.buy else gross,
        symbol=str(body.get("symbol")),
        quantity=size,
        price=price,
        description=str(body.get("order_description") or "execution"),
    )


def error_text(response: httpx.Response) -> str:
    """``{"error": "..."}`` (with ``statusCode`` at times) or the reason phrase."""
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or f"HTTP {response.status_code}"
    if isinstance(body, dict):
        for key in ("error", "message", "msg"):
            if isinstance(body.get(key), str) and body[key]:
                return str(body[key])
    return response.reason_phrase or f"HTTP {response.status_code}"


def refusal(text: str) -> errors.Rejected:
    """A refused order (a 4xx, or a 200 ``{"error"}`` on placement) by its words."""
    lowered = text.lower()
    if "local order id" in lowered and "registered" in lowered:
        return DuplicateClientOrderId(text, broker=SLUG)
    if "insufficient" in lowered or "buying power" in lowered or "margin" in lowered:
        return errors.InsufficientFunds(text, broker=SLUG)
    if "market" in lowered and "closed" in lowered:
        return errors.MarketClosed(text, broker=SLUG)
    return errors.Rejected(text, broker=SLUG)


def classify(response: httpx.Response, method: str) -> errors.BrokerError | None:
    """IBKR's 4xx answers into the error tree (429 and 5xx are fixed in app.brokers.http).

    401: the gateway has no authenticated brokerage session (log in again at the gateway).
    """
    status = response.status_code
    text = error_text(response)
    if status in (401, 403):
        return errors.AuthenticationFailed(text, broker=SLUG)
    if status == 404:
        return errors.OrderNotFound(text, broker=SLUG)
    if method == "DELETE":
        return errors.OrderNotModifiable(text, broker=SLUG)
    return refusal(text)


class DuplicateClientOrderId(errors.Rejected):
    """ "Order couldn't be submitted: Local order ID=... is already registered." (ibind
    ``handle_questions`` recognizes this wording): our cOID is in use."""
