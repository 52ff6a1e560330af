"""Coinbase Advanced Trade wire format <-> normalized models. Strict: unknown values raise.

Sources: the API reference (https://docs.cdp.coinbase.com/api-reference/advanced-trade-api/),
the official SDK coinbase/coinbase-advanced-py (``coinbase/rest/orders.py``,
``coinbase/rest/types/orders_types.py``) and the doc examples reproduced in
``tests/brokers/coinbase/payloads.py``. Quirks handled here, each with its page:

* Placing an order answers **200 even when Coinbase refused it**: ``{"success": false,
  "error_response": {"error", "message", "error_details", "preview_failure_reason",
  "new_order_failure_reason"}}`` is a rejection
  (https://docs.cdp.coinbase.com/api-reference/advanced-trade-api/rest-api/orders/create-order).
  ``order_id``/``failure_reason`` at the top level were deprecated on 2024-07-19
  (https://docs.cdp.coinbase.com/advanced-trade/docs/changelog) and are not read.
* Cancel is a batch: ``POST /orders/batch_cancel`` answers 200 with one ``{"success",
  "failure_reason", "order_id"}`` per order, each to be checked
  (https://docs.cdp.coinbase.com/api-reference/advanced-trade-api/rest-api/orders/cancel-order).
* Edit answers 200 ``{"success": bool, "errors": [{"edit_failure_reason",
  "preview_failure_reason"}]}`` (same page family, ``orders/edit-order``).
* The order's terms live in ``order_configuration``, one key naming type and time in force
  together (``limit_limit_gtc``, ``market_market_ioc``, ...); sizes are base-currency
  ``base_size`` or quote-currency ``quote_size``.
* Errors outside the 200 envelope are gRPC-style ``{"error": "INVALID_ARGUMENT",
  "error_details": "...", "message": "..."}`` (a recorded 400 in hummingbot/hummingbot#7220);
  a 401 is a plain-text ``Unauthorized``.
* The Coinbase App (v2) endpoints used for deposits answer ``{"data": [...], "pagination":
  {...}}`` and errors as ``{"errors": [{"id", "message"}]}``
  (https://docs.cdp.coinbase.com/coinbase-app/api-architecture/rate-limiting shows the shape).
* Timestamps are RFC 3339 with up to nanoseconds (``2023-02-09T20:33:57.609931463Z``); the
  user channel uses ``0001-01-01T00:00:00Z`` for "not set".
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
    BrokerOrder,
    OrderPreview,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    Position,
    PreviewSource,
    PriceEffect,
    Quote,
    TimeInForce,
    Transaction,
)
from app.brokers.wire import WireReader

SLUG = "coinbase"
WIRE = WireReader(SLUG)  # the shared wire readers (app/brokers/wire.py), for this broker
unknown, dec, opt_dec, ts = WIRE.unknown, WIRE.decimal, WIRE.opt_decimal, WIRE.timestamp
CASH_CURRENCY = "USD"
_ZERO = Decimal(0)


# --- scalars ---------------------------------------------------------------------------


def opt_ts(value: object, field: str) -> datetime | None:
    if value is None or value == "":
        return None
    parsed = ts(value, field)
    return None if parsed.year == 1 else parsed  # 0001-01-01T00:00:00Z: "not set"


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def plain(value: Decimal) -> str:
    """A decimal string without exponent (``1E+1`` would be refused): ``"10"``, ``"0.5"``."""
    text = format(value.normalize(), "f")
    return text


# --- symbols -------------------------------------------------------------------------


_PRODUCT = re.compile(r"^[A-Z0-9]{1,20}-[A-Z0-9]{1,20}$")


def to_product_id(symbol: str) -> str:
    """Our crypto pairs are ``BTC-USD``, Coinbase's product ids too; ``BTC/USD`` is read as
    the same pair (https://docs.cdp.coinbase.com/api-reference/advanced-trade-api/rest-api/
    products/get-product: ``product_id`` "BTC-USD")."""
    return symbol.strip().upper().replace("/", "-")


def from_product_id(product_id: object) -> str:
    if not isinstance(product_id, str) or not _PRODUCT.match(product_id):
        raise unknown("product_id", product_id)
    return product_id


def base_currency(product_id: str) -> str:
    return product_id.split("-", 1)[0]


def quote_currency(product_id: str) -> str:
    return product_id.split("-", 1)[1]


# --- orders: request -------------------------------------------------------------------

# Our (order type, time in force) -> Coinbase's order_configuration key. Anything else is
# refused before a request is sent. Coinbase has no "day" (crypto trades around the clock),
# no stop-market order, and market orders are immediate-or-cancel only
# (coinbase-advanced-py orders_types.OrderConfiguration; create-order reference).
ORDER_CONFIGURATIONS: dict[tuple[OrderType, TimeInForce], str] = {
    (OrderType.market, TimeInForce.ioc): "market_market_ioc",
    (OrderType.limit, TimeInForce.gtc): "limit_limit_gtc",
    (OrderType.limit, TimeInForce.ioc): "sor_limit_ioc",
    (OrderType.limit, TimeInForce.fok): "limit_limit_fok",
    (OrderType.stop_limit, TimeInForce.gtc): "stop_limit_stop_limit_gtc",
}
_FROM_CONFIGURATION = {v: k for k, v in ORDER_CONFIGURATIONS.items()}
# Configurations that exist and that this gateway does not model (GTD end times, brackets,
# TWAP, scaled): such orders (placed in the Coinbase app, say) are left out of lists.
KNOWN_UNMODELLED_CONFIGURATIONS = frozenset(
    {
        "limit_limit_gtd",
        "stop_limit_stop_limit_gtd",
        "trigger_bracket_gtc",
        "trigger_bracket_gtd",
        "market_market_fok",
        "twap_limit_gtd",
        "scaled_limit_gtc",
    }
)

_SIDES = {"BUY": OrderSide.buy, "SELL": OrderSide.sell}
_SIDES_OUT = {v: k for k, v in _SIDES.items()}


def order_to_wire(order: OrderRequest) -> dict[str, Any]:
    """``POST /api/v3/brokerage/orders`` body. NotSupported for a combination Coinbase lacks.

    ``client_order_id`` is required by Coinbase (the SDK makes one up when it is empty); ours
    is the gateway's stable id, so a lookup by it finds the order after a lost answer.
    """
    key = ORDER_CONFIGURATIONS.get((order.order_type, order.time_in_force))
    if key is None:
        supported = ", ".join(f"{t.value}/{f.value}" for t, f in ORDER_CONFIGURATIONS)
        raise errors.NotSupported(
            f"Coinbase does not take {order.order_type.value} orders with time_in_force "
            f"{order.time_in_force.value} (it takes {supported})",
            broker=SLUG,
        )
    if order.extended_hours:
        raise errors.NotSupported("crypto has no extended-hours session", broker=SLUG)
    terms: dict[str, Any]
    if order.notional is not None:
        # A dollar amount: ``quote_size`` of a market order, "the amount of the second Asset
        # in the Trading Pair" (create-order reference; the SDK README's first example is
        # ``market_order_buy(client_order_id, "BTC-USD", quote_size="1")``).
        if key != "market_market_ioc":
            raise errors.NotSupported(
                "Coinbase takes a dollar amount (quote_size) on market orders only here",
                broker=SLUG,
            )
        if order.notional <= 0:
            raise errors.UnsupportedOrder("the amount must be positive", broker=SLUG)
        terms = {"quote_size": plain(order.notional)}
    else:
        if order.quantity <= 0:
            raise errors.UnsupportedOrder("the quantity must be positive", broker=SLUG)
        terms = {"base_size": plain(order.quantity)}
    if order.order_type in (OrderType.limit, OrderType.stop_limit):
        if order.limit_price is None:
            raise errors.UnsupportedOrder("a limit order needs a limit price", broker=SLUG)
        terms["limit_price"] = plain(order.limit_price)
    if key == "limit_limit_gtc":
        terms["post_only"] = False
    if order.order_type is OrderType.stop_limit:
        if order.stop_price is None:
            raise errors.UnsupportedOrder("a stop-limit order needs a stop price", broker=SLUG)
        terms["stop_price"] = plain(order.stop_price)
        # A buy stop triggers when the price rises to it, a sell stop when it falls to it
        # (the paper broker's rule too): STOP_DIRECTION_STOP_UP / _DOWN (orders_types).
        terms["stop_direction"] = (
            "STOP_DIRECTION_STOP_UP" if order.side is OrderSide.buy else "STOP_DIRECTION_STOP_DOWN"
        )
    return {
        "client_order_id": order.client_order_id,
        "product_id": to_product_id(order.symbol),
        "side": _SIDES_OUT[order.side],
        "order_configuration": {key: terms},
    }


# --- orders: answers -------------------------------------------------------------------

# new_order_failure_reason / error values (create-order reference, NewOrderFailureReason;
# the same sixteen values in hummingbot's cat_api_v3_enums) and preview_failure_reason
# values that say the same thing.
_INSUFFICIENT = frozenset(
    {
        "INSUFFICIENT_FUND",
        "INSUFFICIENT_FUNDS",
        "PREVIEW_INSUFFICIENT_FUND",
        "PREVIEW_INSUFFICIENT_LEDGER_BALANCE",
        "INVALID_LEDGER_BALANCE",
    }
)
_UNKNOWN_PRODUCT = frozenset({"INVALID_PRODUCT_ID", "PREVIEW_INVALID_PRODUCT_ID"})
_UNSUPPORTED = frozenset(
    {"UNSUPPORTED_ORDER_CONFIGURATION", "PREVIEW_INVALID_ORDER_CONFIG", "INELIGIBLE_PAIR"}
)
_UNSET = frozenset({"", "UNKNOWN_FAILURE_REASON", "UNKNOWN_PREVIEW_FAILURE_REASON"})


def _reason_text(error: dict[str, Any], codes: list[str]) -> str:
    for key in ("message", "error_details"):
        value = error.get(key)
        if isinstance(value, str) and value:
            detail = error.get("error_details")
            if key == "message" and isinstance(detail, str) and detail and detail != value:
                return f"{value}: {detail}"
            return value
    return codes[0] if codes else "Coinbase refused the order"


def rejection(error: object) -> errors.Rejected:
    """The error for a ``success: false`` answer's ``error_response``."""
    if not isinstance(error, dict):
        return errors.Rejected("Coinbase refused the order (no reason given)", broker=SLUG)
    codes = [
        str(error.get(key))
        for key in ("new_order_failure_reason", "preview_failure_reason", "error")
        if isinstance(error.get(key), str) and error.get(key) not in _UNSET
    ]
    reason = _reason_text(error, codes)
    if codes and reason not in codes:
        reason = f"{reason} ({codes[0]})"
    if any(code in _INSUFFICIENT for code in codes):
        return errors.InsufficientFunds(reason, broker=SLUG)
    if any(code in _UNKNOWN_PRODUCT for code in codes):
        return errors.UnknownSymbol(reason, broker=SLUG)
    if any(code in _UNSUPPORTED for code in codes):
        return errors.UnsupportedOrder(reason, broker=SLUG)
    return errors.Rejected(reason, broker=SLUG)


def placed_order_id(body: object) -> str:
    """The order id of a create-order answer, or the rejection it carries (200 either way)."""
    if not isinstance(body, dict) or not isinstance(body.get("success"), bool):
        raise unknown("create order answer", sorted(body) if isinstance(body, dict) else body)
    if not body["success"]:
        raise rejection(body.get("error_response"))
    success = body.get("success_response")
    order_id = success.get("order_id") if isinstance(success, dict) else None
    if not isinstance(order_id, str) or not order_id:
        raise unknown("success_response.order_id", order_id)
    return order_id


def _preview_messages(value: object, field: str) -> tuple[str, ...]:
    """``errs`` / ``warning`` of a preview: the reference types them as enum strings
    (PreviewFailureReason, PreviewWarningMsg); the SDK's type hints say objects, so an
    object's ``message``/``preview_failure_reason`` is read too. ``UNKNOWN...`` means none."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise unknown(field, value)
    found: list[str] = []
    for item in value:
        text: object = item
        if isinstance(item, dict):
            text = item.get("message") or item.get("preview_failure_reason") or item.get("error")
        if not isinstance(text, str):
            raise unknown(field, item)
        if text and not text.startswith("UNKNOWN"):
            found.append(text)
    return tuple(found)


def preview_from_wire(body: object, side: OrderSide) -> OrderPreview:
    """``POST /orders/preview`` (preview-orders reference): ``order_total`` is what the
    order costs (a buy, commission included) or raises (a sell), ``commission_total`` the
    fee; ``errs`` say why Coinbase would refuse it, ``warning`` what to heed."""
    if not isinstance(body, dict):
        raise unknown("preview answer", type(body).__name__)
    total = dec(body.get("order_total"), "order_total")
    fees = opt_dec(body.get("commission_total"), "commission_total") or _ZERO
    buy = side is OrderSide.buy
    change = -total if buy else total
    return OrderPreview(
        estimated_cash_change=change,
        direction=PriceEffect.debit if buy else PriceEffect.credit,
        buying_power_change=change,  # spot: cash is the buying power
        fees=fees,
        warnings=_preview_messages(body.get("warning"), "warning"),
        rejections=_preview_messages(body.get("errs"), "errs"),
        source=PreviewSource.broker,
    )


# CancelOrderFailureReason (cancel-order reference; hummingbot cat_api_v3_enums).
CANCEL_FAILURE_REASONS = frozenset(
    {
        "UNKNOWN_CANCEL_FAILURE_REASON",
        "INVALID_CANCEL_REQUEST",
        "UNKNOWN_CANCEL_ORDER",
        "COMMANDER_REJECTED_CANCEL_ORDER",
        "DUPLICATE_CANCEL_REQUEST",
    }
)


@dataclass(frozen=True, slots=True)
class CancelResult:
    success: bool
    failure_reason: str


def cancel_result(body: object, order_id: str) -> CancelResult:
    """This order's entry in a ``batch_cancel`` answer (each entry must be checked)."""
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list):
        raise unknown("batch_cancel answer", sorted(body) if isinstance(body, dict) else body)
    for item in results:
        if isinstance(item, dict) and item.get("order_id") == order_id:
            success = item.get("success")
            reason = item.get("failure_reason") or ""
            if not isinstance(success, bool) or not isinstance(reason, str):
                raise unknown("batch_cancel result", item)
            if reason and reason not in CANCEL_FAILURE_REASONS:
                raise unknown("cancel failure_reason", reason)
            return CancelResult(success, reason)
    raise unknown("batch_cancel results (order missing)", results[:3])


@dataclass(frozen=True, slots=True)
class EditResult:
    success: bool
    reasons: tuple[str, ...]


def edit_result(body: object) -> EditResult:
    """``POST /orders/edit``: ``{"success": bool, "errors": [{"edit_failure_reason",
    "preview_failure_reason"}]}``."""
    if not isinstance(body, dict) or not isinstance(body.get("success"), bool):
        raise unknown("edit answer", sorted(body) if isinstance(body, dict) else body)
    reasons: list[str] = []
    raw = body.get("errors") or []
    if isinstance(raw, dict):  # the doc example shows one object where the SDK reads a list
        raw = [raw]
    if not isinstance(raw, list):
        raise unknown("edit errors", raw)
    for item in raw:
        if not isinstance(item, dict):
            raise unknown("edit error", item)
        for key in ("edit_failure_reason", "preview_failure_reason"):
            value = item.get(key)
            if isinstance(value, str) and value and not value.startswith("UNKNOWN_"):
                reasons.append(value)
    return EditResult(body["success"], tuple(reasons))


# --- orders: the order object ------------------------------------------------------------

# Order status vocabulary (get-order reference ``status``: PENDING, OPEN, FILLED, CANCELLED,
# EXPIRED, FAILED, UNKNOWN_ORDER_STATUS, QUEUED, CANCEL_QUEUED; the same nine in the cbat
# crate's transcription of the reference and in JKorf/Coinbase.Net OrderStatus). EDIT_QUEUED
# (an edit accepted, not yet applied) is in newer client enums (several independent clients)
# though not in the SDK snapshot read; it is mapped rather than refused. ``None``: a working
# order, accepted or partially filled by what has filled.
_STATUS: dict[str, OrderStatus | None] = {
    "PENDING": OrderStatus.submitted,  # received, not yet working
    "QUEUED": OrderStatus.submitted,  # queued for the book (e.g. a product in auction)
    "OPEN": None,
    "CANCEL_QUEUED": OrderStatus.pending_cancel,
    "EDIT_QUEUED": OrderStatus.pending_replace,
    "FILLED": OrderStatus.filled,
    "CANCELLED": OrderStatus.canceled,
    "EXPIRED": OrderStatus.expired,
    "FAILED": OrderStatus.rejected,
    # Coinbase itself does not know: ours "unknown" makes reconciliation look again.
    "UNKNOWN_ORDER_STATUS": OrderStatus.unknown,
}
WIRE_STATUSES = frozenset(_STATUS)
OPEN_WIRE_STATUSES = ("OPEN",)
CLOSED_WIRE_STATUSES = frozenset({"FILLED", "CANCELLED", "EXPIRED", "FAILED"})

_TIME_IN_FORCE = {
    "GOOD_UNTIL_CANCELLED": TimeInForce.gtc,
    "IMMEDIATE_OR_CANCEL": TimeInForce.ioc,
    "FILL_OR_KILL": TimeInForce.fok,
}
TIME_IN_FORCE_VALUES = frozenset({*_TIME_IN_FORCE, "GOOD_UNTIL_DATE_TIME", "UNKNOWN_TIME_IN_FORCE"})


def order_status(
    raw: object, quantity: Decimal, filled: Decimal, pending_cancel: bool = False
) -> OrderStatus:
    mapped = WIRE.lookup(_STATUS, raw, "order status")
    if mapped is None:  # OPEN
        if pending_cancel:
            return OrderStatus.pending_cancel
        if filled >= quantity > 0:
            return OrderStatus.filled
        return OrderStatus.partially_filled if filled > 0 else OrderStatus.accepted
    return mapped


def _configuration(item: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    config = item.get("order_configuration")
    if not isinstance(config, dict):
        return None
    present = [(k, v) for k, v in config.items() if isinstance(v, dict) and v]
    if len(present) != 1:
        return None
    return present[0]


def is_modelled(item: object) -> bool:
    """A spot order whose terms the gateway represents (base-sized, a known configuration).

    Orders placed elsewhere with a quote-currency size ("buy $10 of BTC"), an end time,
    a bracket, or on futures are real but outside the model; lists leave them out.
    """
    if not isinstance(item, dict):
        return False
    if item.get("product_type") not in (None, "", "SPOT", "UNKNOWN_PRODUCT_TYPE"):
        return False
    found = _configuration(item)
    if found is None:
        return False
    key, terms = found
    if key == "market_market_ioc" and terms.get("quote_size"):
        return True  # a dollar-amount market order
    return key in _FROM_CONFIGURATION and bool(terms.get("base_size"))


def order_from_wire(item: object) -> BrokerOrder:
    """A REST order object (``GET /orders/historical/{id}`` ``order``; list ``orders[]``)."""
    if not isinstance(item, dict):
        raise unknown("order", type(item).__name__)
    if item.get("product_type") not in (None, "", "SPOT", "UNKNOWN_PRODUCT_TYPE"):
        raise unknown("product_type (only spot orders are modelled)", item.get("product_type"))
    found = _configuration(item)
    if found is None:
        raise unknown("order_configuration", item.get("order_configuration"))
    key, terms = found
    if key not in _FROM_CONFIGURATION:
        raise unknown("order_configuration", key)
    order_type, tif = _FROM_CONFIGURATION[key]
    filled = opt_dec(item.get("filled_size"), "filled_size") or _ZERO
    notional: Decimal | None = None
    if terms.get("base_size"):
        quantity = dec(terms.get("base_size"), "base_size")
    elif key == "market_market_ioc" and terms.get("quote_size"):
        # A dollar-amount market order: its size in coins is what filled, as Coinbase
        # reports it (``filled_size``, ``average_filled_price``), 0 until it fills.
        notional = dec(terms.get("quote_size"), "quote_size")
        quantity = filled
    else:
        raise unknown("order size (quote-sized orders are market orders only)", sorted(terms))
    side = _SIDES.get(str(item.get("side")))
    if side is None:
        raise unknown("side", item.get("side"))
    order_id = item.get("order_id")
    if not isinstance(order_id, str) or not order_id:
        raise unknown("order_id", order_id)
    average = opt_dec(item.get("average_filled_price"), "average_filled_price")
    pending_cancel = item.get("pending_cancel") is True
    # An OPEN dollar-amount order is never "filled" by its size (what filled so far): only
    # Coinbase's FILLED says it is done.
    sized = quantity if notional is None else Decimal("Infinity")
    status = order_status(item.get("status"), sized, filled, pending_cancel)
    created = ts(item.get("created_time"), "created_time")
    updated = max(
        [created]
        + [t for t in (opt_ts(item.get("last_fill_time"), "last_fill_time"),) if t]
        + [
            t
            for entry in (item.get("edit_history") or [])
            if isinstance(entry, dict)
            for t in (opt_ts(entry.get("replace_accept_timestamp"), "replace_accept_timestamp"),)
            if t
        ]
    )
    reject_reason = None
    if status is OrderStatus.rejected:
        for field in ("reject_message", "reject_reason"):
            value = item.get(field)
            if isinstance(value, str) and value and value != "REJECT_REASON_UNSPECIFIED":
                reject_reason = value
                break
        reject_reason = reject_reason or "Coinbase failed the order"
    client_order_id = item.get("client_order_id")
    return BrokerOrder(
        broker_order_id=order_id,
        client_order_id=client_order_id if isinstance(client_order_id, str) else None,
        symbol=from_product_id(item.get("product_id")),
        side=side,
        quantity=quantity,
        filled_quantity=filled,
        avg_fill_price=average if filled > 0 and average else None,
        order_type=order_type,
        time_in_force=tif,
        status=status,
        limit_price=opt_dec(terms.get("limit_price"), "limit_price"),
        stop_price=opt_dec(terms.get("stop_price"), "stop_price"),
        created_at=created,
        updated_at=updated,
        reject_reason=reject_reason,
        notional=notional,
    )


def order_of(body: object) -> dict[str, Any]:
    """The ``order`` of a get-order answer."""
    order = body.get("order") if isinstance(body, dict) else None
    if not isinstance(order, dict):
        raise unknown("get order answer", sorted(body) if isinstance(body, dict) else body)
    return order


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Any]
    cursor: str | None


def page_of(body: object, key: str) -> Page:
    """A list answer (``orders``, ``accounts``, ``fills``) with its cursor, if more follow.

    ``has_next`` is given for orders and accounts; fills carry only ``cursor`` (empty at the
    end), so a non-empty cursor without ``has_next`` means more.
    """
    if not isinstance(body, dict) or not isinstance(body.get(key), list):
        raise unknown(f"{key} answer", sorted(body) if isinstance(body, dict) else body)
    cursor = body.get("cursor")
    more = body.get("has_next")
    if not isinstance(cursor, str) or not cursor or more is False:
        cursor = None
    return Page(list(body[key]), cursor)


# --- the user channel -----------------------------------------------------------------

# order_type in user-channel orders is spelled for humans ("Limit", "Market", "Stop Limit";
# docs example and hummingbot CoinbaseAdvancedTradeWSSOrderType); the REST spellings are
# accepted too (JKorf/Coinbase.Net maps "STOP_LIMIT" and "Stop Limit" alike).
_EVENT_TYPES = {
    "Limit": OrderType.limit,
    "LIMIT": OrderType.limit,
    "Market": OrderType.market,
    "MARKET": OrderType.market,
    "Stop Limit": OrderType.stop_limit,
    "STOP_LIMIT": OrderType.stop_limit,
}
# Statuses whose leaves_quantity still says how much is left (so cumulative + leaves is the
# order's size); after a cancel or expiry the user channel may report nothing left.
_SIZE_KNOWN = frozenset({"PENDING", "QUEUED", "OPEN", "CANCEL_QUEUED", "EDIT_QUEUED", "FILLED"})


@dataclass(frozen=True, slots=True)
class EventOrder:
    """One order of a user-channel event: its id, its status, and the order if complete."""

    order_id: str
    client_order_id: str | None
    status: str
    order: BrokerOrder | None


def event_order(item: object) -> EventOrder:
    """Parse one ``events[].orders[]`` entry of the ``user`` channel.

    The status must be known (UnknownBrokerValue otherwise). ``order`` is None when the
    entry does not carry the whole order (a cancelled order's size, a limit price left
    empty, a time in force or type outside the model): the caller reads it over REST.
    """
    if not isinstance(item, dict):
        raise unknown("user channel order", type(item).__name__)
    order_id = item.get("order_id")
    status = item.get("status")
    if not isinstance(order_id, str) or not order_id:
        raise unknown("user channel order_id", order_id)
    if not isinstance(status, str) or status not in _STATUS:
        raise unknown("order status", status)
    client = item.get("client_order_id")
    client_order_id = client if isinstance(client, str) and client else None
    return EventOrder(order_id, client_order_id, status, _complete_event_order(item, status))


def _complete_event_order(item: dict[str, Any], status: str) -> BrokerOrder | None:
    order_type = _EVENT_TYPES.get(str(item.get("order_type")))
    tif = _TIME_IN_FORCE.get(str(item.get("time_in_force")))
    side = _SIDES.get(str(item.get("order_side")))
    if order_type is None or tif is None or side is None or status not in _SIZE_KNOWN:
        return None
    if (order_type, tif) not in ORDER_CONFIGURATIONS:
        return None
    if order_type is OrderType.market:
        # A market order may be sized in dollars (quote_size), which the user channel does
        # not say (its order entry has no size terms): the order is read over REST.
        return None
    if item.get("product_type") not in (None, "", "SPOT"):
        return None
    filled = opt_dec(item.get("cumulative_quantity"), "cumulative_quantity")
    leaves = opt_dec(item.get("leaves_quantity"), "leaves_quantity")
    if filled is None or leaves is None:
        return None
    limit_price = opt_dec(item.get("limit_price"), "limit_price")
    stop_price = opt_dec(item.get("stop_price"), "stop_price")
    if order_type in (OrderType.limit, OrderType.stop_limit) and limit_price is None:
        return None
    if order_type is OrderType.stop_limit and stop_price is None:
        return None
    quantity = filled + leaves
    average = opt_dec(item.get("avg_price"), "avg_price")
    created = ts(item.get("creation_time"), "creation_time")
    client = item.get("client_order_id")
    return BrokerOrder(
        broker_order_id=str(item["order_id"]),
        client_order_id=client if isinstance(client, str) and client else None,
        symbol=from_product_id(item.get("product_id")),
        side=side,
        quantity=quantity,
        filled_quantity=filled,
        avg_fill_price=average if filled > 0 and average else None,
        order_type=order_type,
        time_in_force=tif,
        status=order_status(status, quantity, filled),
        limit_price=limit_price,
        stop_price=stop_price if order_type is OrderType.stop_limit else None,
        created_at=created,
        updated_at=created,
    )


# --- accounts, balances, positions, quotes ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Wallet:
    """One Coinbase "account": a per-currency wallet inside a portfolio."""

    uuid: str
    currency: str
    available: Decimal
    hold: Decimal
    portfolio: str

    @property
    def total(self) -> Decimal:
        return self.available + self.hold


def _amount(value: object, field: str) -> Decimal:
    if not isinstance(value, dict):
        raise unknown(field, value)
    return dec(value.get("value"), f"{field}.value")


def wallet_from_wire(item: object) -> Wallet | None:
    """A wallet of ``GET /accounts`` (list-accounts reference); None for an inactive one."""
    if not isinstance(item, dict):
        raise unknown("account", type(item).__name__)
    if item.get("active") is False or item.get("deleted_at"):
        return None
    uuid, currency = item.get("uuid"), item.get("currency")
    portfolio = item.get("retail_portfolio_id")
    if not isinstance(uuid, str) or not isinstance(currency, str) or not currency:
        raise unknown("account uuid/currency", (uuid, currency))
    if not isinstance(portfolio, str) or not portfolio:
        raise unknown("account retail_portfolio_id", portfolio)
    return Wallet(
        uuid=uuid,
        currency=currency.upper(),
        available=_amount(item.get("available_balance"), "available_balance"),
        hold=_amount(item.get("hold"), "hold") if item.get("hold") is not None else _ZERO,
        portfolio=portfolio,
    )


@dataclass(frozen=True, slots=True)
class Book:
    """Top of one product's book (``best_bid_ask`` pricebook)."""

    bid: Decimal | None
    ask: Decimal | None
    at: datetime | None

    @property
    def mid(self) -> Decimal | None:
        if self.bid is None or self.ask is None:
            return None
        return (self.bid + self.ask) / 2


def books_from_wire(body: object) -> dict[str, Book]:
    """``GET /best_bid_ask`` -> ``{"pricebooks": [{"product_id", "bids": [{"price",
    "size"}], "asks": [...], "time"}]}`` (get-best-bid-ask reference)."""
    books = body.get("pricebooks") if isinstance(body, dict) else None
    if not isinstance(books, list):
        raise unknown("best_bid_ask answer", sorted(body) if isinstance(body, dict) else body)
    result: dict[str, Book] = {}
    for book in books:
        if not isinstance(book, dict):
            raise unknown("pricebook", book)
        product = from_product_id(book.get("product_id"))

        def top(side: str, book: dict[str, Any] = book) -> Decimal | None:
            levels = book.get(side)
            if not isinstance(levels, list):
                raise unknown(f"pricebook {side}", levels)
            if not levels:
                return None
            first = levels[0]
            if not isinstance(first, dict):
                raise unknown(f"pricebook {side} level", first)
            return dec(first.get("price"), f"{side}.price")

        result[product] = Book(top("bids"), top("asks"), opt_ts(book.get("time"), "time"))
    return result


def prices_from_products(body: object) -> dict[str, Decimal]:
    """``GET /products?product_ids=...`` -> the last trade ``price`` per product."""
    products = body.get("products") if isinstance(body, dict) else None
    if not isinstance(products, list):
        raise unknown("products answer", sorted(body) if isinstance(body, dict) else body)
    result: dict[str, Decimal] = {}
    for product in products:
        if not isinstance(product, dict):
            raise unknown("product", product)
        price = opt_dec(product.get("price"), "price")
        if price is not None:
            result[from_product_id(product.get("product_id"))] = price
    return result


def quotes_from(
    books: dict[str, Book], prices: dict[str, Decimal], symbols: list[str], now: datetime
) -> dict[str, Quote]:
    """Quotes for the symbols Coinbase priced; a symbol without a two-sided book is absent."""
    result: dict[str, Quote] = {}
    for symbol in symbols:
        book = books.get(to_product_id(symbol))
        if book is None or book.bid is None or book.ask is None:
            continue
        last = prices.get(to_product_id(symbol))
        result[symbol] = Quote(
            symbol=symbol,
            bid=book.bid,
            ask=book.ask,
            last=last if last is not None else (book.bid + book.ask) / 2,
            as_of=book.at or now,
        )
    return result


def cost_basis_from_breakdown(body: object) -> dict[str, tuple[Decimal, Decimal]]:
    """``GET /portfolios/{uuid}`` -> {asset: (quantity, cost basis in USD)} of spot positions.

    The breakdown's ``spot_positions[]`` carry ``asset``, ``total_balance_crypto`` and
    ``cost_basis: {"value", "currency"}`` (get-portfolio-breakdown reference); the wallets
    endpoint has no cost basis at all.
    """
    breakdown = body.get("breakdown") if isinstance(body, dict) else None
    spots = breakdown.get("spot_positions") if isinstance(breakdown, dict) else None
    if not isinstance(spots, list):
        raise unknown("portfolio breakdown", sorted(body) if isinstance(body, dict) else body)
    result: dict[str, tuple[Decimal, Decimal]] = {}
    for spot in spots:
        if not isinstance(spot, dict) or not isinstance(spot.get("asset"), str):
            raise unknown("spot position", spot)
        if spot.get("is_cash") is True:
            continue
        basis = spot.get("cost_basis")
        if not isinstance(basis, dict):
            raise unknown("spot position cost_basis", basis)
        currency = basis.get("currency")
        if currency not in (None, "", CASH_CURRENCY):
            raise unknown("cost_basis currency", currency)
        quantity = dec(spot.get("total_balance_crypto"), "total_balance_crypto")
        result[str(spot["asset"]).upper()] = (quantity, dec(basis.get("value"), "cost_basis"))
    return result


def position_from(
    wallet: Wallet,
    price: Decimal,
    basis: tuple[Decimal, Decimal] | None,
    now: datetime,
) -> Position:
    """A non-USD wallet as a position in its ``<CUR>-USD`` pair, valued at the book's mid.

    The average cost is the breakdown's cost basis over the quantity it was computed for; a
    holding the breakdown does not list is a contradiction between two Coinbase answers.
    """
    if basis is None:
        raise unknown("cost basis for a held currency", wallet.currency)
    basis_quantity, basis_value = basis
    avg_cost = basis_value / basis_quantity if basis_quantity else _ZERO
    market_value = wallet.total * price
    return Position(
        symbol=f"{wallet.currency}-{CASH_CURRENCY}",
        asset_class=AssetClass.crypto,
        quantity=wallet.total,
        avg_cost=avg_cost,
        current_price=price,
        market_value=market_value,
        unrealized_pl=market_value - avg_cost * wallet.total,
        as_of=now,
    )


# --- transactions ------------------------------------------------------------------------

# trade_type values of fills (list-fills reference; hummingbot ExchangeTradeTypeEnum).
_TRADE_TYPES = frozenset({"FILL", "REVERSAL", "CORRECTION", "SYNTHETIC"})


def transaction_from_fill(item: object) -> Transaction:
    """A fill (``GET /orders/historical/fills``) as a cash movement: a buy pays the notional
    and the commission, a sell receives the notional less the commission."""
    if not isinstance(item, dict):
        raise unknown("fill", type(item).__name__)
    trade_type = item.get("trade_type")
    if trade_type not in _TRADE_TYPES:
        raise unknown("trade_type", trade_type)
    side = _SIDES.get(str(item.get("side")))
    if side is None:
        raise unknown("fill side", item.get("side"))
    price = dec(item.get("price"), "price")
    size = dec(item.get("size"), "size")
    # size_in_quote: the size is in the quote currency (list-fills reference).
    quantity = size / price if item.get("size_in_quote") is True and price else size
    notional = quantity * price
    commission = opt_dec(item.get("commission"), "commission") or _ZERO
    amount = -(notional + commission) if side is OrderSide.buy else notional - commission
    symbol = from_product_id(item.get("product_id"))
    entry = item.get("entry_id") or item.get("trade_id")
    if not isinstance(entry, str) or not entry:
        raise unknown("fill entry_id", entry)
    return Transaction(
        transaction_id=entry,
        type=side.value,
        occurred_at=ts(item.get("trade_time"), "trade_time"),
        amount=amount,
        symbol=symbol,
        quantity=quantity,
        price=price,
        description=f"{side.value} {plain(quantity)} {symbol} @ {plain(price)}"
        + (f" (commission {plain(commission)})" if commission else ""),
    )


# Coinbase App (v2) transaction types that move cash in or out of the USD wallet
# (https://docs.cdp.coinbase.com/coinbase-app/track-apis/transactions; the full list of
# types, e.g. in JKorf/Coinbase.Net TransactionType, also has trades, sends, staking...).
# Trades are read from fills instead, so they are not counted twice.
_CASH_TYPES = {"fiat_deposit": "deposit", "fiat_withdrawal": "withdrawal"}


def transaction_from_v2(item: object) -> Transaction | None:
    """A v2 wallet transaction; None for a type that is not a cash deposit or withdrawal."""
    if not isinstance(item, dict):
        raise unknown("transaction", type(item).__name__)
    kind = _CASH_TYPES.get(str(item.get("type")))
    if kind is None or item.get("status") not in ("completed", None):
        return None
    amount = item.get("amount")
    if not isinstance(amount, dict) or amount.get("currency") != CASH_CURRENCY:
        raise unknown("cash transaction amount", amount)
    identifier = item.get("id")
    if not isinstance(identifier, str) or not identifier:
        raise unknown("transaction id", identifier)
    details = item.get("details")
    title = details.get("title") if isinstance(details, dict) else None
    return Transaction(
        transaction_id=identifier,
        type=kind,
        occurred_at=ts(item.get("created_at"), "created_at"),
        amount=dec(amount.get("amount"), "amount.amount"),
        description=title if isinstance(title, str) else "",
    )


# --- errors ------------------------------------------------------------------------------


def error_message(response: httpx.Response) -> str:
    """The message of a v3 (``{"error", "error_details", "message"}``) or v2
    (``{"errors": [{"id", "message"}]}``) error body, else the body text or status line."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:200] if text else (response.reason_phrase or f"HTTP {response.status_code}")
    if isinstance(body, dict):
        listed = body.get("errors")
        if isinstance(listed, list) and listed and isinstance(listed[0], dict):
            message = listed[0].get("message") or listed[0].get("id")
            if isinstance(message, str) and message:
                return message
        for key in ("message", "error_details", "error"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
    return response.reason_phrase or f"HTTP {response.status_code}"


def classify(response: httpx.Response, method: str) -> errors.BrokerError | None:
    """Coinbase's reading of a 4xx (429 and 5xx are mapped generically by ``http``).

    401: the key was refused (wrong, expired JWT, revoked or deleted key). 403: the key
    lacks a permission (the SDK's rest_base.handle_exception: "Missing required scopes"),
    which is a refusal of this request, not of the connection. 404: what was asked for does
    not exist.
    """
    status = response.status_code
    message = error_message(response)
    if status == 401:
        return errors.AuthenticationFailed(f"Coinbase refused the API key: {message}", broker=SLUG)
    if status == 403:
        return errors.Rejected(
            f"the Coinbase API key lacks a permission this needs: {message}", broker=SLUG
        )
    if status == 404:
        return errors.OrderNotFound(message, broker=SLUG)
    return errors.Rejected(message, broker=SLUG)
