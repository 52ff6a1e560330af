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
    BrokerOrderLeg,
    Fill,
    InvalidOptionSymbol,
    OptionContract,
    OrderChanges,
    OrderLeg,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Position,
    PositionEffect,
    PriceEffect,
    Quote,
    TimeInForce,
    Transaction,
    is_option_symbol,
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


# --- options -------------------------------------------------------------------------------
#
# Alpaca names a contract by its OCC symbol WITHOUT padding (``AAPL250620C00100000``, spec
# schema ``OptionContract.symbol``), which is our canonical form; padded input is unpadded.

# ``position_intent`` (spec schema ``PositionIntent``): side and open/close in one value.
_INTENTS: dict[tuple[OrderSide, PositionEffect], str] = {
    (OrderSide.buy, PositionEffect.open): "buy_to_open",
    (OrderSide.buy, PositionEffect.close): "buy_to_close",
    (OrderSide.sell, PositionEffect.open): "sell_to_open",
    (OrderSide.sell, PositionEffect.close): "sell_to_close",
}
_FROM_INTENT = {intent: key for key, intent in _INTENTS.items()}

# What Alpaca takes for option orders. Order types: spec schema ``OrderType`` ("Options
# trading: market, limit. Multileg Options trading: market, limit"; alpaca-py
# ``_validate_mleg_order_type``). Time in force: the spec's ``TimeInForce`` still says
# "Options trading: day"; GTC was added for (single-leg) options later
# (https://alpaca.markets/learn/how-to-trade-good-til-canceled-options-trading-with-python-and-alpaca).
# Multi-leg stays ``day`` until Alpaca documents more.
OPTION_ORDER_TYPES = frozenset({OrderType.market, OrderType.limit})
OPTION_TIME_IN_FORCE = frozenset({TimeInForce.day, TimeInForce.gtc})
COMBO_TIME_IN_FORCE = frozenset({TimeInForce.day})
MIN_LEGS, MAX_LEGS = 2, 4  # spec ``legs`` maxItems 4; alpaca-py: "At least 2 legs"
OPTION_ASSET_CLASS = "us_option"


def option_contract(symbol: str) -> OptionContract:
    """The contract an OCC symbol (padded or not) names; ``UnknownBrokerValue`` otherwise."""
    try:
        return OptionContract.parse(symbol)
    except InvalidOptionSymbol:
        raise unknown("option symbol", symbol) from None


def wire_symbol(symbol: str) -> str:
    """Our symbol as Alpaca spells it: unpadded OCC for options, ``BTC/USD`` for crypto."""
    if is_option_symbol(symbol):
        return OptionContract.parse(symbol).symbol
    return to_alpaca_symbol(symbol)


def position_intent(side: OrderSide, effect: PositionEffect) -> str:
    return _INTENTS[(side, effect)]


def _effect_from_intent(raw: object, field: str = "position_intent") -> PositionEffect | None:
    """``buy_to_open`` -> open; absent or ``""`` (mleg parents, old orders) -> None."""
    if raw is None or raw == "":
        return None
    return WIRE.lookup(_FROM_INTENT, raw, field)[1]


def signed_limit_price(price: Decimal, effect: PriceEffect) -> Decimal:
    """Our unsigned net price and its direction as Alpaca's signed mleg ``limit_price``.

    The spec's ``limit_price``: "In case of mleg ... A positive value indicates a debit ...
    A negative value signifies a credit" (also alpaca-py ``LimitOrderRequest``). A zero price
    is only ``even``; a signed input is refused, never passed through.
    """
    if not price.is_finite() or price < 0:
        raise errors.UnsupportedOrder(
            f"a net limit price is unsigned (got {price}); its direction is price_effect",
            broker=SLUG,
        )
    if effect is PriceEffect.even:
        if price != 0:
            raise errors.UnsupportedOrder(
                "an even (zero net) order has a limit price of 0", broker=SLUG
            )
        return Decimal(0)
    if price == 0:
        raise errors.UnsupportedOrder(
            f"a {effect.value} of 0 is an even order: send price_effect even", broker=SLUG
        )
    return price if effect is PriceEffect.debit else price.copy_negate()  # exact, no rounding


def unsigned_limit_price(signed: Decimal) -> tuple[Decimal, PriceEffect]:
    """Alpaca's signed mleg ``limit_price`` back into an unsigned price and its direction."""
    if signed > 0:
        return signed, PriceEffect.debit
    if signed < 0:
        return signed.copy_negate(), PriceEffect.credit
    return Decimal(0), PriceEffect.even


def _whole(quantity: Decimal, what: str) -> str:
    if not quantity.is_finite() or quantity <= 0 or quantity != quantity.to_integral_value():
        raise errors.UnsupportedOrder(
            f"{what} must be a whole number of contracts (got {quantity})", broker=SLUG
        )
    return str(int(quantity))


def _check_option_terms(order: OrderRequest, *, combo: bool) -> None:
    kind = "multi-leg" if combo else "option"
    if order.order_type not in OPTION_ORDER_TYPES:
        raise errors.UnsupportedOrder(
            f"Alpaca takes only market and limit {kind} orders", broker=SLUG
        )
    allowed = COMBO_TIME_IN_FORCE if combo else OPTION_TIME_IN_FORCE
    if order.time_in_force not in allowed:
        names = ", ".join(sorted(t.value for t in allowed))
        raise errors.UnsupportedOrder(
            f"Alpaca takes {kind} orders with time in force {names} only", broker=SLUG
        )
    if order.extended_hours:
        raise errors.UnsupportedOrder(
            f"Alpaca does not trade {kind} orders in extended hours", broker=SLUG
        )
    if order.stop_price is not None:
        raise errors.UnsupportedOrder(f"{kind} orders take no stop price", broker=SLUG)


def option_order_to_wire(order: OrderRequest) -> dict[str, Any]:
    """A single-leg option order: the equity body with the unpadded OCC symbol, a whole
    ``qty`` and ``position_intent`` (spec example "Options"; schema ``PositionIntent``)."""
    _check_option_terms(order, combo=False)
    body: dict[str, Any] = {
        "symbol": OptionContract.parse(order.symbol).symbol,
        "qty": _whole(order.quantity, "an option order's quantity"),
        "side": order.side.value,
        "type": order.order_type.value,
        "time_in_force": order.time_in_force.value,
        "client_order_id": order.client_order_id,
    }
    if order.position_effect is not None:
        body["position_intent"] = position_intent(order.side, order.position_effect)
    if order.order_type is OrderType.limit:
        if order.limit_price is None or order.limit_price <= 0:
            raise errors.UnsupportedOrder("a limit order needs a positive price", broker=SLUG)
        body["limit_price"] = str(order.limit_price)
    return body


def _leg_to_wire(leg: OrderLeg) -> dict[str, Any]:
    if not is_option_symbol(leg.symbol):
        raise errors.UnsupportedOrder(
            f"Alpaca multi-leg orders take option legs only ({leg.symbol!r})", broker=SLUG
        )
    if leg.ratio < 1:
        raise errors.UnsupportedOrder(f"leg ratio must be >= 1 (got {leg.ratio})", broker=SLUG)
    return {
        "symbol": OptionContract.parse(leg.symbol).symbol,
        "ratio_qty": str(leg.ratio),
        "side": leg.side.value,
        "position_intent": position_intent(leg.side, leg.position_effect),
    }


def mleg_order_to_wire(order: OrderRequest) -> dict[str, Any]:
    """A multi-leg order (spec example "MultilegOptions", schema ``MLegOrderLeg``).

    No top-level ``symbol``/``side``; ``qty`` is strategy units and each leg's ``ratio_qty``
    its share per unit (Alpaca trades ratio x qty contracts of the leg); ``limit_price`` is
    signed from our unsigned price and ``price_effect`` (``signed_limit_price``).
    """
    _check_option_terms(order, combo=True)
    if not MIN_LEGS <= len(order.legs) <= MAX_LEGS:
        raise errors.UnsupportedOrder(
            f"Alpaca multi-leg orders have {MIN_LEGS} to {MAX_LEGS} legs", broker=SLUG
        )
    legs = [_leg_to_wire(leg) for leg in order.legs]
    if len({leg["symbol"] for leg in legs}) != len(legs):
        raise errors.UnsupportedOrder("every leg must be a different contract", broker=SLUG)
    body: dict[str, Any] = {
        "order_class": "mleg",
        "qty": _whole(order.quantity, "a multi-leg order's quantity (strategy units)"),
        "type": order.order_type.value,
        "time_in_force": order.time_in_force.value,
        "client_order_id": order.client_order_id,
        "legs": legs,
    }
    if order.order_type is OrderType.limit:
        if order.limit_price is None or order.price_effect is None:
            raise errors.UnsupportedOrder(
                "a multi-leg limit order needs limit_price and price_effect", broker=SLUG
            )
        body["limit_price"] = str(signed_limit_price(order.limit_price, order.price_effect))
    elif order.limit_price is not None:
        raise errors.UnsupportedOrder("a market order takes no limit price", broker=SLUG)
    return body


def _mleg_leg_from_wire(body: object) -> BrokerOrderLeg:
    """One child order of an mleg parent (spec example ``MultilegOptionsOrderResponse``:
    full Order objects with ``type: ""``, their own ``id``, ``ratio_qty`` and fills)."""
    if not isinstance(body, dict):
        raise unknown("mleg leg", type(body).__name__)
    side = WIRE.lookup(_SIDES, body.get("side"), "leg side")
    ratio = dec(body.get("ratio_qty"), "ratio_qty")
    if ratio <= 0 or ratio != ratio.to_integral_value():
        raise unknown("ratio_qty", body.get("ratio_qty"))
    leg_id = body.get("id")
    return BrokerOrderLeg(
        symbol=option_contract(str(body.get("symbol"))).symbol,
        side=side,
        ratio=int(ratio),
        position_effect=_effect_from_intent(body.get("position_intent"), "leg position_intent"),
        filled_quantity=opt_dec(body.get("filled_qty"), "filled_qty") or _ZERO,
        avg_fill_price=opt_dec(body.get("filled_avg_price"), "filled_avg_price"),
        broker_leg_id=leg_id if isinstance(leg_id, str) and leg_id else None,
    )


def is_mleg_leg(body: object) -> bool:
    """A child order of an mleg parent seen on its own (``order_class`` mleg, no legs of its
    own, ``type`` ""): it carries no parent id, so it cannot be filed under its order."""
    return (
        isinstance(body, dict)
        and body.get("order_class") == "mleg"
        and not body.get("legs")
        and body.get("type", body.get("order_type")) == ""
    )


def _mleg_order_from_wire(body: dict[str, Any]) -> BrokerOrder:
    """An mleg parent: ``symbol``/``side``/``asset_class`` are "" at Alpaca, so the symbol is
    the legs' underlying, the price is unsigned with its direction, ``side`` is ``sell`` for
    a credit and ``buy`` otherwise (our multi-leg convention)."""
    raw_legs = body.get("legs")
    if not isinstance(raw_legs, list) or not raw_legs:
        raise unknown("mleg legs", raw_legs)
    legs = tuple(_mleg_leg_from_wire(leg) for leg in raw_legs)
    underlying = option_contract(legs[0].symbol).underlying
    order_type = WIRE.lookup(_ORDER_TYPES, body.get("type", body.get("order_type")), "type")
    tif = WIRE.lookup(_TIF, body.get("time_in_force"), "time_in_force")
    qty = dec(body.get("qty"), "qty")
    filled = opt_dec(body.get("filled_qty"), "filled_qty") or _ZERO
    signed = opt_dec(body.get("limit_price"), "limit_price")
    limit_price, price_effect = (None, None) if signed is None else unsigned_limit_price(signed)
    avg = opt_dec(body.get("filled_avg_price"), "filled_avg_price")
    created = ts(body.get("created_at"), "created_at")
    updated_raw = body.get("updated_at")
    status = order_status(body.get("status"), qty, filled)
    order_id = body.get("id")
    if not isinstance(order_id, str) or not order_id:
        raise unknown("order id", order_id)
    client_order_id = body.get("client_order_id")
    return BrokerOrder(
        broker_order_id=order_id,
        client_order_id=client_order_id if isinstance(client_order_id, str) else None,
        symbol=underlying,
        side=OrderSide.sell if price_effect is PriceEffect.credit else OrderSide.buy,
        quantity=qty,
        filled_quantity=filled,
        # The net fill price: unsigned like the limit (its sign at Alpaca is unconfirmed).
        avg_fill_price=None if avg is None else abs(avg),
        order_type=order_type,
        time_in_force=tif,
        status=status,
        limit_price=limit_price,
        stop_price=None,
        created_at=created,
        updated_at=ts(updated_raw, "updated_at") if updated_raw else created,
        reject_reason="rejected by the broker" if status is OrderStatus.rejected else None,
        replaced_by=_opt_str(body.get("replaced_by")),
        replaces=_opt_str(body.get("replaces")),
        legs=legs,
        price_effect=price_effect,
    )


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
    if body.get("order_class") == "mleg" and body.get("legs"):
        return _mleg_order_from_wire(body)
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
    filled = opt_dec(body.get("filled_qty"), "filled_qty") or _ZERO
    # A dollar-amount order has ``notional`` and a null ``qty`` (spec ``Order.notional``: "If
    # entered, qty will be null"); its quantity is what has filled so far, as Alpaca reports.
    notional = opt_dec(body.get("notional"), "notional")
    qty = opt_dec(body.get("qty"), "qty")
    if qty is None:
        if notional is None:
            raise unknown("qty", body.get("qty"))
        qty = filled
    asset_class = _ASSET_CLASSES.get(str(body.get("asset_class")))
    created = ts(body.get("created_at"), "created_at")
    updated_raw = body.get("updated_at")
    updated = ts(updated_raw, "updated_at") if updated_raw else created
    status = order_status(body.get("status"), qty, filled)
    order_id = body.get("id")
    if not isinstance(order_id, str) or not order_id:
        raise unknown("order id", order_id)
    client_order_id = body.get("client_order_id")
    symbol = str(body.get("symbol"))
    if asset_class is AssetClass.option:
        symbol = option_contract(symbol).symbol
    return BrokerOrder(
        broker_order_id=order_id,
        client_order_id=client_order_id if isinstance(client_order_id, str) else None,
        symbol=from_alpaca_symbol(symbol, asset_class),
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
        position_effect=_effect_from_intent(body.get("position_intent")),
        notional=notional,
    )


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _price(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def order_to_wire(order: OrderRequest) -> dict[str, Any]:
    """The ``POST /v2/orders`` body. Decimals go out as strings, as the spec declares them."""
    if order.is_multi_leg:
        return mleg_order_to_wire(order)
    if is_option_symbol(order.symbol):
        return option_order_to_wire(order)
    crypto = is_crypto_symbol(order.symbol)
    if crypto:
        _check_crypto_terms(order)
    if order.position_effect is not None:
        _check_short_terms(order, crypto=crypto)
    body: dict[str, Any] = {
        "symbol": to_alpaca_symbol(order.symbol),
        "side": order.side.value,
        "type": order.order_type.value,
        "time_in_force": order.time_in_force.value,
        "client_order_id": order.client_order_id,
    }
    if order.notional is not None:
        _check_notional_terms(order, crypto=crypto)
        body["notional"] = str(order.notional)
    else:
        body["qty"] = str(order.quantity)
    if order.limit_price is not None:
        body["limit_price"] = str(order.limit_price)
    if order.stop_price is not None:
        body["stop_price"] = str(order.stop_price)
    if order.extended_hours:
        body["extended_hours"] = True
    return body


# --- crypto, notional and short-sale terms -------------------------------------------------
#
# Crypto pairs are ``BTC/USD`` on the wire, ``BTC-USD`` in the gateway; Alpaca takes crypto
# orders with time in force ``gtc`` or ``ioc`` only (spec ``TimeInForce``: "Crypto trading:
# gtc, ioc"), as market, limit or stop_limit orders, by ``qty`` or ``notional``
# (https://docs.alpaca.markets/docs/crypto-orders), never in extended hours, never short.
# alpaca-py allows a crypto notional on limit orders too ("For stocks, only works with
# MarketOrders"); the gateway takes notional on market orders only (``notional_limit``
# unsupported), for crypto as for stocks.
CRYPTO_TIME_IN_FORCE = frozenset({TimeInForce.gtc, TimeInForce.ioc})
CRYPTO_ORDER_TYPES = frozenset({OrderType.market, OrderType.limit, OrderType.stop_limit})
# Quote currencies of Alpaca's crypto pairs (https://docs.alpaca.markets/docs/crypto-trading).
CRYPTO_QUOTES = ("USD", "USDT", "USDC", "BTC")


def is_crypto_symbol(symbol: str) -> bool:
    """``BTC-USD`` (ours) or ``BTC/USD`` (Alpaca's): a pair of a crypto and a quote currency."""
    for sep in ("-", "/"):
        base, found, quote_ccy = symbol.partition(sep)
        if found and base and quote_ccy in CRYPTO_QUOTES:
            return True
    return False


def _check_crypto_terms(order: OrderRequest) -> None:
    if order.time_in_force not in CRYPTO_TIME_IN_FORCE:
        raise errors.UnsupportedOrder(
            "Alpaca takes crypto orders with time in force gtc or ioc only", broker=SLUG
        )
    if order.order_type not in CRYPTO_ORDER_TYPES:
        raise errors.UnsupportedOrder(
            "Alpaca takes crypto orders as market, limit or stop_limit only", broker=SLUG
        )
    if order.extended_hours:
        raise errors.UnsupportedOrder(
            "crypto trades around the clock: no extended_hours", broker=SLUG
        )


def _check_notional_terms(order: OrderRequest, *, crypto: bool) -> None:
    """Spec ``notional``: "Can only work for market order types and day for time in force"
    (crypto: ``gtc``/``ioc``, its only time in force); fractionable assets only (Alpaca
    refuses others with a 422 we map to ``UnsupportedOrder``)."""
    notional = order.notional
    assert notional is not None
    if not notional.is_finite() or notional <= 0:
        raise errors.UnsupportedOrder(
            f"a notional amount must be > 0 (got {notional})", broker=SLUG
        )
    if order.order_type is not OrderType.market:
        raise errors.UnsupportedOrder(
            "Alpaca takes notional amounts on market orders only", broker=SLUG
        )
    if not crypto and order.time_in_force is not TimeInForce.day:
        raise errors.UnsupportedOrder(
            "Alpaca takes notional equity orders with time in force day only", broker=SLUG
        )
    if order.extended_hours:
        raise errors.UnsupportedOrder("notional orders do not trade in extended hours", broker=SLUG)
    if order.quantity:
        raise errors.UnsupportedOrder(
            "an order has a quantity or a notional, not both", broker=SLUG
        )


def _check_short_terms(order: OrderRequest, *, crypto: bool) -> None:
    """Alpaca shorts by position: a sell with no long position is a short sale on a margin
    account (https://docs.alpaca.markets/docs/margin-and-short-selling), so ``open``/``close``
    is not sent for equities, only checked. What Alpaca cannot short is refused here:
    crypto ("Crypto cannot be sold short", https://docs.alpaca.markets/docs/crypto-trading),
    fractional or notional short sales ("fractional orders ... cannot be sold short",
    https://docs.alpaca.markets/docs/fractional-trading)."""
    if order.side is OrderSide.sell and order.position_effect is PositionEffect.open:
        if crypto:
            raise errors.UnsupportedOrder("Alpaca does not sell crypto short", broker=SLUG)
        if order.notional is not None or order.quantity != order.quantity.to_integral_value():
            raise errors.UnsupportedOrder(
                "Alpaca sells short whole shares only (no fractional or notional)", broker=SLUG
            )
    if crypto and order.side is OrderSide.buy and order.position_effect is PositionEffect.close:
        raise errors.UnsupportedOrder("there is no crypto short at Alpaca to cover", broker=SLUG)


def changes_to_wire(
    changes: OrderChanges, price_effect: PriceEffect | None = None
) -> dict[str, Any]:
    """The ``PATCH /v2/orders/{id}`` body: only the attributes that change.

    ``price_effect``: the order is multi-leg, whose ``limit_price`` is signed
    (``signed_limit_price``) and whose ``qty`` is whole strategy units.
    """
    body: dict[str, Any] = {}
    if changes.quantity is not None:
        body["qty"] = (
            str(changes.quantity)
            if price_effect is None
            else _whole(changes.quantity, "a multi-leg order's quantity")
        )
    if changes.limit_price is not None:
        body["limit_price"] = (
            _price(changes.limit_price)
            if price_effect is None
            else str(signed_limit_price(changes.limit_price, price_effect))
        )
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
    market_value = dec(body.get("market_value"), "market_value")
    contract: OptionContract | None = None
    symbol = from_alpaca_symbol(str(body.get("symbol")), asset_class)
    if asset_class is AssetClass.option:
        # ``symbol`` is the unpadded OCC symbol; the position carries no multiplier (spec
        # ``Position``), so a standard 100 is assumed (adjusted contracts have other roots).
        # ``avg_entry_price``/``current_price`` are per share and ``market_value`` already
        # includes the multiplier (public client code reading live accounts:
        # market_value 4000 for 10 contracts at current_price 4; unconfirmed in Alpaca's
        # own docs). The value is signed like the quantity, whichever way Alpaca signs it.
        contract = option_contract(symbol)
        symbol = contract.symbol
        market_value = abs(market_value) if qty >= 0 else -abs(market_value)
    return Position(
        symbol=symbol,
        asset_class=asset_class,
        quantity=qty,
        avg_cost=dec(body.get("avg_entry_price"), "avg_entry_price"),
        current_price=dec(body.get("current_price"), "current_price"),
        market_value=market_value,
        unrealized_pl=dec(body.get("unrealized_pl"), "unrealized_pl"),
        as_of=now,
        contract=contract,
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


# An option's end of life, as non-trade activities with the contract's OCC ``symbol`` and the
# signed change of the position in ``qty`` (``-2``: two long contracts exercised; ``2``: two
# short ones assigned), ``net_amount`` "0" (the underlying's trade is a separate ``OPTRD``):
# https://docs.alpaca.markets/docs/non-trade-activities-for-option-events (spec
# ``ActivityType``: OPASN, OPEXC, OPEXP).
_OPTION_LIFECYCLE = {
    "OPEXP": "option_expiration",
    "OPEXC": "option_exercise",
    "OPASN": "option_assignment",
}


def _option_event(body: dict[str, Any], activity_id: str, kind: str) -> Transaction:
    contract = option_contract(str(body.get("symbol")))
    occurred = body.get("date") or body.get("created_at")
    if isinstance(occurred, str) and len(occurred) == 10:
        occurred += "T00:00:00Z"  # a calendar date in the doc's examples
    return Transaction(
        transaction_id=activity_id,
        type=kind,
        occurred_at=ts(occurred, "date"),
        amount=opt_dec(body.get("net_amount"), "net_amount") or _ZERO,
        symbol=contract.symbol,
        quantity=dec(body.get("qty"), "qty"),
        description=str(body.get("description") or body.get("activity_type")),
    )


def _option_trade(body: dict[str, Any], activity_id: str) -> Transaction:
    """``OPTRD``: the underlying's trade that an exercise or assignment makes, signed ``qty``
    (200 bought, -200 sold) at the strike, the cash in ``net_amount`` (same doc page)."""
    qty = dec(body.get("qty"), "qty")
    if qty == 0:
        raise unknown("OPTRD qty", body.get("qty"))
    occurred = body.get("date") or body.get("created_at")
    if isinstance(occurred, str) and len(occurred) == 10:
        occurred += "T00:00:00Z"
    symbol = body.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise unknown("OPTRD symbol", symbol)
    return Transaction(
        transaction_id=activity_id,
        type=OrderSide.buy.value if qty > 0 else OrderSide.sell.value,
        occurred_at=ts(occurred, "date"),
        amount=dec(body.get("net_amount"), "net_amount"),
        symbol=symbol,
        quantity=abs(qty),
        price=opt_dec(body.get("price"), "price"),
        description=str(body.get("description") or "Option Trade"),
    )


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
        symbol = str(body.get("symbol"))
        gross = qty * price
        if is_option_symbol(symbol):
            # An option fill's price is per share: the cash moved is x the multiplier (100
            # for a standard contract; the activity carries no multiplier).
            option = option_contract(symbol)
            gross *= option.multiplier
            symbol = option.symbol
        return Transaction(
            transaction_id=activity_id,
            type=side.value,
            occurred_at=ts(body.get("transaction_time"), "transaction_time"),
            amount=-gross if side is OrderSide.buy else gross,
            symbol=from_alpaca_symbol(symbol),
            quantity=qty,
            price=price,
            description=f"{body.get('type', 'fill')} of order {body.get('order_id')}",
        )
    lifecycle = _OPTION_LIFECYCLE.get(str(activity_type))
    if lifecycle is not None:
        return _option_event(body, activity_id, lifecycle)
    if activity_type == "OPTRD":
        return _option_trade(body, activity_id)
    kind = _ACTIVITY_TYPES.get(str(activity_type))
    if kind is None:
        return None
    occurred = body.get("date") or body.get("created_at")
    if isinstance(occurred, str) and len(occurred) == 10:
        occurred += "T00:00:00Z"  # NTA ``date`` is a calendar date in the spec examples
    other_symbol = body.get("symbol")
    return Transaction(
        transaction_id=activity_id,
        type=kind,
        occurred_at=ts(occurred, "date"),
        amount=dec(body.get("net_amount"), "net_amount"),
        symbol=other_symbol if isinstance(other_symbol, str) and other_symbol else None,
        quantity=opt_dec(body.get("qty"), "qty"),
        description=str(body.get("description") or activity_type),
    )


def quotes_from_wire(
    quotes_body: object, trades_body: object, symbols: list[str]
) -> dict[str, Quote]:
    """``/v2/stocks/quotes/latest`` and ``/v2/stocks/trades/latest`` (options:
    ``/v1beta1/options/quotes/latest`` and ``/trades/latest``, the same shape) into quotes.

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
        wire = wire_symbol(symbol)
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


def update_from_event(data: object, account_ref: str) -> OrderUpdate | None:
    """One ``trade_updates`` ``data`` object into an OrderUpdate.

    An mleg order's events carry the parent order with its ``legs[]`` (the parent's
    ``position_intent`` is "", https://github.com/alpacahq/alpaca-py/pull/557);
    a fill becomes one ``Fill`` per leg (``leg_fills``). An event about a leg child order
    alone is None: it names no parent.
    """
    if not isinstance(data, dict):
        raise unknown("trade update", type(data).__name__)
    event = data.get("event")
    if event not in TRADE_EVENTS:
        raise unknown("trade update event", event)
    if is_mleg_leg(data.get("order")):
        return None
    order = order_from_wire(data.get("order"))
    raw_at = data.get("timestamp") or data.get("at")
    occurred = ts(raw_at) if raw_at else order.updated_at
    fills: tuple[Fill, ...] = ()
    if event in ("fill", "partial_fill"):
        fill_id = str(data.get("execution_id") or f"{order.broker_order_id}:{raw_at}")
        if order.legs:
            fills = leg_fills(order, fill_id, opt_dec(data.get("qty"), "qty"), occurred)
        else:
            fills = (
                Fill(
                    fill_id=fill_id,
                    quantity=dec(data.get("qty"), "qty"),
                    price=dec(data.get("price"), "price"),
                    occurred_at=occurred,
                ),
            )
    return OrderUpdate(account_ref=account_ref, order=order, occurred_at=occurred, fills=fills)


def leg_fills(
    order: BrokerOrder, fill_id: str, units: Decimal | None, occurred: datetime
) -> tuple[Fill, ...]:
    """The per-leg fills of one mleg execution of ``units`` strategy units (the event's
    ``qty``; each leg trades ratio x units). The price of each is the leg's average fill
    price: exact for an mleg filled in one execution (Alpaca fills the legs "together or not
    at all", https://docs.alpaca.markets/docs/options-level-3-trading), the running average
    when one order fills over several executions. Legs without a price yet are left out.
    """
    fills: list[Fill] = []
    for leg in order.legs:
        if leg.avg_fill_price is None:
            continue
        quantity = leg.filled_quantity if units is None else units * leg.ratio
        if quantity <= 0:
            continue
        fills.append(
            Fill(
                fill_id=f"{fill_id}:{leg.symbol}",
                quantity=quantity,
                price=leg.avg_fill_price,
                occurred_at=occurred,
                leg_symbol=leg.symbol,
            )
        )
    return tuple(fills)


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
            "cancelable" in text
            or "replaceable" in text
            or "already in" in text
            or "state" in text
            # "cannot cancel individual legs of a mleg order" (and "replace"):
            # https://github.com/alpacahq/alpaca-py/blob/master/examples/options/options-trading-mleg.ipynb
            or "individual legs" in text
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
