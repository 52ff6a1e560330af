"""IBKR options on the wire: the secdef walk's answers, combo ``conidex``, snapshots, what-if.

Sources (each quirk below names its own):

* IBKR's Web API OpenAPI document ("IB REST API" 2.13.0, rendered at
  https://www.interactivebrokers.com/campus/ibkr-api-page/webapi-ref/; the copy read is
  codyfarrey/swagger-codegen-demo ``src/main/resources/ibkr-client-apispec.json``) for
  ``/iserver/secdef/search`` (``conid`` a string; ``opt``: the listed expiration dates,
  ``YYYYMMDD;...``; the ``OPT`` section's ``months``: ``MAR24;APR24;...``),
  ``/iserver/secdef/strikes`` (``{"call": [numbers], "put": [numbers]}``),
  ``/iserver/secdef/info`` (``conid`` an integer, ``maturityDate`` ``YYYYMMDD``, ``right``
  C|P, ``strike`` a number), ``/iserver/account/{id}/orders/whatif`` (``amount``,
  ``equity``, ``initial``, ``maintenance``, ``position`` as formatted text such as
  ``"1,977.60 USD (10 Shares)"``, ``warn``, ``error``), ``/portfolio/{id}/positions/{page}``
  option rows and ``/iserver/account/trades``.
* ``Voyz/ibind`` (``contract_mixin.py``, ``examples/rest_06_options_chain.py``,
  ``ibkr_definitions.py``) for the walk's parameters, the combo ``conidex``
  ``"{spread_conid};;;{leg_conid}/{signed ratio},..."`` with its currency spread conids, and
  the snapshot field ids.
* The combo price sign: IBKR's "Notes on combination orders"
  (https://www.ibkrguides.com/traderworkstation/notes-on-combination-orders.htm, quoted in
  wboayue/rust-ibapi PR #338): buying a spread that pays you (a credit) takes a **negative**
  limit price; the web UI's own iron-condor payload (Voyz/ibind issue #51) sends
  ``"side": "BUY"`` with ``"price": -15``. We always send the combo as BUY with the legs'
  signs in the ratios, so debit = positive price, credit = negative, even = 0.

Not documented, so chosen and marked: the maximum number of combo legs (``MAX_LEGS``, the
gateway's own 2-4), how the order answers report a combo (``sec_type``/``secType`` ``BAG``
with the combo's ``conidex``), and that a combo fills in whole strategy units.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from app.brokers import errors
from app.brokers.base import (
    AssetClass,
    BrokerOrder,
    BrokerOrderLeg,
    ExpirationType,
    Greeks,
    InvalidOptionSymbol,
    OptionContract,
    OptionExpiration,
    OptionQuote,
    OptionRight,
    OrderPreview,
    OrderRequest,
    OrderSide,
    OrderType,
    Position,
    PreviewSource,
    PriceEffect,
    TimeInForce,
    Transaction,
)
from app.brokers.ibkr.mapping import SLUG, WIRE, number, prices_to_wire

unknown, dec, opt_dec = WIRE.unknown, WIRE.decimal, WIRE.opt_decimal
_ZERO = Decimal(0)

# The currency's spread ("BAG") conid that heads a combo's conidex (ibind
# examples/rest_06_options_chain.py, "_SPREAD_CONIDS").
SPREAD_CONIDS = {
    "AUD": 61227077,
    "CAD": 61227082,
    "CHF": 61227087,
    "CNH": 136000441,
    "GBP": 58666491,
    "HKD": 61227072,
    "INR": 136000444,
    "JPY": 61227069,
    "KRW": 136000424,
    "MXN": 136000449,
    "SEK": 136000429,
    "SGD": 426116555,
    "USD": 28812380,
}
# Not documented for the Client Portal API: the public contract's 2-4 legs (an iron condor,
# the widest the web UI payload of ibind issue #51 shows, is four).
MAX_LEGS = 4
COMBO_ORDER_TYPES = frozenset({OrderType.market, OrderType.limit})
COMBO_TIFS = frozenset({TimeInForce.day, TimeInForce.gtc})
OPTION_TIFS = frozenset({TimeInForce.day, TimeInForce.gtc, TimeInForce.ioc})

# Snapshot field ids (ibind ``ibkr_definitions.py``; Campus "Market Data Fields"):
# 31 last, 84 bid, 86 ask, 7308 delta, 7309 gamma, 7310 theta, 7311 vega, 7633 implied
# volatility of this strike in percent, 7638 option open interest. IBKR has no rho field.
OPTION_FIELDS = "31,84,86,7308,7309,7310,7311,7633,7638"
GREEKS_SOURCE = "broker"

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_MONTH_CODE = re.compile(r"^(JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC)(\d{2})$")
_RIGHTS = {"C": OptionRight.call, "P": OptionRight.put}
WIRE_RIGHTS = {OptionRight.call: "C", OptionRight.put: "P"}
_CONIDEX = re.compile(r"^(\d+);;;(\d+/[+-]?\d+(?:,\d+/[+-]?\d+)*)$")
_ROOT = re.compile(r"^[A-Z][A-Z0-9.]{0,5}$")


@dataclass(frozen=True, slots=True)
class Listed:
    """One option contract as IBKR lists it: its conid and its terms."""

    conid: int
    contract: OptionContract
    currency: str


@dataclass(frozen=True, slots=True)
class OptionListing:
    """The ``OPT`` part of an underlying's ``secdef/search`` answer."""

    underlying_conid: int
    months: tuple[str, ...]
    dates: tuple[date, ...] | None  # the ``opt`` dates when IBKR sends them


@dataclass(frozen=True, slots=True)
class ComboLeg:
    conid: int
    ratio: int  # signed: positive buys, negative sells (per combo unit bought)


# --- secdef walk --------------------------------------------------------------------------


def month_code(day: date) -> str:
    """``JAN27``: the ``month`` parameter of secdef/strikes and secdef/info."""
    return f"{_MONTHS[day.month - 1]}{day:%y}"


def ymd(value: object, field: str) -> date:
    if isinstance(value, Decimal) and value == value.to_integral_value():
        value = str(int(value))
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or len(value) != 8 or not value.isdigit():
        raise unknown(field, value)
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        raise unknown(field, value) from None


def listing_from_search(body: object, underlying: str) -> OptionListing | None:
    """The entry for ``underlying`` with an ``OPT`` section (several entries may share a
    symbol, e.g. an index and a stock: the one with options wins); None if none lists any."""
    if isinstance(body, dict) and "error" in body:
        return None
    if not isinstance(body, list):
        raise unknown("secdef search payload", type(body).__name__)
    for item in body:
        if not isinstance(item, dict) or item.get("symbol") != underlying:
            continue
        sections = item.get("sections")
        if not isinstance(sections, list):
            continue
        for section in sections:
            if not isinstance(section, dict) or section.get("secType") != "OPT":
                continue
            months_raw = section.get("months")
            if not isinstance(months_raw, str) or not months_raw:
                continue
            months = tuple(m for m in months_raw.split(";") if m)
            if not all(_MONTH_CODE.match(m) for m in months):
                raise unknown("secdef months", months_raw)
            conid_raw = item.get("conid")
            if not isinstance(conid_raw, str) or not conid_raw.isdigit():
                raise unknown("secdef search conid", conid_raw)
            opt = item.get("opt")
            dates: tuple[date, ...] | None = None
            if isinstance(opt, str) and opt:
                dates = tuple(sorted({ymd(d, "opt date") for d in opt.split(";") if d}))
            elif opt is not None:
                raise unknown("secdef opt dates", opt)
            return OptionListing(int(conid_raw), months, dates)
    return None


def strikes_from_wire(body: object, right: OptionRight | None) -> list[Decimal]:
    """``{"call": [...], "put": [...]}``: the strikes of the month (both rights when None)."""
    if not isinstance(body, dict):
        raise unknown("secdef strikes payload", type(body).__name__)
    found: set[Decimal] = set()
    for key, which in (("call", OptionRight.call), ("put", OptionRight.put)):
        values = body.get(key)
        if values is None:
            continue
        if not isinstance(values, list):
            raise unknown(f"secdef strikes {key}", values)
        if right is None or right is which:
            found.update(_strike(v) for v in values)
    return sorted(found)


def _strike(value: object) -> Decimal:
    strike = dec(value, "strike").normalize()
    if strike <= 0:
        raise unknown("strike", value)
    return strike.quantize(Decimal(1)) if strike == strike.to_integral_value() else strike


def strike_param(strike: Decimal) -> str:
    """The ``strike`` query value: plain text, no exponent (``192.5``, ``190``)."""
    return format(strike.normalize(), "f")


def listed_from_info(body: object) -> list[Listed]:
    """``secdef/info``: the month's contracts for one strike and right (a list; weeklies in
    the month are several entries). A single object is taken as a one-entry list."""
    rows = [body] if isinstance(body, dict) and "conid" in body else body
    if isinstance(body, dict) and "error" in body:
        return []
    if not isinstance(rows, list):
        raise unknown("secdef info payload", type(body).__name__)
    result = []
    for row in rows:
        if not isinstance(row, dict):
            raise unknown("secdef info entry", type(row).__name__)
        if row.get("secType") != "OPT":
            raise unknown("secdef info secType", row.get("secType"))
        conid = row.get("conid")
        if isinstance(conid, Decimal) and conid == conid.to_integral_value():
            conid = int(conid)
        if not isinstance(conid, int) or isinstance(conid, bool) or conid <= 0:
            raise unknown("secdef info conid", conid)
        right = _RIGHTS.get(str(row.get("right")))
        if right is None:
            raise unknown("secdef info right", row.get("right"))
        underlying = row.get("symbol")
        if not isinstance(underlying, str) or not _ROOT.match(underlying):
            raise unknown("secdef info symbol", underlying)
        root = row.get("tradingClass") or underlying
        if not isinstance(root, str) or not _ROOT.match(root):
            raise unknown("secdef info tradingClass", root)
        multiplier = dec(row.get("multiplier"), "multiplier")
        if multiplier <= 0:
            raise unknown("multiplier", row.get("multiplier"))
        currency = row.get("currency")
        if not isinstance(currency, str) or not currency:
            raise unknown("secdef info currency", currency)
        contract = OptionContract(
            underlying=underlying,
            root=root,
            expiration=ymd(row.get("maturityDate"), "maturityDate"),
            right=right,
            strike=_strike(row.get("strike")),
            multiplier=multiplier.normalize()
            if multiplier != multiplier.to_integral_value()
            else multiplier.quantize(Decimal(1)),
        )
        result.append(Listed(conid, contract, currency))
    return result


def contract_from_secdef(row: object) -> Listed:
    """One ``/trsrv/secdef?conids=`` entry of an option (reverse lookup by conid): ``ticker``
    is the underlying; IBKR names no trading class here, so the root is the underlying."""
    if not isinstance(row, dict):
        raise unknown("secdef entry", type(row).__name__)
    if row.get("assetClass") != "OPT":
        raise unknown("secdef assetClass", row.get("assetClass"))
    conid = row.get("conid")
    if not isinstance(conid, int) or isinstance(conid, bool):
        raise unknown("secdef conid", conid)
    ticker = row.get("ticker")
    if not isinstance(ticker, str) or not _ROOT.match(ticker):
        raise unknown("secdef ticker", ticker)
    right = _RIGHTS.get(str(row.get("putOrCall")))
    if right is None:
        raise unknown("secdef putOrCall", row.get("putOrCall"))
    multiplier = dec(row.get("multiplier"), "multiplier")
    contract = OptionContract(
        underlying=ticker,
        root=ticker,
        expiration=ymd(row.get("expiry"), "expiry"),
        right=right,
        strike=_strike(row.get("strike")),
        multiplier=multiplier.quantize(Decimal(1))
        if multiplier == multiplier.to_integral_value()
        else multiplier,
    )
    return Listed(conid, contract, str(row.get("currency") or "USD"))


def expiration_type(day: date) -> ExpirationType:
    """IBKR names no expiration type: derived from the date (the third Friday is the
    monthly, in March/June/September/December the quarterly; other Fridays weeklies)."""
    if day.weekday() == 4 and 15 <= day.day <= 21:
        return ExpirationType.quarterly if day.month % 3 == 0 else ExpirationType.standard
    if day.weekday() == 4:
        return ExpirationType.weekly
    return ExpirationType.other


def expirations(dates: Sequence[date], today: date) -> list[OptionExpiration]:
    return [
        OptionExpiration(expiration=d, expiration_type=expiration_type(d))
        for d in sorted(set(dates))
        if d >= today
    ]


# --- quotes -------------------------------------------------------------------------------


def _field(item: dict[str, Any], key: str) -> Decimal | None:
    raw = item.get(key)
    if raw is None or raw == "":
        return None
    text = str(raw).strip()
    if key == "31":
        text = text.lstrip("CH")  # "C": the previous close, "H": halted (ibind definitions)
    if key == "7633":
        text = text.rstrip("%")
    try:
        value = Decimal(text.replace(",", ""))
    except ArithmeticError:
        raise unknown(f"snapshot field {key}", raw) from None
    if not value.is_finite():
        raise unknown(f"snapshot field {key}", raw)
    return value


def option_quote_from_snapshot(
    item: dict[str, Any], contract: OptionContract, now: datetime
) -> OptionQuote:
    """A snapshot entry for an option conid; fields not (yet) there stay None, nothing is
    invented. IV 7633 is a percent (``"24.5%"``) and becomes a fraction."""
    iv = _field(item, "7633")
    greeks_raw = [_field(item, k) for k in ("7308", "7309", "7310", "7311")]
    greeks = None
    if iv is not None or any(g is not None for g in greeks_raw):
        delta, gamma, theta, vega = greeks_raw
        greeks = Greeks(
            delta=delta,
            gamma=gamma,
            theta=theta,
            vega=vega,
            rho=None,
            iv=None if iv is None else iv / 100,
        )
    oi = _field(item, "7638")
    updated = item.get("_updated")
    return OptionQuote(
        contract=contract,
        bid=_field(item, "84"),
        ask=_field(item, "86"),
        last=_field(item, "31"),
        open_interest=None if oi is None else int(oi),
        greeks=greeks,
        source=GREEKS_SOURCE,
        as_of=WIRE.epoch_ms(updated, "_updated") if updated is not None else now,
    )


def has_quote(item: dict[str, Any]) -> bool:
    """Has the snapshot entry its bid and ask yet (the first request only subscribes)?"""
    return item.get("84") not in (None, "") and item.get("86") not in (None, "")


# --- orders -------------------------------------------------------------------------------


def order_contract(symbol: str) -> OptionContract:
    try:
        return OptionContract.parse(symbol)
    except InvalidOptionSymbol as exc:
        raise errors.UnsupportedOrder(str(exc), broker=SLUG) from None


def check_option_order(order: OrderRequest, today: date) -> list[OptionContract]:
    """Everything IBKR cannot take, refused before any request. Returns the contracts (the
    order's own for a single leg, the legs' for a combo)."""
    if order.quantity <= 0 or order.quantity != order.quantity.to_integral_value():
        raise errors.UnsupportedOrder("IBKR option orders are in whole contracts", broker=SLUG)
    if order.extended_hours:
        raise errors.UnsupportedOrder(
            "US equity options trade in regular hours only (no outsideRTH)", broker=SLUG
        )
    if not order.is_multi_leg:
        if order.time_in_force not in OPTION_TIFS:
            raise errors.UnsupportedOrder(
                f"IBKR takes DAY, GTC or IOC, not {order.time_in_force.value}", broker=SLUG
            )
        contract = order_contract(order.symbol)
        if contract.is_expired(today):
            raise errors.UnsupportedOrder(f"{contract.symbol} has expired", broker=SLUG)
        return [contract]
    legs = order.legs
    if not 2 <= len(legs) <= MAX_LEGS:
        raise errors.UnsupportedOrder(
            f"an IBKR combo has 2 to {MAX_LEGS} legs, not {len(legs)}", broker=SLUG
        )
    contracts = [order_contract(leg.symbol) for leg in legs]
    if len({c.symbol for c in contracts}) != len(contracts):
        raise errors.UnsupportedOrder("the legs name distinct contracts", broker=SLUG)
    if len({c.underlying for c in contracts}) != 1:
        raise errors.UnsupportedOrder(
            "every leg of an IBKR option combo is on one underlying", broker=SLUG
        )
    if contracts[0].underlying != order.symbol:
        raise errors.UnsupportedOrder(
            f"the order's symbol {order.symbol} is not the legs' underlying", broker=SLUG
        )
    for contract in contracts:
        if contract.is_expired(today):
            raise errors.UnsupportedOrder(f"{contract.symbol} has expired", broker=SLUG)
    ratios = [leg.ratio for leg in legs]
    if any(r < 1 for r in ratios):
        raise errors.UnsupportedOrder("leg ratios are whole numbers from 1", broker=SLUG)
    if math.gcd(*ratios) != 1:
        raise errors.UnsupportedOrder(
            "leg ratios have a common factor; put it in the quantity", broker=SLUG
        )
    if order.order_type not in COMBO_ORDER_TYPES:
        raise errors.UnsupportedOrder(
            f"IBKR combos here are market or limit, not {order.order_type.value}", broker=SLUG
        )
    if order.time_in_force not in COMBO_TIFS:
        raise errors.UnsupportedOrder(
            f"IBKR combos here are DAY or GTC, not {order.time_in_force.value}", broker=SLUG
        )
    if order.order_type is OrderType.market:
        if order.limit_price is not None:
            raise errors.UnsupportedOrder("a market combo has no limit price", broker=SLUG)
    else:
        if order.limit_price is None or order.price_effect is None:
            raise errors.UnsupportedOrder(
                "a limit combo needs a limit price and its price effect", broker=SLUG
            )
        if order.limit_price < 0:
            raise errors.UnsupportedOrder(
                "the net limit price is unsigned; its direction is price_effect", broker=SLUG
            )
        if (order.price_effect is PriceEffect.even) != (order.limit_price == 0):
            raise errors.UnsupportedOrder(
                "a net price of 0 is even, and an even order's net price is 0", broker=SLUG
            )
    if order.stop_price is not None:
        raise errors.UnsupportedOrder("IBKR combos here take no stop price", broker=SLUG)
    known = known_direction(order, contracts)
    if known is not None and order.price_effect is not None and order.price_effect is not known:
        raise errors.UnsupportedOrder(
            f"these legs make a {known.value}, not a {order.price_effect.value}", broker=SLUG
        )
    wanted_side = OrderSide.sell if order.price_effect is PriceEffect.credit else OrderSide.buy
    if order.price_effect is not None and order.side is not wanted_side:
        raise errors.UnsupportedOrder(
            f"a {order.price_effect.value} combo's side is {wanted_side.value}", broker=SLUG
        )
    return contracts


def known_direction(order: OrderRequest, contracts: Sequence[OptionContract]) -> PriceEffect | None:
    """The direction the legs alone decide: all bought is a debit, all sold a credit, and a
    one-by-one vertical (same right and expiration) pays for the leg nearer the money: buying
    the lower-strike call, or the higher-strike put, is a debit. None where prices decide."""
    sides = {leg.side for leg in order.legs}
    if sides == {OrderSide.buy}:
        return PriceEffect.debit
    if sides == {OrderSide.sell}:
        return PriceEffect.credit
    if len(contracts) == 2 and all(leg.ratio == 1 for leg in order.legs):
        a, b = contracts
        if a.right is b.right and a.expiration == b.expiration and a.multiplier == b.multiplier:
            bought = contracts[0] if order.legs[0].side is OrderSide.buy else contracts[1]
            sold = contracts[1] if bought is contracts[0] else contracts[0]
            dearer = (
                bought.strike < sold.strike
                if bought.right is OptionRight.call
                else bought.strike > sold.strike
            )
            return PriceEffect.debit if dearer else PriceEffect.credit
    return None


def conidex(currency: str, legs: Sequence[ComboLeg]) -> str:
    spread = SPREAD_CONIDS.get(currency)
    if spread is None:
        raise errors.UnsupportedOrder(f"IBKR lists no spread conid for {currency}", broker=SLUG)
    return f"{spread};;;" + ",".join(f"{leg.conid}/{leg.ratio}" for leg in legs)


def parse_conidex(text: object) -> tuple[int, list[ComboLeg]]:
    """``"28812380;;;776184118/3,783050300/-2"`` into the spread conid and signed legs."""
    if not isinstance(text, str):
        raise unknown("conidex", text)
    match = _CONIDEX.match(text)
    if match is None:
        raise unknown("conidex", text)
    legs = []
    for part in match[2].split(","):
        conid, ratio = part.split("/")
        if int(ratio) == 0:
            raise unknown("conidex ratio", text)
        legs.append(ComboLeg(int(conid), int(ratio)))
    return int(match[1]), legs


def signed_price(order: OrderRequest) -> Decimal | None:
    """The combo's limit price as IBKR takes it (a BUY combo): debit positive, credit
    negative, even zero; None for a market combo."""
    if order.order_type is OrderType.market or order.limit_price is None:
        return None
    if order.price_effect is PriceEffect.credit:
        return -order.limit_price
    if order.price_effect is PriceEffect.even:
        return _ZERO
    return order.limit_price


def option_order_to_wire(order: OrderRequest, account_id: str, conid: int) -> dict[str, Any]:
    """A single-leg option order: the option's conid, ``secType`` ``{conid}:OPT``. IBKR has
    no open/close flag (it nets positions), so ``position_effect`` is not sent."""
    body: dict[str, Any] = {
        "acctId": account_id,
        "conid": conid,
        "secType": f"{conid}:OPT",
        "cOID": order.client_order_id,
        "orderType": _WIRE_TYPES[order.order_type],
        "side": "BUY" if order.side is OrderSide.buy else "SELL",
        "quantity": number(order.quantity),
        "tif": _WIRE_TIFS[order.time_in_force],
    }
    body.update(prices_to_wire(order.order_type, order.limit_price, order.stop_price))
    return body


def combo_order_to_wire(
    order: OrderRequest, account_id: str, currency: str, leg_conids: Sequence[int]
) -> dict[str, Any]:
    """A combo (ibind ``OrderRequest`` with ``conid=None``): ``conidex`` with the currency's
    spread conid and each leg's signed ratio, ``side`` BUY, ``quantity`` in strategy units,
    the signed net ``price`` for a limit."""
    legs = [
        ComboLeg(conid, leg.ratio if leg.side is OrderSide.buy else -leg.ratio)
        for conid, leg in zip(leg_conids, order.legs, strict=True)
    ]
    body: dict[str, Any] = {
        "acctId": account_id,
        "conidex": conidex(currency, legs),
        "cOID": order.client_order_id,
        "orderType": _WIRE_TYPES[order.order_type],
        "side": "BUY",
        "quantity": number(order.quantity),
        "tif": _WIRE_TIFS[order.time_in_force],
    }
    price = signed_price(order)
    if price is not None:
        body["price"] = number(price)
    return body


_WIRE_TYPES = {
    OrderType.market: "MKT",
    OrderType.limit: "LMT",
    OrderType.stop: "STP",
    OrderType.stop_limit: "STOP_LIMIT",
}
_WIRE_TIFS = {TimeInForce.day: "DAY", TimeInForce.gtc: "GTC", TimeInForce.ioc: "IOC"}


def combo_price_effect(signed: Decimal | None, market: bool) -> PriceEffect | None:
    if market or signed is None:
        return None
    if signed > 0:
        return PriceEffect.debit
    if signed < 0:
        return PriceEffect.credit
    return PriceEffect.even


# --- preview ------------------------------------------------------------------------------

_AMOUNT = re.compile(r"^\s*(-?[\d,]*\.?\d+)(?:\s*\.\.\.\s*(-?[\d,]*\.?\d+))?(?:\s+[A-Z]{3})?")


def whatif_amount(value: object, field: str) -> Decimal | None:
    """``"1,977.60 USD (10 Shares)"``, ``"1 USD"``, ``"1.1 ... 1.2 USD"`` (a range: its
    upper end, the conservative figure), ``"-1"``; None when absent."""
    if value is None or value == "":
        return None
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        return Decimal(value)
    if not isinstance(value, str):
        raise unknown(field, value)
    match = _AMOUNT.match(value)
    if match is None:
        raise unknown(field, value)
    figure = match[2] or match[1]
    return Decimal(figure.replace(",", ""))


def _change(body: dict[str, Any], key: str) -> Decimal | None:
    part = body.get(key)
    if part is None:
        return None
    if not isinstance(part, dict):
        raise unknown(f"whatif {key}", part)
    return whatif_amount(part.get("change"), f"{key}.change")


def order_direction(order: OrderRequest) -> PriceEffect:
    if order.is_multi_leg:
        if order.price_effect is not None:
            return order.price_effect
        return PriceEffect.credit if order.side is OrderSide.sell else PriceEffect.debit
    return PriceEffect.debit if order.side is OrderSide.buy else PriceEffect.credit


def preview_from_whatif(body: object, direction: PriceEffect) -> OrderPreview:
    """``orders/whatif`` into an ``OrderPreview``. ``amount.amount`` is the order's value
    (unsigned), ``amount.commission`` the fees; the cash effect takes the order's direction.
    ``buying_power_change`` is minus the initial-margin change (what the order ties up).
    ``error`` (IBKR would refuse the order) becomes a rejection, ``warn`` a warning."""
    if not isinstance(body, dict):
        raise unknown("whatif payload", type(body).__name__)
    amount_part = body.get("amount")
    if amount_part is not None and not isinstance(amount_part, dict):
        raise unknown("whatif amount", amount_part)
    amount = abs(whatif_amount((amount_part or {}).get("amount"), "amount.amount") or _ZERO)
    fees = abs(whatif_amount((amount_part or {}).get("commission"), "amount.commission") or _ZERO)
    if direction is PriceEffect.debit:
        cash = -(amount + fees)
    elif direction is PriceEffect.credit:
        cash = amount - fees
    else:
        cash = -fees
    initial = _change(body, "initial")
    warn, error = body.get("warn"), body.get("error")
    return OrderPreview(
        estimated_cash_change=cash,
        direction=direction,
        buying_power_change=None if initial is None else -initial,
        fees=fees,
        warnings=(warn,) if isinstance(warn, str) and warn else (),
        rejections=(error,) if isinstance(error, str) and error else (),
        source=PreviewSource.broker,
    )


# --- positions ------------------------------------------------------------------------------

_DESC_OCC = re.compile(r"\[([A-Z][A-Z0-9.]{0,5} *\d{6}[CP]\d{8}) +\d+\]")


def contract_from_position(body: Mapping[str, Any]) -> OptionContract:
    """An ``assetClass: OPT`` row: ``expiry`` YYYYMMDD, ``putOrCall`` C|P, ``strike`` (text),
    ``multiplier``; ``undSym`` (else ``ticker``) is the underlying. The root comes from the
    OCC symbol in ``contractDesc`` (``"SPY JAN2025 440 C [SPY   250117C00440000 100]"``)
    where IBKR gives it, else it is the underlying."""
    underlying = body.get("undSym") or body.get("ticker")
    if not isinstance(underlying, str) or not _ROOT.match(underlying):
        raise unknown("option position underlying", underlying)
    right = _RIGHTS.get(str(body.get("putOrCall")))
    if right is None:
        raise unknown("putOrCall", body.get("putOrCall"))
    multiplier = dec(body.get("multiplier"), "multiplier")
    if multiplier <= 0:
        raise unknown("multiplier", body.get("multiplier"))
    root = underlying
    desc = body.get("contractDesc")
    if isinstance(desc, str):
        found = _DESC_OCC.search(desc)
        if found is not None:
            root = OptionContract.parse(found[1]).root
    return OptionContract(
        underlying=underlying,
        root=root,
        expiration=ymd(body.get("expiry"), "expiry"),
        right=right,
        strike=_strike(body.get("strike")),
        multiplier=multiplier.quantize(Decimal(1))
        if multiplier == multiplier.to_integral_value()
        else multiplier,
    )


def utc_today(now: datetime) -> date:
    return now.astimezone(UTC).date()


# --- reading orders back --------------------------------------------------------------------


def order_conids(body: Mapping[str, Any]) -> list[int]:
    """The option conids an order answer names (a combo's legs, or the option itself)."""
    sec_type = body.get("sec_type", body.get("secType"))
    if sec_type == "BAG":
        return [leg.conid for leg in parse_conidex(body.get("conidex"))[1]]
    if sec_type == "OPT":
        conid = body.get("conid")
        if isinstance(conid, Decimal):
            conid = int(conid)
        if isinstance(conid, str) and conid.isdigit():
            conid = int(conid)
        if not isinstance(conid, int) or isinstance(conid, bool):
            raise unknown("option order conid", conid)
        return [conid]
    return []


def with_option_terms(
    order: BrokerOrder,
    body: Mapping[str, Any],
    contracts: Mapping[int, OptionContract],
    leg_prices: Mapping[int, Decimal] | None = None,
) -> BrokerOrder:
    """An order read by ``mapping`` (as if a stock), given its option terms: a single option
    gets its canonical symbol; a combo (``BAG``) its legs from ``conidex``, the underlying as
    symbol, the price effect from the sign of its price (a SELL combo flips the signs), the
    unsigned net limit and fill price, and per-leg fills (whole strategy units, so a leg has
    filled ratio x units; its average price from the executions when given)."""
    conids = order_conids(body)
    if not conids:
        return order
    sec_type = body.get("sec_type", body.get("secType"))
    if sec_type == "OPT":
        return replace(order, symbol=contracts[conids[0]].symbol)
    _spread, legs = parse_conidex(body.get("conidex"))
    flip = -1 if order.side is OrderSide.sell else 1
    market = order.order_type is OrderType.market
    raw_price = body.get("limit_price", body.get("price"))
    signed = opt_dec(raw_price, "combo price") if not market else None
    effect = combo_price_effect(None if signed is None else signed * flip, market)
    underlyings = {contracts[leg.conid].underlying for leg in legs}
    if len(underlyings) != 1:
        raise unknown("combo underlyings", sorted(underlyings))
    broker_legs = []
    for leg in legs:
        ratio = leg.ratio * flip
        avg = (leg_prices or {}).get(leg.conid)
        broker_legs.append(
            BrokerOrderLeg(
                symbol=contracts[leg.conid].symbol,
                side=OrderSide.buy if ratio > 0 else OrderSide.sell,
                ratio=abs(ratio),
                position_effect=None,  # IBKR reports none (it nets positions)
                filled_quantity=abs(ratio) * order.filled_quantity,
                avg_fill_price=avg if order.filled_quantity > 0 else None,
            )
        )
    return replace(
        order,
        symbol=underlyings.pop(),
        side=OrderSide.sell if effect is PriceEffect.credit else OrderSide.buy,
        limit_price=None if signed is None else abs(signed),
        avg_fill_price=None if order.avg_fill_price is None else abs(order.avg_fill_price),
        legs=tuple(broker_legs),
        price_effect=effect,
    )


def option_position_from_wire(body: Mapping[str, Any], now: datetime) -> Position:
    """An option row: signed ``position`` in contracts, ``avgPrice`` and ``mktPrice`` per
    share of the contract (``avgCost`` is per contract), ``mktValue`` = price x position x
    multiplier (IBKR's own figure)."""
    contract = contract_from_position(body)
    return Position(
        symbol=contract.symbol,
        asset_class=AssetClass.option,
        quantity=dec(body.get("position"), "position"),
        avg_cost=dec(body.get("avgPrice"), "avgPrice"),
        current_price=dec(body.get("mktPrice"), "mktPrice"),
        market_value=dec(body.get("mktValue"), "mktValue"),
        unrealized_pl=dec(body.get("unrealizedPnl"), "unrealizedPnl"),
        as_of=now,
        contract=contract,
    )


def option_execution(body: Mapping[str, Any], contract: OptionContract) -> Transaction:
    """An ``/iserver/account/trades`` row of ``sec_type`` OPT: a buy or sell of ``size``
    contracts at ``price`` per share; the cash is price x size x multiplier."""
    side = body.get("side")
    if side not in ("B", "S"):
        raise unknown("trade side", side)
    size, price = dec(body.get("size"), "size"), dec(body.get("price"), "price")
    gross = size * price * contract.multiplier
    return Transaction(
        transaction_id=str(body.get("execution_id")),
        type="buy" if side == "B" else "sell",
        occurred_at=WIRE.epoch_ms(body.get("trade_time_r"), "trade_time_r"),
        amount=-gross if side == "B" else gross,
        symbol=contract.symbol,
        quantity=size,
        price=price,
        description=str(body.get("order_description") or "execution"),
    )
