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
  extended sessions (same page), for equity limit orders only (``extended_duration``).
* Short sales are their own sides: ``sell_short`` opens a short, ``buy_to_cover`` closes it
  (place-equity-order); a plain ``buy`` against a short is refused (``UnexpectedBuyOrder``,
  https://docs.tradier.com/docs/error-responses). There are no dollar-amount orders: the form
  has ``quantity`` only, whole shares from 1 to 10,000,000 (``IncorrectOrderQuantity``).
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, date, datetime
from datetime import time as clock_time
from decimal import ROUND_FLOOR, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from app.brokers import errors
from app.brokers.base import (
    AssetClass,
    Balances,
    BrokerOrder,
    BrokerOrderLeg,
    ExpirationType,
    Fill,
    Greeks,
    InvalidOptionSymbol,
    OptionContract,
    OptionExpiration,
    OptionQuote,
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
# Multi-leg order types: the sign of the net price is the type, ``price`` is positive
# (https://documentation.tradier.com/brokerage-api/trading/place-multileg-order).
_MULTILEG_TYPES: dict[str, tuple[OrderType, PriceEffect | None]] = {
    "market": (OrderType.market, None),
    "debit": (OrderType.limit, PriceEffect.debit),
    "credit": (OrderType.limit, PriceEffect.credit),
    "even": (OrderType.limit, PriceEffect.even),
}
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
# Option sides carry the position effect (place-option-order, place-multileg-order).
_OPTION_SIDES = {
    (OrderSide.buy, PositionEffect.open): "buy_to_open",
    (OrderSide.buy, PositionEffect.close): "buy_to_close",
    (OrderSide.sell, PositionEffect.open): "sell_to_open",
    (OrderSide.sell, PositionEffect.close): "sell_to_close",
}
_SIDE_EFFECTS = {wire: effect for (_side, effect), wire in _OPTION_SIDES.items()}
# Equity sides: a short sale opens, a cover closes; plain buy and sell say nothing more.
_EQUITY_SIDES = {
    (OrderSide.buy, None): "buy",
    (OrderSide.sell, None): "sell",
    (OrderSide.buy, PositionEffect.open): "buy",
    (OrderSide.sell, PositionEffect.close): "sell",
    (OrderSide.sell, PositionEffect.open): "sell_short",
    (OrderSide.buy, PositionEffect.close): "buy_to_cover",
}
_EQUITY_EFFECTS = {"sell_short": PositionEffect.open, "buy_to_cover": PositionEffect.close}
MAX_LEGS = 4  # "up to 4 legs", indices 0-3 (place-multileg-order)
# Order classes (reference/response/orders): equity, option and multileg are orders we model;
# the others are multi-order structures this adapter does not model (skipped by listings).
SINGLE_CLASSES = frozenset({"equity", "option", "multileg"})
UNMODELED_CLASSES = frozenset({"combo", "oto", "oco", "otoco"})

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
    if kind == "multileg":
        return multileg_from_wire(body)
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
    effect = _EQUITY_EFFECTS.get(str(body.get("side")))
    if kind == "option":
        symbol = wire_contract(symbol).symbol
        effect = _SIDE_EFFECTS.get(str(body.get("side")))
        if effect is None:
            raise unknown("option side", body.get("side"))
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
        reject_reason=_reject_reason(body, status),
        position_effect=effect,
    )


def _reject_reason(body: dict[str, Any], status: OrderStatus) -> str | None:
    if status is not OrderStatus.rejected:
        return None
    reason = body.get("reason_description")
    return reason if isinstance(reason, str) and reason else "rejected by the broker"


def wire_contract(symbol: object) -> OptionContract:
    """An OCC symbol Tradier sent (unpadded) as a contract; anything else is refused."""
    if not isinstance(symbol, str):
        raise unknown("option symbol", symbol)
    try:
        return OptionContract.parse(symbol)
    except InvalidOptionSymbol:
        raise unknown("option symbol", symbol) from None


def _leg_from_wire(item: dict[str, Any], units: Decimal) -> BrokerOrderLeg:
    """One entry of a multileg order's ``leg`` list (each an option order object of its own,
    https://docs.tradier.com/docs/orders); ``units`` is the order's strategy quantity."""
    wire_side = str(item.get("side"))
    effect = _SIDE_EFFECTS.get(wire_side)
    if effect is None:
        raise unknown("leg side", item.get("side"))
    quantity = dec(item.get("quantity"), "leg quantity")
    ratio = quantity / units
    if ratio != ratio.to_integral_value() or ratio < 1:
        raise unknown("leg quantity", item.get("quantity"))
    filled = opt_dec(item.get("exec_quantity"), "leg exec_quantity") or _ZERO
    avg = opt_dec(item.get("avg_fill_price"), "leg avg_fill_price")
    leg_id = item.get("id")
    return BrokerOrderLeg(
        symbol=wire_contract(item.get("option_symbol")).symbol,
        side=_SIDES[wire_side],
        ratio=int(ratio),
        position_effect=effect,
        filled_quantity=filled,
        avg_fill_price=avg if filled > _ZERO and avg is not None else None,
        broker_leg_id=None if leg_id is None else order_id(leg_id),
    )


def multileg_from_wire(body: dict[str, Any]) -> BrokerOrder:
    """A ``class: multileg`` order: one order, its legs in ``leg`` (one object or a list).

    The strategy quantity is the greatest common divisor of the legs' quantities (the form
    sends per-leg quantities only, ``quantity[n]``), each leg's ratio its quantity divided by
    that, and the filled strategy units the fewest any leg has filled. ``type`` carries the
    sign of the net price (debit, credit, even; market has none); ``price`` and the average
    fill price are read unsigned. A credit is our ``sell``, anything else ``buy``.
    """
    found = _MULTILEG_TYPES.get(str(body.get("type")))
    if found is None:
        raise unknown("multileg order type", body.get("type"))
    order_type, price_effect = found
    tif = _DURATIONS.get(str(body.get("duration")))
    if tif is None:
        raise unknown("duration", body.get("duration"))
    raw_legs = body.get("leg")
    if isinstance(raw_legs, dict):
        raw_legs = [raw_legs]
    if not isinstance(raw_legs, list) or not raw_legs:
        raise unknown("multileg legs", raw_legs)
    if not all(isinstance(item, dict) for item in raw_legs):
        raise unknown("multileg legs", raw_legs)
    quantities = [dec(item.get("quantity"), "leg quantity") for item in raw_legs]
    if any(q <= 0 or q != q.to_integral_value() for q in quantities):
        raise unknown("leg quantities", [str(q) for q in quantities])
    units = Decimal(math.gcd(*(int(q) for q in quantities)))
    legs = tuple(_leg_from_wire(item, units) for item in raw_legs)
    filled = min(
        (leg.filled_quantity / leg.ratio).to_integral_value(rounding=ROUND_FLOOR) for leg in legs
    )
    status = order_status(body.get("status"), units, filled)
    avg = opt_dec(body.get("avg_fill_price"), "avg_fill_price")
    if filled > _ZERO and not avg:
        avg = net_price(legs)
    underlying = body.get("symbol")
    if not isinstance(underlying, str) or not underlying:
        raise unknown("symbol", underlying)
    created = ts(body.get("create_date"), "create_date")
    updated_raw = body.get("transaction_date")
    price = opt_dec(body.get("price"), "price")
    limit_price: Decimal | None = None
    if price_effect is PriceEffect.even:
        limit_price = _ZERO
    elif price_effect is not None:
        limit_price = abs(price) if price is not None else None
    return BrokerOrder(
        broker_order_id=order_id(body.get("id")),
        client_order_id=from_tag(body.get("tag")),
        symbol=underlying,
        side=OrderSide.sell if price_effect is PriceEffect.credit else OrderSide.buy,
        quantity=units,
        filled_quantity=filled,
        avg_fill_price=abs(avg) if filled > _ZERO and avg is not None else None,
        order_type=order_type,
        time_in_force=tif,
        status=status,
        limit_price=limit_price,
        stop_price=None,
        created_at=created,
        updated_at=ts(updated_raw, "transaction_date") if updated_raw else created,
        reject_reason=_reject_reason(body, status),
        legs=legs,
        price_effect=price_effect,
    )


def net_price(legs: tuple[BrokerOrderLeg, ...]) -> Decimal | None:
    """The net price per strategy unit the legs' fills make (positive: a debit)."""
    total = _ZERO
    for leg in legs:
        if leg.avg_fill_price is None:
            return None
        sign = 1 if leg.side is OrderSide.buy else -1
        total += sign * leg.ratio * leg.avg_fill_price
    return total


def order_to_form(order: OrderRequest, now: datetime | None = None) -> dict[str, str]:
    """The ``POST /v1/accounts/{id}/orders`` form for an equity, option or multileg order.

    Equity (https://documentation.tradier.com/brokerage-api/trading/place-equity-order):
    class, symbol, side (buy|buy_to_cover|sell|sell_short), quantity (whole shares), type,
    duration (day|gtc|pre|post), price, stop, tag. Options and multileg: ``option_form`` and
    ``multileg_form``. Anything Tradier cannot express raises ``UnsupportedOrder`` before a
    request is sent. ``now`` picks the extended session of an ``extended_hours`` order.
    """
    if order.notional is not None:
        raise errors.UnsupportedOrder(
            "Tradier has no dollar-amount orders: give a quantity of whole shares", broker=SLUG
        )
    if order.is_multi_leg:
        return multileg_form(order)
    if is_option_symbol(order.symbol):
        return option_form(order)
    if asset_class_of(order.symbol) is not AssetClass.equity:
        raise errors.UnsupportedOrder("only equity and option orders go to Tradier", broker=SLUG)
    _check_common(order, "shares", extended_ok=True)
    side = _EQUITY_SIDES[(order.side, order.position_effect)]
    if side == "sell_short" and order.time_in_force is TimeInForce.gtc:
        # ShortOrderIsGtc: "You cannot place short stock orders with GTC, only day orders are
        # allowed" (https://docs.tradier.com/docs/error-responses).
        raise errors.UnsupportedOrder("Tradier takes short sales as day orders only", broker=SLUG)
    form = {
        "class": "equity",
        "symbol": order.symbol,
        "side": side,
        "quantity": plain(order.quantity),
        "type": order.order_type.value,
        "duration": (
            extended_duration(order, now) if order.extended_hours else order.time_in_force.value
        ),
        "tag": to_tag(order.client_order_id),
    }
    if order.limit_price is not None:
        form["price"] = plain(order.limit_price)
    if order.stop_price is not None:
        form["stop"] = plain(order.stop_price)
    return form


def _check_common(order: OrderRequest, unit: str, *, extended_ok: bool = False) -> None:
    if order.quantity != order.quantity.to_integral_value() or order.quantity <= 0:
        raise errors.UnsupportedOrder(f"Tradier trades whole {unit} only", broker=SLUG)
    if order.time_in_force not in (TimeInForce.day, TimeInForce.gtc):
        raise errors.UnsupportedOrder(
            f"Tradier has no {order.time_in_force.value} duration", broker=SLUG
        )
    if order.extended_hours and not extended_ok:
        # QuantConnect's live tests against Tradier: "Pre/Post orders are only allowed for
        # equities limit orders" (QuantConnect/Lean.Brokerages.Tradier, TradierBrokerageTests).
        raise errors.UnsupportedOrder(
            "Tradier's extended sessions (pre/post) take equity orders only", broker=SLUG
        )


EASTERN = ZoneInfo("America/New_York")
REGULAR_OPEN = clock_time(9, 30)
REGULAR_CLOSE = clock_time(16, 0)


def extended_duration(order: OrderRequest, now: datetime | None) -> str:
    """``pre`` or ``post``: the extended session to come, by the New York clock.

    Tradier's ``pre``/``post`` durations are day orders for one extended session
    (place-equity-order; sessions 04:00-09:30 and 16:00-20:00 ET, order entry until 09:24 and
    19:55 per documentation.tradier.com/brokerage-api/trading/getting-started, as cited by
    QuantConnect's Tradier brokerage). Only limit orders: "Outside of market hours this order
    is required to be placed at a limit price" (``LimitOrderRequiredOutsideMarketHours``,
    https://docs.tradier.com/docs/error-responses), and only for the day: no GTC form exists.
    Before the regular open the order is for the pre-market, from the close for the
    post-market; during the regular session there is no Tradier duration meaning "this
    session and the extended one", so the order is refused rather than silently narrowed.
    Outside the entry windows Tradier itself refuses (``... market no longer available``,
    classified ``MarketClosed``).
    """
    if order.order_type is not OrderType.limit:
        raise errors.UnsupportedOrder(
            "Tradier takes extended-hours (pre/post) orders as limit orders only", broker=SLUG
        )
    if order.time_in_force is not TimeInForce.day:
        raise errors.UnsupportedOrder(
            "Tradier's extended-hours orders last one session: use time in force day",
            broker=SLUG,
        )
    local = (now or datetime.now(UTC)).astimezone(EASTERN).time()
    if local < REGULAR_OPEN:
        return "pre"
    if local >= REGULAR_CLOSE:
        return "post"
    raise errors.UnsupportedOrder(
        "during the regular session Tradier has no extended-hours duration: place a day order,"
        " or a post-market order from 16:00 New York time",
        broker=SLUG,
    )


def order_contract(symbol: str) -> OptionContract:
    """A contract of an order we are about to send; a malformed symbol is refused."""
    try:
        return OptionContract.parse(symbol)
    except InvalidOptionSymbol as exc:
        raise errors.UnsupportedOrder(str(exc), broker=SLUG) from None


def option_side(side: OrderSide, effect: PositionEffect | None) -> str:
    """``buy_to_open`` ... ``sell_to_close``: Tradier needs the position effect on every
    option order (place-option-order)."""
    if effect is None:
        raise errors.UnsupportedOrder(
            "a Tradier option order needs a position effect (open or close)", broker=SLUG
        )
    return _OPTION_SIDES[(side, effect)]


def option_form(order: OrderRequest) -> dict[str, str]:
    """A single-leg option order (https://documentation.tradier.com/brokerage-api/trading/
    place-option-order): ``class=option``, ``symbol`` = the underlying, ``option_symbol`` =
    the unpadded OCC symbol, ``side`` with the position effect, whole contracts."""
    contract = order_contract(order.symbol)
    _check_common(order, "contracts")
    form = {
        "class": "option",
        "symbol": contract.underlying,
        "option_symbol": contract.symbol,
        "side": option_side(order.side, order.position_effect),
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


def multileg_type(order: OrderRequest) -> str:
    """Our order type and price effect as Tradier's multileg ``type``: market, or the sign of
    a limit price as debit, credit or even."""
    if order.order_type is OrderType.market:
        if order.limit_price is not None:
            raise errors.UnsupportedOrder("a market order has no limit price", broker=SLUG)
        return "market"
    if order.order_type is not OrderType.limit:
        raise errors.UnsupportedOrder(
            "Tradier multileg orders are market, debit, credit or even", broker=SLUG
        )
    if order.price_effect is None or order.limit_price is None:
        raise errors.UnsupportedOrder(
            "a multileg limit order needs a limit price and its price effect", broker=SLUG
        )
    if order.limit_price < 0:
        raise errors.UnsupportedOrder("the net limit price is unsigned", broker=SLUG)
    if order.price_effect is PriceEffect.even:
        if order.limit_price != 0:
            raise errors.UnsupportedOrder("an even order has a net price of 0", broker=SLUG)
        return "even"
    if order.limit_price == 0:
        raise errors.UnsupportedOrder(
            f"a {order.price_effect.value} order needs a net price above 0", broker=SLUG
        )
    return order.price_effect.value


def multileg_form(order: OrderRequest) -> dict[str, str]:
    """A multileg order (https://documentation.tradier.com/brokerage-api/trading/
    place-multileg-order): ``class=multileg``, ``symbol`` = the legs' underlying, ``type``
    (market|debit|credit|even) with a positive ``price`` for debit and credit, and per leg
    ``option_symbol[n]``, ``side[n]``, ``quantity[n]`` (ratio x strategy quantity), n = 0..3.
    """
    _check_common(order, "contracts")
    if not 2 <= len(order.legs) <= MAX_LEGS:
        raise errors.UnsupportedOrder(
            f"a Tradier multileg order has 2 to {MAX_LEGS} legs", broker=SLUG
        )
    contracts = [order_contract(leg.symbol) for leg in order.legs]
    underlyings = {c.underlying for c in contracts}
    if len(underlyings) != 1:
        raise errors.UnsupportedOrder(
            "every leg of a Tradier multileg order is on one underlying", broker=SLUG
        )
    if len({c.symbol for c in contracts}) != len(contracts):
        raise errors.UnsupportedOrder("the legs name distinct contracts", broker=SLUG)
    if any(leg.ratio < 1 for leg in order.legs):
        raise errors.UnsupportedOrder("leg ratios are whole numbers from 1", broker=SLUG)
    type_ = multileg_type(order)
    [underlying] = underlyings
    form = {
        "class": "multileg",
        "symbol": underlying,
        "type": type_,
        "duration": order.time_in_force.value,
        "tag": to_tag(order.client_order_id),
    }
    if type_ in ("debit", "credit") and order.limit_price is not None:
        form["price"] = plain(order.limit_price)  # positive: the sign is the type
    for index, (leg, contract) in enumerate(zip(order.legs, contracts, strict=True)):
        form[f"option_symbol[{index}]"] = contract.symbol
        form[f"side[{index}]"] = option_side(leg.side, leg.position_effect)
        form[f"quantity[{index}]"] = plain(order.quantity * leg.ratio)
    return form


def legs_from_form(form: dict[str, str]) -> list[tuple[str, str, str]]:
    """The indexed ``(option_symbol[n], side[n], quantity[n])`` of a multileg form, in order
    (what the fake reads, and what the round-trip property test checks)."""
    legs = []
    for index in range(MAX_LEGS + 1):
        symbol = form.get(f"option_symbol[{index}]")
        if symbol is None:
            break
        legs.append((symbol, form.get(f"side[{index}]", ""), form.get(f"quantity[{index}]", "")))
    return legs


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
    An OCC symbol is an option position: ``quantity`` is signed (negative = short, as in
    account history, https://docs.tradier.com/docs/history), ``cost_basis`` is the whole
    position's (premium x contracts x multiplier, negative for a short), and there is no
    multiplier field, so the standard 100 is taken; prices are per share of the contract and
    ``market_value`` = price x quantity x multiplier.
    """
    symbol = item.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise unknown("position symbol", symbol)
    quantity = dec(item.get("quantity"), "quantity")
    cost = dec(item.get("cost_basis"), "cost_basis")
    contract = wire_contract(symbol) if is_option_symbol(symbol) else None
    multiplier = contract.multiplier if contract is not None else Decimal(1)
    avg = (cost / (quantity * multiplier)) if quantity else _ZERO
    price = quote.last if quote is not None else avg
    market_value = quantity * price * multiplier
    return Position(
        symbol=contract.symbol if contract is not None else symbol,
        asset_class=AssetClass.option if contract is not None else asset_class_of(symbol),
        quantity=quantity,
        avg_cost=abs(avg),
        current_price=price,
        market_value=market_value,
        unrealized_pl=market_value - cost,
        as_of=now,
        contract=contract,
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
    elif kind == "option" and detail.get("option_type") == "OPTEXP":
        # https://docs.tradier.com/docs/history: ``{"type": "option", "option":
        # {"option_type": "OPTEXP", "description": "Expired", "quantity": -1.0}}``. As
        # documented it names no contract and has no id (the id above is positional), so
        # it is listed as an expiration without a symbol; the lifecycle sweep makes it an
        # order only when the one contract it can be is known (app/services/lifecycle.py,
        # ``_match_by_date``; README, "Option lifecycle events").
        mapped = "option_expiration"
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


# --- options: expirations, chains, preview --------------------------------------------------

# ``expiration_type`` values seen in Tradier answers (expirations with ``expirationType=true``
# and chain contracts; jiak94/asynctradier tests/test_tradier.py records standard, weeklys and
# quarterlys; eom is Tradier's end-of-month series).
_EXPIRATION_TYPES = {
    "standard": ExpirationType.standard,
    "weeklys": ExpirationType.weekly,
    "quarterlys": ExpirationType.quarterly,
    "eom": ExpirationType.end_of_month,
}
GREEKS_SOURCE = "orats"  # "Greek and IV data is provided by ORATS" (get-options-chains)


def expiration_day(value: object, field: str = "expiration date") -> date:
    if not isinstance(value, str):
        raise unknown(field, value)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise unknown(field, value) from None


def expirations_from_wire(body: object) -> list[OptionExpiration] | None:
    """``GET /v1/markets/options/expirations?expirationType=true`` (get-options-expirations):
    ``{"expirations": {"expiration": [{"date", "expiration_type", ...}]}}``, or without the
    flag ``{"expirations": {"date": [...]}}`` (then the type is unknown: ``other``).
    ``{"expirations": null}`` (an underlying without options) is None."""
    if not isinstance(body, dict) or "expirations" not in body:
        raise unknown("expirations payload", body)
    container = body["expirations"]
    if container is None or container == "null":
        return None
    if not isinstance(container, dict):
        raise unknown("expirations payload", container)
    result: list[OptionExpiration] = []
    if "expiration" in container:
        for item in items(body, "expirations", "expiration"):
            raw = item.get("expiration_type")
            kind = (
                ExpirationType.other
                if raw is None
                else WIRE.lookup(_EXPIRATION_TYPES, raw, "expiration_type")
            )
            result.append(OptionExpiration(expiration_day(item.get("date")), kind))
    else:
        dates = container.get("date")
        listed = dates if isinstance(dates, list) else [] if dates is None else [dates]
        result = [OptionExpiration(expiration_day(d), ExpirationType.other) for d in listed]
    return sorted(result, key=lambda e: e.expiration)


def _greeks(raw: object) -> Greeks | None:
    """``greeks: {delta, gamma, theta, vega, rho, phi, bid_iv, mid_iv, ask_iv, smv_vol,
    updated_at}`` (ORATS). ``iv`` is ``mid_iv``, else ORATS's smoothed ``smv_vol``: the mid
    is 0 when there is no two-sided market."""
    if raw is None or raw == "null":
        return None
    if not isinstance(raw, dict):
        raise unknown("greeks", raw)
    mid = opt_dec(raw.get("mid_iv"), "greeks.mid_iv", text=False)
    smooth = opt_dec(raw.get("smv_vol"), "greeks.smv_vol", text=False)
    return Greeks(
        delta=opt_dec(raw.get("delta"), "greeks.delta", text=False),
        gamma=opt_dec(raw.get("gamma"), "greeks.gamma", text=False),
        theta=opt_dec(raw.get("theta"), "greeks.theta", text=False),
        vega=opt_dec(raw.get("vega"), "greeks.vega", text=False),
        rho=opt_dec(raw.get("rho"), "greeks.rho", text=False),
        iv=mid if mid else smooth,
    )


def option_quote_from_wire(item: dict[str, Any], now: datetime) -> OptionQuote:
    """One chain contract (get-options-chains): ``symbol`` (unpadded OCC), ``underlying``,
    ``root_symbol``, ``strike``, ``option_type``, ``expiration_date``, ``contract_size``,
    ``bid``/``ask``/``last`` (null when absent), ``open_interest``, ``bid_date``/``ask_date``
    /``trade_date`` (epoch ms; ``now`` when none is set) and ``greeks`` when asked for with
    ``greeks=true``."""
    contract = wire_contract(item.get("symbol"))
    underlying = item.get("underlying")
    size = opt_dec(item.get("contract_size"), "contract_size", text=False)
    if isinstance(underlying, str) and underlying and underlying != contract.underlying:
        contract = OptionContract.parse(
            contract.symbol, underlying=underlying, multiplier=size or Decimal(100)
        )
    elif size is not None and size != contract.multiplier:
        contract = OptionContract.parse(contract.symbol, multiplier=size)
    if item.get("option_type") != contract.right.value:
        raise unknown("option_type", item.get("option_type"))
    if expiration_day(item.get("expiration_date")) != contract.expiration:
        raise unknown("expiration_date", item.get("expiration_date"))
    stamps = [epoch_ms(item[k], k) for k in ("bid_date", "ask_date", "trade_date") if item.get(k)]
    interest = item.get("open_interest")
    if interest is not None and (isinstance(interest, bool) or not isinstance(interest, int)):
        raise unknown("open_interest", interest)
    return OptionQuote(
        contract=contract,
        bid=opt_dec(item.get("bid"), "bid", text=False),
        ask=opt_dec(item.get("ask"), "ask", text=False),
        last=opt_dec(item.get("last"), "last", text=False),
        open_interest=interest,
        greeks=_greeks(item.get("greeks")),
        source=GREEKS_SOURCE if item.get("greeks") else "broker",
        as_of=max(stamps) if stamps else now,
    )


def chain_from_wire(body: object, now: datetime) -> list[OptionQuote]:
    """``{"options": {"option": [...]}}``; ``{"options": null}`` (no such expiration) is
    empty."""
    return [option_quote_from_wire(item, now) for item in items(body, "options", "option")]


def preview_from_wire(
    body: object, direction: PriceEffect, warnings: tuple[str, ...] = ()
) -> OrderPreview:
    """``preview=true`` (https://docs.tradier.com/docs/preview): ``{"order": {"status": "ok",
    "commission", "cost", "fees", "order_cost", "margin_change", "result", ...}}``, or the
    refusals as ``{"errors": {"error": ...}}`` (returned as rejections, not raised).

    ``order_cost`` is the premium (or share value), ``cost`` adds commission and fees
    (3.49 + 31.2251 = 34.7151 in the documented example). The sign of ``order_cost`` for a
    credit is not documented: its magnitude is read and the direction is the order's own.
    ``margin_change`` is read as the requirement added (buying power taken).
    """
    messages = error_messages(body)
    if messages is not None:
        return OrderPreview(
            estimated_cash_change=_ZERO,
            direction=direction,
            buying_power_change=None,
            fees=_ZERO,
            warnings=warnings,
            rejections=tuple(messages),
            source=PreviewSource.broker,
        )
    if not isinstance(body, dict) or not isinstance(body.get("order"), dict):
        raise unknown("preview payload", body)
    found = body["order"]
    if found.get("status") != "ok":
        raise unknown("preview status", found.get("status"))
    fees = dec(found.get("commission") or _ZERO, "commission") + dec(
        found.get("fees") or _ZERO, "fees"
    )
    premium = abs(dec(found.get("order_cost") or _ZERO, "order_cost"))
    if direction is PriceEffect.debit:
        cash = -premium - fees
    elif direction is PriceEffect.credit:
        cash = premium - fees
    else:
        cash = -fees
    margin = opt_dec(found.get("margin_change"), "margin_change")
    rejections: tuple[str, ...] = ()
    if found.get("result") is False:
        rejections = ("Tradier's preview says the order would not be accepted",)
    return OrderPreview(
        estimated_cash_change=cash,
        direction=direction,
        buying_power_change=None if margin is None else -margin,
        fees=fees,
        warnings=warnings,
        rejections=rejections,
        source=PreviewSource.broker,
    )


def order_direction(order: OrderRequest) -> PriceEffect:
    """Which way cash moves: the price effect of a multileg order, else buy = debit."""
    if order.is_multi_leg:
        if order.price_effect is not None:
            return order.price_effect
        return PriceEffect.credit if order.side is OrderSide.sell else PriceEffect.debit
    return PriceEffect.debit if order.side is OrderSide.buy else PriceEffect.credit


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


LegState = dict[str, tuple[Decimal, Decimal]]  # leg key -> (filled quantity, average price)


def leg_key(order: BrokerOrder, index: int) -> str:
    leg = order.legs[index]
    return f"{order.broker_order_id}:{leg.broker_leg_id or index}"


def leg_fills(order: BrokerOrder, seen: LegState) -> tuple[Fill, ...]:
    """The leg fills of a multileg order since ``seen`` (updated in place).

    Tradier's order events carry no legs: a leg's event names its parent in ``parent_id``
    and has no symbol (https://docs.tradier.com/docs/account-streaming-responses), so the
    legs are read over REST and each leg's new fills are the growth of its ``exec_quantity``
    since the last read, priced from the change in its average fill price.
    """
    fills: list[Fill] = []
    for index, leg in enumerate(order.legs):
        key = leg_key(order, index)
        before, before_avg = seen.get(key, (_ZERO, _ZERO))
        now = leg.filled_quantity
        if now <= before or leg.avg_fill_price is None:
            continue
        added = now - before
        price = (now * leg.avg_fill_price - before * before_avg) / added
        seen[key] = (now, leg.avg_fill_price)
        fills.append(
            Fill(
                fill_id=f"{key}:{plain(now)}",
                quantity=added,
                price=price.quantize(Decimal("0.0001")).normalize(),
                occurred_at=order.updated_at,
                leg_symbol=leg.symbol,
            )
        )
    return tuple(fills)


def remember_legs(order: BrokerOrder, seen: LegState) -> None:
    """Record what a REST read (a catch-up) showed, so later events report only news."""
    for index, leg in enumerate(order.legs):
        if leg.avg_fill_price is not None:
            seen[leg_key(order, index)] = (leg.filled_quantity, leg.avg_fill_price)


def event_order_id(event: dict[str, Any]) -> str:
    """The order an event is about: a leg's event names its multileg order in ``parent_id``."""
    parent = event.get("parent_id")
    if parent not in (None, "", 0):
        return order_id(parent)
    return order_id(event.get("id"))


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
        # The side does not fit the position: a short is covered with buy_to_cover, a long is
        # not sold short, a cover needs a short (error-responses).
        "UnexpectedBuyOrder",
        "UnexpectedBuyToCoverOrder",
        "UnexpectedSellShortOrder",
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
    authentication and entitlement. Two answers come as plain text from the brokerage
    backend, not as JSON (lumiwealth-tradier's ``Orders.cancel`` matches the first on the
    raw text, ``"400 - order already in finalized state"``; QuantConnect's Tradier brokerage
    records both):

    * cancelling or changing a finished order: **400** ``order already in finalized state:
      filled``: ``OrderNotModifiable``, never a rejection of something new;
    * an order id (or account) the token's account does not own: **401** ``Unauthorized
      Account: <account>``: on an order path ``OrderNotFound``, on an account path a refusal
      for that account (``Rejected``). The connection's token is fine.

    A dead token is told apart by its body, not its status: the API gateway answers a bad,
    revoked or expired token with a JSON fault, ``{"fault": {"faultstring": "Invalid Access
    Token", "detail": {"errorcode": "keymanagement.service.invalid_access_token"}}}``
    (QuantConnect/Lean.Brokerages.Tradier tests). Only a fault (or a 401/403 whose body says
    nothing else) is ``AuthenticationFailed``.
    """
    status = response.status_code
    text = response.text.strip()
    try:
        body: object = response.json()
    except ValueError:
        body = None
    found = fault(body)
    messages = error_messages(body)
    if body is None and text.startswith(UNAUTHORIZED_ACCOUNT):
        if "/orders/" in response.request.url.path:
            return errors.OrderNotFound(text, broker=SLUG)
        return errors.Rejected(text, broker=SLUG)
    if body is None and FINALIZED in text.lower():
        if method in ("PUT", "DELETE"):
            return errors.OrderNotModifiable(text, broker=SLUG)
        return errors.Rejected(text, broker=SLUG)
    if status in (401, 403):
        reason = found[0] if found else (text or "unauthorized")
        return errors.AuthenticationFailed(reason, broker=SLUG)
    if found is not None and "access_token" in found[1]:
        return errors.AuthenticationFailed(found[0], broker=SLUG)
    if status == 404:
        return errors.OrderNotFound(found[0] if found else (text or "not found"), broker=SLUG)
    if messages is not None:
        return classify_messages(messages, method)
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
