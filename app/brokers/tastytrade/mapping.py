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

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import httpx

from app.brokers import errors
from app.brokers.base import (
    AssetClass,
    Balances,
    BrokerOrder,
    BrokerOrderLeg,
    ExpirationType,
    Fill,
    InvalidOptionSymbol,
    OptionContract,
    OptionExpiration,
    OptionQuote,
    OptionRight,
    OptionStyle,
    OrderChanges,
    OrderPreview,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Position,
    PositionEffect,
    PreviewSource,
    PriceEffect,
    Quote,
    TimeInForce,
    Transaction,
)
from app.brokers.symbols import asset_class_of
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
    ``BTC/USD`` (https://developer.tastytrade.com/order-submission); options as the padded
    OCC symbol (``option_to_wire``)."""
    if asset_class_of(symbol) is AssetClass.option:
        return option_to_wire(symbol)
    return symbol.replace("-", "/") if re.fullmatch(r"[A-Z0-9]+-[A-Z]+", symbol) else symbol


def from_wire_symbol(symbol: str, asset_class: AssetClass) -> str:
    if asset_class is AssetClass.crypto:
        return symbol.replace("/", "-")
    if asset_class is AssetClass.option:
        return option_from_wire(symbol).symbol
    return symbol


def option_to_wire(symbol: str) -> str:
    """Our option symbol (padded or not) as tastytrade's: OCC with the root padded to six
    characters, ``AAPL  261218C00150000`` ("OCC format for equity options",
    https://developer.tastytrade.com/docs/concepts/market-data/ ; the multi-leg guide's
    ``AAPL 221118C00157500`` is the same symbol with its spaces collapsed by the page)."""
    try:
        return OptionContract.parse(symbol).occ_padded
    except InvalidOptionSymbol as exc:
        raise errors.UnsupportedOrder(str(exc), broker=SLUG) from None


def option_from_wire(
    text: object, *, underlying: object = None, multiplier: object = None
) -> OptionContract:
    """A tastytrade OCC symbol (padded, or with its spaces collapsed as in the docs'
    examples) as a contract; ``underlying`` (``underlying-symbol``) where the answer has it,
    since a root such as SPXW is not its underlying."""
    if not isinstance(text, str):
        raise unknown("option symbol", text)
    shares = Decimal(100)
    if multiplier is not None:
        shares = dec(multiplier, "multiplier")
        if shares <= 0:
            raise unknown("multiplier", multiplier)
        # "100.0" and 100 are the same multiplier: one form for equal contracts.
        shares = shares.quantize(Decimal(1)) if shares == shares.to_integral() else shares
    try:
        contract = OptionContract.parse(
            text,
            underlying=underlying if isinstance(underlying, str) and underlying else None,
            multiplier=shares,
        )
    except InvalidOptionSymbol:
        raise unknown("option symbol", text) from None
    return contract


def streamer_symbol(contract: OptionContract) -> str:
    """The DXLink symbol of a contract: ``.`` + root + YYMMDD + C/P + the strike without
    trailing zeros (``.AAPL261218C150``, ``.AAPL221118C157.5``); tastyware/tastytrade
    ``Option.occ_to_streamer_symbol`` and the ``streamer-symbol`` field of the chains."""
    strike = contract.strike.normalize()
    text = f"{strike:f}"
    right = "C" if contract.right is OptionRight.call else "P"
    return f".{contract.root}{contract.expiration:%y%m%d}{right}{text}"


_STREAMER = re.compile(
    r"^\.(?P<root>[A-Z][A-Z0-9]{0,5})(?P<date>\d{6})(?P<right>[CP])"
    r"(?P<strike>\d+(?:\.\d+)?)$"
)


def contract_from_streamer(text: str, *, underlying: str | None = None) -> OptionContract:
    """A DXLink option symbol back into its contract (the inverse of ``streamer_symbol``)."""
    match = _STREAMER.match(text)
    if match is None:
        raise unknown("streamer symbol", text)
    strike = Decimal(match["strike"])
    if strike <= 0 or strike * 1000 != (strike * 1000).to_integral_value():
        raise unknown("streamer symbol", text)
    digits = match["date"]
    try:
        expiration = date(2000 + int(digits[:2]), int(digits[2:4]), int(digits[4:]))
    except ValueError:
        raise unknown("streamer symbol", text) from None
    strike = strike.normalize()
    if strike == strike.to_integral_value():
        strike = strike.quantize(Decimal(1))
    return OptionContract(
        underlying=underlying or match["root"],
        root=match["root"],
        expiration=expiration,
        right=OptionRight.call if match["right"] == "C" else OptionRight.put,
        strike=strike,
    )


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


def _legs(body: dict[str, Any]) -> list[dict[str, Any]]:
    legs = body.get("legs")
    if not isinstance(legs, list) or not legs or not all(isinstance(x, dict) for x in legs):
        raise unknown("order legs", legs if not isinstance(legs, list) else f"{len(legs)} legs")
    return legs


# "Equity Option and Future Option orders can have up to 4 legs. (Equity, Future, and
# Cryptocurrency orders are limited to 1 leg.)"
# https://developer.tastytrade.com/docs/guides/multi-leg-spreads/
MAX_LEGS = 4


def is_modelled(body: object) -> bool:
    """Whether an order is one the gateway can represent: one equity or equity-option leg,
    or 2 to 4 equity-option legs.

    Orders the user placed elsewhere (futures, crypto through this path, complex orders)
    are legal at tastytrade and are not errors; the caller leaves them out of its lists.
    Orders that pass this check are mapped strictly.
    """
    if not isinstance(body, dict):
        return False
    legs = body.get("legs")
    if not isinstance(legs, list) or not legs or not all(isinstance(x, dict) for x in legs):
        return False
    kinds = {leg.get("instrument-type") for leg in legs}
    if len(legs) == 1:
        return kinds <= {"Equity", "Equity Option"}
    return len(legs) <= MAX_LEGS and kinds == {"Equity Option"}


def _fills(leg: dict[str, Any], leg_symbol: str | None = None) -> list[Fill]:
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
                leg_symbol=leg_symbol,
            )
        )
    return fills


def fills_of(body: dict[str, Any]) -> tuple[Fill, ...]:
    """Every fill of the order; on a multi-leg order each names its leg (``leg_symbol``)."""
    legs = _legs(body)
    if len(legs) == 1:
        return tuple(_fills(legs[0]))
    result: list[Fill] = []
    for leg in legs:
        result.extend(_fills(leg, option_from_wire(leg.get("symbol")).symbol))
    return tuple(result)


def _action(raw: object) -> tuple[OrderSide, PositionEffect | None]:
    """A leg ``action`` (https://developer.tastytrade.com/order-submission): the side and the
    position effect ("Buy"/"Sell" are for futures and carry none)."""
    side = _ACTIONS.get(str(raw))
    if side is None:
        raise unknown("leg action", raw)
    if str(raw).endswith("to Open"):
        return side, PositionEffect.open
    if str(raw).endswith("to Close"):
        return side, PositionEffect.close
    return side, None


@dataclass(frozen=True, slots=True)
class _LegState:
    symbol: str
    side: OrderSide
    effect: PositionEffect | None
    quantity: Decimal
    filled: Decimal
    avg_price: Decimal | None
    asset_class: AssetClass


def _leg_state(leg: dict[str, Any], underlying: object) -> _LegState:
    instrument = leg.get("instrument-type")
    if instrument not in _INSTRUMENT_TYPES:
        raise unknown("instrument-type", instrument)
    asset_class = _INSTRUMENT_TYPES[instrument]
    if asset_class not in (AssetClass.equity, AssetClass.option):
        raise unknown("order instrument-type (not modelled)", instrument)
    side, effect = _action(leg.get("action"))
    quantity = dec(leg.get("quantity"), "leg quantity")
    fills = _fills(leg)
    remaining = opt_dec(leg.get("remaining-quantity"), "remaining-quantity")
    in_fills = sum((f.quantity for f in fills), _ZERO)
    # ``remaining-quantity`` is authoritative for how much filled: an order may be "Filled"
    # before every fill is published (fills stream one by one).
    filled = quantity - remaining if remaining is not None else in_fills
    avg = None
    if in_fills > _ZERO:
        avg = sum((f.quantity * f.price for f in fills), _ZERO) / in_fills
    if asset_class is AssetClass.option:
        symbol = option_from_wire(leg.get("symbol"), underlying=underlying).symbol
    else:
        symbol = from_wire_symbol(str(leg.get("symbol")), AssetClass.equity)
    return _LegState(symbol, side, effect, quantity, filled, avg, asset_class)


def _price_effect_of(raw: object) -> PriceEffect | None:
    if raw is None:
        return None
    effect = {"Debit": PriceEffect.debit, "Credit": PriceEffect.credit, "None": None}
    if raw not in effect:
        raise unknown("price-effect", raw)
    return effect[str(raw)]


def order_from_wire(body: object) -> BrokerOrder:
    """A tastytrade ``Order`` (orders swagger ``Order``; SDK ``PlacedOrder``) into a
    ``BrokerOrder``: single-leg equity and option orders, and option spreads of 2 to 4 legs
    (``is_modelled``).

    A spread's legs carry absolute per-leg quantities; the strategy quantity is their
    greatest common divisor and each leg's ratio its quantity over that (the inverse of
    ``order_to_wire``). Its ``symbol`` is ``underlying-symbol``, its side ``sell`` for a
    credit and ``buy`` otherwise; ``avg_fill_price`` is the net price per strategy unit
    (unsigned, from the legs' fills), ``filled_quantity`` the strategy units every leg has
    filled.
    """
    if not isinstance(body, dict):
        raise unknown("order payload", type(body).__name__)
    raw_legs = _legs(body)
    if len(raw_legs) > MAX_LEGS:
        raise unknown("order legs", f"{len(raw_legs)} legs")
    underlying = body.get("underlying-symbol")
    legs = [_leg_state(leg, underlying) for leg in raw_legs]
    order_type = _ORDER_TYPES.get(str(body.get("order-type")))
    if order_type is None:
        raise unknown("order-type", body.get("order-type"))
    tif = _TIF.get(str(body.get("time-in-force")))
    if tif is None:
        raise unknown("time-in-force", body.get("time-in-force"))
    price_effect = _price_effect_of(body.get("price-effect"))
    multi = len(legs) > 1
    broker_legs: tuple[BrokerOrderLeg, ...] = ()
    if multi:
        if any(leg.asset_class is not AssetClass.option for leg in legs):
            raise unknown("order legs", "a spread with a non-option leg")
        units = math.gcd(*(int(leg.quantity) for leg in legs))
        if units <= 0 or any(leg.quantity != leg.quantity.to_integral() for leg in legs):
            raise unknown("leg quantity", [str(leg.quantity) for leg in legs])
        quantity = Decimal(units)
        ratios = [int(leg.quantity) // units for leg in legs]
        filled = min(
            (leg.filled / ratio for leg, ratio in zip(legs, ratios, strict=True)), default=_ZERO
        ).to_integral_value(rounding=ROUND_FLOOR)
        net = _ZERO
        complete = True
        for leg, ratio in zip(legs, ratios, strict=True):
            if leg.avg_price is None:
                complete = False
                break
            sign = 1 if leg.side is OrderSide.buy else -1
            net += sign * leg.avg_price * ratio
        avg_fill_price = net.copy_abs() if complete and filled > _ZERO else None
        broker_legs = tuple(
            BrokerOrderLeg(
                symbol=leg.symbol,
                side=leg.side,
                ratio=ratio,
                position_effect=leg.effect,
                filled_quantity=leg.filled,
                avg_fill_price=leg.avg_price,
            )
            for leg, ratio in zip(legs, ratios, strict=True)
        )
        if not isinstance(underlying, str) or not underlying:
            underlying = OptionContract.parse(legs[0].symbol).underlying
        symbol = str(underlying)
        side = OrderSide.sell if price_effect is PriceEffect.credit else OrderSide.buy
        position_effect = None
    else:
        [leg] = legs
        quantity, filled, avg_fill_price = leg.quantity, leg.filled, leg.avg_price
        symbol, side, position_effect = leg.symbol, leg.side, leg.effect
        if leg.asset_class is AssetClass.equity:
            # Equity orders are sent "Buy to Open" / "Sell to Close" whatever the intent
            # (``_equity_action``); the effect is only meaningful for options.
            position_effect = None
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
        symbol=symbol,
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
        position_effect=position_effect,
        legs=broker_legs,
        price_effect=price_effect if multi or legs[0].asset_class is AssetClass.option else None,
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


def _side_price_effect(side: OrderSide) -> str:
    # "you can't buy for a credit or sell for a debit" (cant_buy_for_credit).
    return "Debit" if side is OrderSide.buy else "Credit"


def _equity_action(side: OrderSide) -> str:
    """Buys open, sells close. tastytrade turns a closing order into an opening one when
    there is nothing to close (and the reverse) unless strict-position-effect-validation is
    set (tastyware/tastytrade ``AdvancedInstructions``), so a sell without a long position
    opens a short, as a sell does at other brokers."""
    return "Buy to Open" if side is OrderSide.buy else "Sell to Close"


def option_action(side: OrderSide, effect: PositionEffect | None) -> str:
    """An option leg's ``action``: ``Buy to Open`` | ``Sell to Open`` | ``Buy to Close`` |
    ``Sell to Close`` (tastyware/tastytrade ``OrderAction``). Options need the effect."""
    if effect is None:
        raise errors.UnsupportedOrder(
            "an option order needs a position effect (open or close)", broker=SLUG
        )
    verb = "Buy" if side is OrderSide.buy else "Sell"
    return f"{verb} to {'Open' if effect is PositionEffect.open else 'Close'}"


# tastytrade's price-effect has two values, Debit and Credit (orders swagger,
# postAccountsAccountNumberOrders: "If pay or receive payment for placing the order. i.e.
# `Credit` or `Debit`"); a limit order "must include both price and price-effect"
# (https://developer.tastytrade.com/docs/guides/place-an-equity-order/) and a negative price
# is refused ("price ... does not have a valid value", QuantConnect/Lean.Brokerages.Tastytrade
# PR #16). An even (zero) net price therefore has no documented form: tastyware/tastytrade
# drops a zero ``price`` altogether (``NewOrder.serialize_fields``), which leaves a limit
# order without its required price. Such orders are refused here, before any call.
_WIRE_PRICE_EFFECTS = {PriceEffect.debit: "Debit", PriceEffect.credit: "Credit"}


def _combo_price_effect(order: OrderRequest) -> str:
    effect = order.price_effect
    if effect is None or effect is PriceEffect.even:
        raise errors.UnsupportedOrder(
            "tastytrade takes a spread's limit price as a debit or a credit only; "
            "an even (zero) net price has no form in its API",
            broker=SLUG,
        )
    return _WIRE_PRICE_EFFECTS[effect]


def _quantity(value: Decimal) -> int | str:
    """Leg quantities: whole numbers as JSON integers (the docs' examples), else decimal
    strings (fractional equity)."""
    return int(value) if value == value.to_integral() else str(value)


def order_to_wire(order: OrderRequest, source: str) -> dict[str, Any]:
    """The ``POST /accounts/{account_number}/orders`` body (dasherized, decimal strings).

    * equity: one ``Equity`` leg;
    * single-leg option: one ``Equity Option`` leg with the padded OCC symbol and the
      action its side and position effect name;
    * spread (``order.legs``, 2 to 4): one ``Equity Option`` leg each, ``quantity`` = ratio x
      strategy quantity, one order-level ``price`` (the net, unsigned) and ``price-effect``
      (https://developer.tastytrade.com/docs/guides/multi-leg-spreads/).

    ``external-identifier`` carries our client order id: tastytrade echoes it on the order
    but does not deduplicate on it
    (https://developer.tastytrade.com/docs/guides/idempotency-and-retries/).
    """
    body: dict[str, Any] = {
        "time-in-force": tif_to_wire(order.time_in_force, order.extended_hours),
        "order-type": _ORDER_TYPES_OUT[order.order_type],
        "external-identifier": order.client_order_id,
        "source": source,
    }
    if order.is_multi_leg:
        if not 2 <= len(order.legs) <= MAX_LEGS:
            raise errors.UnsupportedOrder(
                f"tastytrade takes spreads of 2 to {MAX_LEGS} legs", broker=SLUG
            )
        if order.order_type not in (OrderType.market, OrderType.limit):
            raise errors.UnsupportedOrder(
                "the gateway sends tastytrade spreads as market or limit orders", broker=SLUG
            )
        if order.quantity <= 0 or order.quantity != order.quantity.to_integral():
            raise errors.UnsupportedOrder("a spread's quantity is whole units", broker=SLUG)
        symbols = [option_to_wire(leg.symbol) for leg in order.legs]
        if len(set(symbols)) != len(symbols):
            # "Each leg must use a distinct symbol" (multi-leg spreads guide).
            raise errors.UnsupportedOrder("a spread's legs must be distinct", broker=SLUG)
        body["legs"] = [
            {
                "instrument-type": "Equity Option",
                "symbol": symbol,
                "quantity": _quantity(order.quantity * leg.ratio),
                "action": option_action(leg.side, leg.position_effect),
            }
            for symbol, leg in zip(symbols, order.legs, strict=True)
        ]
        if order.order_type is OrderType.limit:
            if order.limit_price is None or order.limit_price <= 0:
                # A zero net is "even", which tastytrade cannot express (above).
                raise errors.UnsupportedOrder(
                    "tastytrade takes a spread's limit price as a positive debit or credit",
                    broker=SLUG,
                )
            body["price"] = str(order.limit_price)
            body["price-effect"] = _combo_price_effect(order)
        return body
    if asset_class_of(order.symbol) is AssetClass.option:
        if order.quantity <= 0 or order.quantity != order.quantity.to_integral():
            raise errors.UnsupportedOrder("option quantities are whole contracts", broker=SLUG)
        leg = {
            "instrument-type": "Equity Option",
            "symbol": option_to_wire(order.symbol),
            "quantity": _quantity(order.quantity),
            "action": option_action(order.side, order.position_effect),
        }
    else:
        leg = {
            "instrument-type": "Equity",
            "symbol": to_wire_symbol(order.symbol),
            "quantity": str(order.quantity),
            "action": _equity_action(order.side),
        }
    body["legs"] = [leg]
    if order.order_type in (OrderType.limit, OrderType.stop_limit):
        if order.limit_price is None:
            raise errors.UnsupportedOrder("a limit order needs a limit price", broker=SLUG)
        body["price"] = str(order.limit_price)
        body["price-effect"] = _side_price_effect(order.side)
    if order.order_type in (OrderType.stop, OrderType.stop_limit):
        if order.stop_price is None:
            raise errors.UnsupportedOrder("a stop order needs a stop price", broker=SLUG)
        body["stop-trigger"] = str(order.stop_price)
    return body


def replacement_to_wire(
    current: dict[str, Any], changes: OrderChanges, external_identifier: str, source: str
) -> dict[str, Any]:
    """The ``PUT /accounts/{account_number}/orders/{id}`` body: the order's terms with the
    changes applied, without legs (the original legs are kept; tastyware/tastytrade
    ``Account.replace_order`` sends the new order with ``exclude={"legs"}``, spreads
    included). Only price, order type and time in force can change in a cancel-replace
    (https://developer.tastytrade.com/order-management/, "Cancel Replace"). The order's own
    ``price-effect`` is kept (a spread's direction does not follow a side).
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
        if limit <= 0:
            raise errors.UnsupportedOrder(
                "tastytrade takes a positive limit price only", broker=SLUG
            )
        body["price"] = str(limit)
        effect = current.get("price-effect")
        body["price-effect"] = (
            effect if effect in ("Debit", "Credit") else _side_price_effect(order.side)
        )
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
    contract = None
    symbol = from_wire_symbol(str(item.get("symbol")), asset_class)
    if asset_class is AssetClass.option:
        # Option positions: the padded OCC ``symbol``, ``underlying-symbol`` and the
        # ``multiplier`` (shares per contract); prices are per share, as quoted
        # (tastyware/tastytrade ``CurrentPosition``).
        contract = option_from_wire(
            item.get("symbol"), underlying=item.get("underlying-symbol"), multiplier=multiplier
        )
        symbol = contract.symbol
    return Position(
        symbol=symbol,
        asset_class=asset_class,
        quantity=quantity,
        avg_cost=avg_cost,
        current_price=price,
        market_value=quantity * price * multiplier,
        unrealized_pl=(price - avg_cost) * quantity * multiplier,
        as_of=ts(updated, "updated-at") if updated else now,
        contract=contract,
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


# An option's end of life: a "Receive Deliver" transaction of the contract ("instrument-type"
# "Equity Option", padded OCC "symbol") whose sub-type names the event, with an unsigned
# "quantity" of contracts and no order id; the delivered shares are a second Receive Deliver
# of the underlying ("Buy to Open 4000 RIVN @ 14.00"). Sub-types as in tastytrade's
# transactions (https://developer.tastytrade.com/open-api-spec/transactions/; a recorded
# answer: "transaction-sub-type": "Assignment", "description": "Removal of option due to
# assignment", "quantity": "40.0").
_OPTION_LIFECYCLE = {
    "Expiration": "option_expiration",
    "Assignment": "option_assignment",
    "Exercise": "option_exercise",
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
    elif (
        kind == "Receive Deliver"
        and item.get("instrument-type") == "Equity Option"
        and sub_type in _OPTION_LIFECYCLE
    ):
        type_ = _OPTION_LIFECYCLE[str(sub_type)]
    elif isinstance(kind, str) and kind:
        type_ = "other"
    else:
        raise unknown("transaction-type", kind)
    symbol = item.get("symbol")
    if item.get("instrument-type") == "Equity Option" and isinstance(symbol, str):
        symbol = option_from_wire(symbol).symbol
    quantity = opt_dec(item.get("quantity"), "quantity")
    if type_ in _OPTION_LIFECYCLE.values() and quantity is not None and "action" in item:
        # Where an action comes with it, the quantity is the position's signed change
        # (the gateway's lifecycle convention): a sale closes a long, a purchase a short.
        side = _ACTIONS.get(str(item.get("action")))
        if side is None:
            raise unknown("transaction action", item.get("action"))
        quantity = -quantity.copy_abs() if side is OrderSide.sell else quantity.copy_abs()
    return Transaction(
        transaction_id=_str_id(item.get("id"), "transaction id"),
        type=type_,
        occurred_at=ts(item.get("executed-at"), "executed-at"),
        amount=signed(item.get("net-value"), item.get("net-value-effect"), "net-value"),
        symbol=symbol if isinstance(symbol, str) and symbol else None,
        quantity=quantity,
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


# --- options: chains, quotes, preview ---------------------------------------------------

# ``expiration-type`` values of the nested chain (observed: "Regular", "Weekly",
# "Quarterly", "End-Of-Month"; tastytrade Rust crate ``types::wire::ExpirationType``,
# tastyware/tastytrade docs/instruments.rst shows ``expiration_type='Regular'``).
_EXPIRATION_TYPES = {
    "Regular": ExpirationType.standard,
    "Weekly": ExpirationType.weekly,
    "Quarterly": ExpirationType.quarterly,
    "End-Of-Month": ExpirationType.end_of_month,
}
# ``exercise-style`` of an option instrument ("American" in every recorded answer).
_EXERCISE_STYLES = {"American": OptionStyle.american, "European": OptionStyle.european}


@dataclass(frozen=True, slots=True)
class ChainExpiration:
    expiration: OptionExpiration
    contracts: tuple[OptionContract, ...]


def nested_chain_from_wire(items: list[Any], underlying: str) -> list[ChainExpiration]:
    """``GET /option-chains/{symbol}/nested`` items (SDK ``NestedOptionChain``): one item per
    root (SPX and SPXW both answer for SPX), each with ``expirations[]`` of ``{expiration-type,
    expiration-date, days-to-expiration, settlement-type, strikes[{strike-price, call, put,
    call-streamer-symbol, put-streamer-symbol}]}``. Expirations of several roots on one date
    are merged, each contract keeping its root."""
    by_date: dict[date, tuple[ExpirationType, list[OptionContract]]] = {}
    for item in items:
        if not isinstance(item, dict):
            raise unknown("nested chain item", type(item).__name__)
        multiplier = item.get("shares-per-contract")
        chain_underlying = item.get("underlying-symbol") or underlying
        expirations = item.get("expirations")
        if not isinstance(expirations, list):
            raise unknown("nested chain expirations", type(expirations).__name__)
        for expiration in expirations:
            if not isinstance(expiration, dict):
                raise unknown("nested chain expiration", type(expiration).__name__)
            raw_type = expiration.get("expiration-type")
            kind = _EXPIRATION_TYPES.get(str(raw_type))
            if kind is None:
                raise unknown("expiration-type", raw_type)
            day = WIRE.timestamp(
                expiration.get("expiration-date"), "expiration-date", date_only=True
            ).date()
            strikes = expiration.get("strikes")
            if not isinstance(strikes, list):
                raise unknown("nested chain strikes", type(strikes).__name__)
            found = by_date.setdefault(day, (kind, []))
            for strike in strikes:
                if not isinstance(strike, dict):
                    raise unknown("nested chain strike", type(strike).__name__)
                for key in ("call", "put"):
                    contract = option_from_wire(
                        strike.get(key), underlying=chain_underlying, multiplier=multiplier
                    )
                    if contract.expiration != day or contract.strike != dec(
                        strike.get("strike-price"), "strike-price"
                    ):
                        raise unknown(f"nested chain {key} symbol", strike.get(key))
                    found[1].append(contract)
    return [
        ChainExpiration(OptionExpiration(day, kind), tuple(contracts))
        for day, (kind, contracts) in sorted(by_date.items())
    ]


def option_quotes_from_wire(
    items: list[Any], contracts: list[OptionContract], now: datetime
) -> list[OptionQuote]:
    """``GET /market-data/by-type?equity-option=...`` items (SDK ``MarketData``) for the
    asked contracts, in their order. tastytrade's REST quotes carry ``bid``, ``ask``,
    ``last``, ``mark`` and ``open-interest`` but no greeks (those come only from DXLink
    ``Greeks`` events, https://developer.tastytrade.com/docs/concepts/streaming), so
    ``greeks`` is None. A contract without a quote keeps empty prices."""
    by_symbol: dict[str, dict[str, Any]] = {}
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("symbol"), str):
            by_symbol[option_from_wire(item["symbol"]).symbol] = item
    result = []
    for contract in contracts:
        item = by_symbol.get(contract.symbol)
        if item is None:
            result.append(OptionQuote(contract, None, None, None, None, None, "broker", now))
            continue
        interest = opt_dec(item.get("open-interest"), "open-interest")
        updated = item.get("updated-at")
        result.append(
            OptionQuote(
                contract=contract,
                bid=opt_dec(item.get("bid"), "bid"),
                ask=opt_dec(item.get("ask"), "ask"),
                last=opt_dec(item.get("last"), "last"),
                open_interest=int(interest) if interest is not None else None,
                greeks=None,
                source="broker",
                as_of=ts(updated, "updated-at") if updated else now,
            )
        )
    return result


def _messages(raw: object, field: str) -> tuple[str, ...]:
    """``warnings``/``errors`` of an order answer: ``[{"code", "message"}]`` (SDK
    ``Message``)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise unknown(field, type(raw).__name__)
    result = []
    for item in raw:
        if isinstance(item, dict):
            text = item.get("message") or item.get("reason") or item.get("code")
            code = item.get("code") or item.get("domain")
            result.append(f"{code}: {text}" if code and text != code else str(text))
        elif isinstance(item, str):
            result.append(item)
        else:
            raise unknown(field, item)
    return tuple(result)


def preview_from_wire(
    data: object, order: OrderRequest, natural_debit: Decimal | None = None
) -> OrderPreview:
    """A dry-run answer (``POST /accounts/{n}/orders/dry-run``, SDK ``PlacedOrderResponse``):
    ``buying-power-effect`` (``change-in-buying-power`` with its ``-effect``),
    ``fee-calculation`` (``total-fees`` with its ``-effect``), ``warnings`` and ``errors``.

    The cash estimate is the order's net price x quantity x multiplier (100 for options)
    signed by its ``price-effect``, less fees. A market order has no price: its estimate is
    ``natural_debit`` (per unit, from current quotes: buys at the ask, sells at the bid) when
    the caller has one, else the buying-power change tastytrade states.
    """
    if not isinstance(data, dict):
        raise unknown("dry-run payload", type(data).__name__)
    bp = data.get("buying-power-effect")
    if not isinstance(bp, dict):
        raise unknown("buying-power-effect", bp)
    bp_change = signed(
        bp.get("change-in-buying-power"),
        bp.get("change-in-buying-power-effect"),
        "change-in-buying-power",
    )
    fees_raw = data.get("fee-calculation")
    fees = _ZERO
    if isinstance(fees_raw, dict):
        fees = signed(
            fees_raw.get("total-fees"), fees_raw.get("total-fees-effect"), "total-fees"
        ).copy_abs()
    elif fees_raw is not None:
        raise unknown("fee-calculation", fees_raw)
    placed = data.get("order")
    price = effect = None
    if isinstance(placed, dict):
        price = opt_dec(placed.get("price"), "price")
        effect = placed.get("price-effect")
    multiplier = Decimal(1)
    if order.is_multi_leg or asset_class_of(order.symbol) is AssetClass.option:
        multiplier = Decimal(100)
    if price is not None and effect in ("Debit", "Credit"):
        gross = signed(price, effect, "price") * order.quantity * multiplier
    elif natural_debit is not None:
        gross = -natural_debit * order.quantity * multiplier
    else:
        gross = bp_change
    cash = gross - fees
    direction = (
        PriceEffect.debit if cash < 0 else PriceEffect.credit if cash > 0 else PriceEffect.even
    )
    return OrderPreview(
        estimated_cash_change=cash,
        direction=direction,
        buying_power_change=bp_change,
        fees=fees,
        warnings=_messages(data.get("warnings"), "warnings"),
        rejections=_messages(data.get("errors"), "errors"),
        source=PreviewSource.broker,
    )


def rejection_preview(reason: str) -> OrderPreview:
    """A dry run refused outright (422 ``preflight_check_failure`` with its causes, a 400
    ``validation_error``): nothing would be placed; the causes are the rejections."""
    return OrderPreview(
        estimated_cash_change=_ZERO,
        direction=PriceEffect.even,
        buying_power_change=None,
        fees=_ZERO,
        warnings=(),
        rejections=(reason,),
        source=PreviewSource.broker,
    )


# --- account streamer ------------------------------------------------------------------


def update_from_notification(message: dict[str, Any], account_ref: str) -> OrderUpdate | None:
    """One account-streamer notification: ``{"type": "Order", "data": {...}, "timestamp":
    <epoch ms>}``; None for the other types (AccountBalance, CurrentPosition, ...) and for
    orders the gateway does not model. ``fills`` are all the order's fills so far; on a
    spread each names its leg (``legs[].fills[]`` of the order, SDK ``Leg``)."""
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
