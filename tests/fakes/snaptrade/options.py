"""The fake SnapTrade's option side, from the official spec (../shared/specs/snaptrade-api.yaml):

* ``POST /accounts/{accountId}/trading/options/impact`` (``Trading_getOptionImpact``) and
  ``POST /accounts/{accountId}/trading/options`` (``Trading_placeMlegOrder``), both taking an
  ``MlegTradeForm``; the impact answers ``OptionImpact`` (decimal strings), the placement
  ``MlegOrderResponse`` ``{brokerage_order_id, orders: [AccountOrderRecord per leg]}``;
* ``GET /accounts/{accountId}/orders/details/v2/{brokerageOrderId}`` and
  ``GET /accounts/{accountId}/orders/v2`` (``AccountOrderRecordV2`` with ``legs[]`` and
  ``price_effect``); the V1 ``POST .../orders/details`` "only works for single-leg orders at
  this time": for a multi-leg order this fake answers 400 (the answer is undocumented);
* ``GET /accounts/{accountId}/quotes/options?symbol=`` (``OptionQuote``);
* option positions in ``/positions/all`` (``OptionInstrument``: per-share ``price`` and
  ``cost_basis``, signed ``units``) and in the deprecated ``/holdings`` ``option_positions``
  (``OptionsPosition``: ``average_purchase_price`` per contract);
* activities of option trades (``option_symbol``, ``option_type`` BUY_TO_OPEN...) and of an
  option's end (``OPTIONEXPIRATION``, ``OPTIONASSIGNMENT``, ``OPTIONEXERCISE``).

Contracts and prices come from the paper option market (``SeededOptionMarket``). Which
brokerages trade options here: ``OPTION_BROKERAGES`` (SnapTrade says only "certain option
trading brokerages"; its refusal wording is undocumented and chosen here). A combo fills
whole, at each leg's natural price (buy at the ask, sell at the bid), when ``match()`` finds
its net within the limit.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from app.brokers.base import InvalidOptionSymbol, OptionContract, OptionRight
from app.paper.options_market import SeededOptionMarket

ZERO = Decimal(0)
MAX_LEGS = 4  # "an option order with up to 4 legs"
OPTION_BROKERAGES = frozenset({"SCHWAB"})
MLEG_TYPES = {"MARKET", "LIMIT", "STOP_LOSS_MARKET", "STOP_LOSS_LIMIT"}
V1_TYPES = {
    "MARKET": "Market",
    "LIMIT": "Limit",
    "STOP_LOSS_MARKET": "Stop",
    "STOP_LOSS_LIMIT": "StopLimit",
}
V2_TYPES = {
    "MARKET": "MARKET",
    "LIMIT": "LIMIT",
    "STOP_LOSS_MARKET": "STOP",
    "STOP_LOSS_LIMIT": "STOP_LIMIT",
}
TIFS = {"Day": "DAY", "GTC": "GTC", "FOK": "FOK", "IOC": "IOC"}  # TimeInForceStrict -> V2
ACTIONS = {"BUY_TO_OPEN", "BUY_TO_CLOSE", "SELL_TO_OPEN", "SELL_TO_CLOSE"}
EFFECTS = {"CREDIT", "DEBIT", "EVEN"}
# AccountOrderRecordStatus (order) -> AccountOrderRecordStatusV2 (leg)
LEG_STATUS = {
    "PENDING": "PENDING",
    "ACCEPTED": "PENDING",
    "PARTIAL": "PARTIALLY_EXECUTED",
    "EXECUTED": "EXECUTED",
    "CANCELED": "CANCELED",
    "PARTIAL_CANCELED": "PARTIAL_CANCELED",
    "REJECTED": "REJECTED",
    "EXPIRED": "EXPIRED",
}


@dataclass
class FakeLeg:
    contract: OptionContract
    action: str
    units: int  # contracts of this leg (ratio x strategy units)
    leg_id: str
    filled: int = 0
    execution_price: Decimal | None = None

    @property
    def buys(self) -> bool:
        return self.action.startswith("BUY")


@dataclass
class FakeOptionOrder:
    id: str
    account_id: str
    legs: list[FakeLeg]
    order_type: str  # MlegOrderTypeStrict
    time_in_force: str  # TimeInForceStrict
    limit_price: Decimal | None
    stop_price: Decimal | None
    price_effect: str | None
    time_placed: datetime
    status: str = "ACCEPTED"
    time_executed: datetime | None = None

    @property
    def units(self) -> int:
        return math.gcd(*(leg.units for leg in self.legs))


@dataclass
class FakeOptionPosition:
    contract: OptionContract
    units: Decimal = ZERO  # signed contracts
    cost: Decimal = ZERO  # signed dollars paid for them (per-share price x 100 x units)


@dataclass
class OptionBook:
    """One account's option orders and positions."""

    orders: dict[str, FakeOptionOrder] = field(default_factory=dict)
    positions: dict[str, FakeOptionPosition] = field(default_factory=dict)


def text(value: Decimal) -> str:
    return str(value.normalize()) if value != value.to_integral_value() else str(int(value))


def parse_contract(raw: object, options: SeededOptionMarket, today: date) -> OptionContract | None:
    """A listed contract named by a 21-character OCC symbol (what the spec's examples show)."""
    if not isinstance(raw, str) or len(raw) != 21:
        return None
    try:
        contract = OptionContract.parse(raw)
    except InvalidOptionSymbol:
        return None
    return contract if options.is_listed(contract, today) else None


@dataclass(frozen=True)
class ParsedForm:
    legs: list[tuple[OptionContract, str, int]]
    order_type: str
    time_in_force: str
    limit_price: Decimal | None
    stop_price: Decimal | None
    price_effect: str | None


def parse_form(
    body: dict[str, Any] | None, options: SeededOptionMarket, today: date
) -> ParsedForm | str:
    """An ``MlegTradeForm``, or the reason SnapTrade would refuse it (400)."""
    if body is None:
        return "Unable to verify data sent"
    order_type, tif = body.get("order_type"), body.get("time_in_force")
    if order_type not in MLEG_TYPES or tif not in TIFS:
        return "Invalid order_type or time_in_force"
    effect = body.get("price_effect")
    if effect is not None and effect not in EFFECTS:
        return "Invalid price_effect"
    raw_legs = body.get("legs")
    if not isinstance(raw_legs, list) or not 1 <= len(raw_legs) <= MAX_LEGS:
        return f"An option order has 1 to {MAX_LEGS} legs"
    legs: list[tuple[OptionContract, str, int]] = []
    for raw in raw_legs:
        if not isinstance(raw, dict) or not isinstance(raw.get("instrument"), dict):
            return "Invalid leg"
        instrument = raw["instrument"]
        if instrument.get("instrument_type") != "OPTION":
            return "Only option legs are supported by this brokerage"
        contract = parse_contract(instrument.get("symbol"), options, today)
        if contract is None:
            return f"Symbol not found: {instrument.get('symbol')}"
        units = raw.get("units")
        if not isinstance(units, int) or isinstance(units, bool) or units < 1:
            return "Invalid units"
        if raw.get("action") not in ACTIONS:
            return "Invalid action"
        legs.append((contract, str(raw["action"]), units))
    if len({c.symbol for c, _, _ in legs}) != len(legs):
        return "Duplicate legs"
    if len({c.underlying for c, _, _ in legs}) != 1:
        return "All legs must share one underlying"
    try:
        limit = _decimal(body.get("limit_price"))
        stop = _decimal(body.get("stop_price"))
    except InvalidOperation:
        return "Invalid price"
    if order_type in ("LIMIT", "STOP_LOSS_LIMIT"):
        if effect is None:
            return "price_effect is required for LIMIT and STOP_LOSS_LIMIT orders"
        if effect == "EVEN":
            if limit not in (None, ZERO):
                return "limit_price must be 0 for a net-even order"
            limit = ZERO
        elif limit is None or limit <= 0:
            return "limit_price is required for LIMIT and STOP_LOSS_LIMIT orders"
    if order_type in ("STOP_LOSS_MARKET", "STOP_LOSS_LIMIT") and (stop is None or stop <= 0):
        return "stop_price is required for STOP_LOSS_MARKET and STOP_LOSS_LIMIT orders"
    return ParsedForm(legs, str(order_type), str(tif), limit, stop, effect)


def _decimal(value: object) -> Decimal | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):  # format: decimal strings in MlegTradeForm
        raise InvalidOperation
    result = Decimal(value)
    if not result.is_finite():
        raise InvalidOperation
    return result


def natural_net(
    legs: list[tuple[OptionContract, str, int]], options: SeededOptionMarket, at: datetime
) -> tuple[Decimal, list[Decimal]]:
    """Net per share of the legs as given (positive: a debit), and each leg's natural price."""
    net = ZERO
    prices = []
    for contract, action, units in legs:
        quote = options.quote(contract, at)
        price = quote.ask if action.startswith("BUY") else quote.bid
        prices.append(price)
        net += (1 if action.startswith("BUY") else -1) * units * price
    return net, prices


def option_symbol_wire(contract: OptionContract) -> dict[str, Any]:
    """The spec's ``OptionsSymbol`` (with its ``UnderlyingSymbol``)."""
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"snaptrade-option:{contract.symbol}")),
        "ticker": contract.occ_padded,
        "option_type": "CALL" if contract.right is OptionRight.call else "PUT",
        "strike_price": float(contract.strike),
        "expiration_date": contract.expiration.isoformat(),
        "is_mini_option": contract.multiplier == 10,
        "underlying_symbol": {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"snaptrade-symbol:{contract.underlying}")),
            "symbol": contract.underlying,
            "raw_symbol": contract.underlying,
            "description": f"{contract.underlying} (fake)",
            "currency": {
                "id": "57f81c53-bdda-45a7-a51f-032afd1ae41b",
                "code": "USD",
                "name": "US Dollar",
            },
            "exchange": {
                "id": "2bcd7cc3-e922-4976-bce1-9858296801c3",
                "code": "NASDAQ",
                "mic_code": "XNAS",
                "name": "Nasdaq",
                "timezone": "America/New_York",
                "start_time": "09:30:00",
                "close_time": "16:00:00",
                "suffix": None,
            },
            "type": {
                "id": "2bcd7cc3-e922-4976-bce1-9858296801c4",
                "code": "cs",
                "description": "Common Stock",
                "is_supported": True,
            },
            "figi_code": None,
            "figi_instrument": None,
            "currencies": [],
        },
    }


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def leg_record_v1(order: FakeOptionOrder, leg: FakeLeg) -> dict[str, Any]:
    """One leg as the spec's ``AccountOrderRecord`` ("each record here represents a single
    order leg"); prices per share, quantities as decimal strings."""
    open_quantity = leg.units - leg.filled if order.status in ("ACCEPTED", "PARTIAL") else 0
    canceled = leg.units - leg.filled if order.status in ("CANCELED", "PARTIAL_CANCELED") else 0
    return {
        "brokerage_order_id": leg.leg_id,
        "brokerage_group_order_id": None,
        "order_role": None,
        "status": order.status,
        "universal_symbol": None,
        "option_symbol": option_symbol_wire(leg.contract),
        "quote_universal_symbol": None,
        "quote_currency": None,
        "action": leg.action,
        "total_quantity": str(leg.units),
        "open_quantity": str(open_quantity),
        "canceled_quantity": str(canceled),
        "filled_quantity": str(leg.filled),
        "execution_price": None if leg.execution_price is None else text(leg.execution_price),
        "limit_price": None if order.limit_price is None else text(order.limit_price),
        "stop_price": None if order.stop_price is None else text(order.stop_price),
        "trailing_stop": None,
        "order_type": V1_TYPES[order.order_type],
        "time_in_force": order.time_in_force,
        "time_placed": iso(order.time_placed),
        "time_updated": None,
        "time_executed": iso(order.time_executed) if order.time_executed else None,
        "expiry_date": None,
        "symbol": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{order.account_id}:{leg.contract}")),
        "child_brokerage_order_ids": None,
    }


def order_record_v2(order: FakeOptionOrder) -> dict[str, Any]:
    """The spec's ``AccountOrderRecordV2`` with every leg."""
    net: Decimal | None = None
    if all(leg.execution_price is not None for leg in order.legs) and order.time_executed:
        net = sum(
            (
                (1 if leg.buys else -1) * (leg.units // order.units) * (leg.execution_price or ZERO)
                for leg in order.legs
            ),
            ZERO,
        )
    return {
        "brokerage_order_id": order.id,
        "brokerage_group_order_id": None,
        "order_role": None,
        "status": order.status,
        "order_type": V2_TYPES[order.order_type],
        "time_in_force": TIFS[order.time_in_force],
        "time_placed": iso(order.time_placed),
        "time_executed": iso(order.time_executed) if order.time_executed else None,
        "price_currency": "USD",
        "price_effect": order.price_effect
        or ("UNKNOWN" if net is None else "DEBIT" if net > 0 else "CREDIT" if net < 0 else "EVEN"),
        "execution_price": None if net is None else text(abs(net)),
        "limit_price": None if order.limit_price is None else text(order.limit_price),
        "stop_price": None if order.stop_price is None else text(order.stop_price),
        "trailing_stop": None,
        "legs": [
            {
                "leg_id": leg.leg_id,
                "instrument": {
                    "symbol": leg.contract.occ_padded,
                    "description": f"{leg.contract.underlying} {leg.contract.expiration:%b %d %Y}"
                    f" {text(leg.contract.strike)} {leg.contract.right.value.upper()}",
                    "asset_type": "OPTION",
                },
                "action": leg.action,
                "execution_price": None
                if leg.execution_price is None
                else text(leg.execution_price),
                "total_quantity": str(leg.units),
                "canceled_quantity": str(
                    leg.units - leg.filled
                    if order.status in ("CANCELED", "PARTIAL_CANCELED")
                    else 0
                ),
                "filled_quantity": str(leg.filled),
                "status": LEG_STATUS.get(order.status, "PENDING"),
            }
            for leg in order.legs
        ],
    }


def option_instrument(contract: OptionContract) -> dict[str, Any]:
    """The spec's ``OptionInstrument`` of ``/positions/all``."""
    return {
        "kind": "option",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"snaptrade-option:{contract.symbol}")),
        "symbol": contract.occ_padded,
        "option_type": "CALL" if contract.right is OptionRight.call else "PUT",
        "strike_price": text(contract.strike),
        "expiration_date": contract.expiration.isoformat(),
        "multiplier": text(contract.multiplier),
        "description": f"{contract.underlying} {contract.expiration:%b %d %Y} "
        f"{text(contract.strike)} {contract.right.value.upper()}",
        "underlying": {
            "kind": "stock",
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"snaptrade-symbol:{contract.underlying}")),
            "symbol": contract.underlying,
            "raw_symbol": contract.underlying,
            "description": f"{contract.underlying} (fake)",
            "currency": "USD",
            "exchange": "XNAS",
            "figi_instrument": None,
        },
    }
