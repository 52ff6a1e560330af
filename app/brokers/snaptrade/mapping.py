"""SnapTrade wire format <-> normalized models. Strict: unknown values raise, never guess.

Wire reference: the official OpenAPI spec (passiv/snaptrade-sdks ``api.yaml``, copy in
../shared/specs/snaptrade-api.yaml) and https://docs.snaptrade.com/docs. Quirks:

* Orders (``AccountOrderRecord``) carry quantities and prices as decimal *strings*, while
  balances, quotes, activities and order forms use JSON *numbers*; every answer is parsed
  with ``parse_float=Decimal`` so no binary float is ever read, and numbers we send are
  checked to survive the round trip exactly (``number``).
* ``order_type`` / ``time_in_force`` are SnapTrade's mapping of the brokerage's values, and
  "when mapping fails, we will return the brokerage's [...] value" (spec,
  ``AccountOrderRecord``): anything outside ``Market/Limit/Stop/StopLimit`` and
  ``Day/GTC/FOK/IOC`` is an unknown value here.
* A limit order may come back with ``stop_price: "0.0000000000"`` (TRADE_DETECTION example
  in https://docs.snaptrade.com/docs/webhooks); prices are read only for the order types
  they apply to ("Should only apply to Limit and StopLimit orders", spec).
* An order record has no client order id and no reason for a rejection.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx

from app.brokers import errors
from app.brokers.base import (
    AssetClass,
    Balances,
    BrokerAccount,
    BrokerOrder,
    InstitutionLink,
    InvalidOptionSymbol,
    OptionContract,
    OptionRight,
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
from app.brokers.rows import RowList, read_rows
from app.brokers.wire import WireReader

log = logging.getLogger(__name__)

SLUG = "snaptrade"
WIRE = WireReader(SLUG)  # the shared wire readers (app/brokers/wire.py), for this broker
unknown = WIRE.unknown
_ZERO = Decimal(0)

# Every value of the spec's ``AccountOrderRecordStatus``. ``None``: the order is working;
# accepted or partially_filled depending on what has filled. ``NONE`` (SnapTrade could not
# map the brokerage's status) says nothing about the order: it is refused as unknown.
_STATUS: dict[str, OrderStatus | None] = {
    "PENDING": OrderStatus.submitted,  # sent to the brokerage, not yet acknowledged
    "ACCEPTED": None,
    "FAILED": OrderStatus.rejected,
    "REJECTED": OrderStatus.rejected,
    "CANCELED": OrderStatus.canceled,
    "PARTIAL_CANCELED": OrderStatus.canceled,  # part filled, the rest canceled
    "CANCEL_PENDING": OrderStatus.pending_cancel,
    "EXECUTED": OrderStatus.filled,
    "PARTIAL": OrderStatus.partially_filled,
    "REPLACE_PENDING": OrderStatus.pending_replace,
    "REPLACED": OrderStatus.replaced,
    "STOPPED": None,  # a fill is guaranteed but has not happened yet
    "SUSPENDED": None,  # not eligible for trading right now, still open
    "EXPIRED": OrderStatus.expired,
    "QUEUED": None,  # accepted, queued until the market opens
    "TRIGGERED": None,  # a stop triggered; the order works on
    "ACTIVATED": None,  # a conditional order became active
    "PENDING_RISK_REVIEW": OrderStatus.submitted,  # not yet accepted by the brokerage
    "CONTINGENT_ORDER": None,  # waits for its condition (OTO legs), still a live order
}
OPEN_WIRE_STATUSES = frozenset(
    {
        k
        for k, v in _STATUS.items()
        if v in (None, OrderStatus.submitted, OrderStatus.partially_filled)
    }
    | {"CANCEL_PENDING", "REPLACE_PENDING"}
)

_ORDER_TYPES = {
    "Market": OrderType.market,
    "Limit": OrderType.limit,
    "Stop": OrderType.stop,
    "StopLimit": OrderType.stop_limit,
}
_ORDER_TYPES_OUT = {v: k for k, v in _ORDER_TYPES.items()}
# ``TimeInForceStrict`` (the impact form); GTD, MOO and EHP have no unified equivalent.
_TIF = {
    "Day": TimeInForce.day,
    "GTC": TimeInForce.gtc,
    "FOK": TimeInForce.fok,
    "IOC": TimeInForce.ioc,
}
_TIF_OUT = {v: k for k, v in _TIF.items()}
# ``Action``: BUY_COVER / SELL_SHORT are how some brokerages report covering and shorting.
_SIDES = {
    "BUY": OrderSide.buy,
    "SELL": OrderSide.sell,
    "BUY_COVER": OrderSide.buy,
    "SELL_SHORT": OrderSide.sell,
}
_SIDES_OUT = {OrderSide.buy: "BUY", OrderSide.sell: "SELL"}

# ``Instrument.kind`` of a position; None: a kind our model has no asset class for (the
# position is left out of the list, with a log line).
_KINDS: dict[str, AssetClass | None] = {
    "stock": AssetClass.equity,
    "etf": AssetClass.equity,
    "adr": AssetClass.equity,
    "cef": AssetClass.equity,
    "mutualfund": AssetClass.mutual_fund,
    "crypto": AssetClass.crypto,
    "option": AssetClass.option,
    "future": None,
    "cfd": None,
    "other": None,
}

# Activity ``type`` -> our transaction types (the docs' list is open-ended: anything else is
# not reported).
# https://docs.snaptrade.com/docs/sandbox ("All transaction types")
_ACTIVITY_TYPES = {
    "BUY": "buy",
    "SELL": "sell",
    "CONTRIBUTION": "deposit",
    "WITHDRAWAL": "withdrawal",
    "DIVIDEND": "dividend",
    "SUBSTITUTE_DIVIDEND": "dividend",
    "STOCK_DIVIDEND": "dividend",
    "REI": "dividend_reinvestment",
    "INTEREST": "interest",
    "FEE": "fee",
    "TAX": "tax",
    "REBATE": "rebate",
    "TRANSFER": "transfer",
    "INTERNAL_CASH_TRANSFER_IN": "transfer",
    "INTERNAL_CASH_TRANSFER_OUT": "transfer",
    # An option's end of life; ``option_symbol`` names the contract (spec, UniversalActivity).
    "OPTIONEXPIRATION": "option_expiration",
    "OPTIONASSIGNMENT": "option_assignment",
    "OPTIONEXERCISE": "option_exercise",
}
_OPTION_TYPES = {"CALL": OptionRight.call, "PUT": OptionRight.put}


# Webhook event types after which the user's connections, accounts or orders may differ
# (https://docs.snaptrade.com/docs/webhooks). The others (USER_REGISTERED, USER_DELETED,
# CONNECTION_ATTEMPTED, CONNECTION_FAILED, ACCOUNT_TRANSACTIONS_*) change nothing we keep.
REFRESH_EVENTS = frozenset(
    {
        "CONNECTION_ADDED",
        "CONNECTION_DELETED",
        "CONNECTION_BROKEN",
        "CONNECTION_FIXED",
        "CONNECTION_UPDATED",
        "NEW_ACCOUNT_AVAILABLE",
        "ACCOUNT_REMOVED",
        "ACCOUNT_HOLDINGS_UPDATED",
        "TRADE_DETECTION",
        "TRADE_UPDATE",
    }
)


def loads(raw: bytes) -> Any:
    """JSON with every number as ``Decimal`` (ValueError when it is not JSON)."""
    return json.loads(raw, parse_float=Decimal, parse_int=Decimal)


def tidy(value: Decimal) -> Decimal:
    """``19.2000000000`` -> ``19.2``, ``100.000`` -> ``100`` (never an exponent)."""
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize()


def dec(value: object, field: str) -> Decimal:
    return tidy(WIRE.decimal(value, field))


def opt_dec(value: object, field: str) -> Decimal | None:
    return None if value is None or value == "" else dec(value, field)


def number(value: Decimal, field: str) -> int | float:
    """A decimal as the JSON number SnapTrade's forms take (``type: number``).

    Refused (``UnsupportedOrder``, nothing sent) when the number would not read back as the
    same decimal: the order must not change on the way.
    """
    if value == value.to_integral_value():
        return int(value)
    as_float = float(value)
    if Decimal(repr(as_float)) != value:
        raise errors.UnsupportedOrder(
            f"{field} {value} has more digits than SnapTrade's JSON numbers carry", broker=SLUG
        )
    return as_float


def ts(value: object, field: str = "timestamp") -> datetime:
    """ISO 8601 with ``Z``, an offset or none (UTC assumed), any fraction; a date alone is
    midnight UTC (activities of some brokerages carry only the date)."""
    return WIRE.timestamp(value, field, date_only=True)


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def masked(number: str) -> str:
    return "****" + number[-4:] if len(number) > 4 else "****"


def _str(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise unknown(name, value)
    return value


def _obj(value: object, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise unknown(field, type(value).__name__)
    return value


def objects(body: object, field: str) -> list[dict[str, Any]]:
    if not isinstance(body, list):
        raise unknown(field, type(body).__name__)
    return [_obj(item, field) for item in body]


# --- symbols -------------------------------------------------------------------------------


def symbol_of(universal: object) -> str:
    """A ``UniversalSymbol``'s ticker (``AAPL``; Yahoo-style suffixes kept: ``VAB.TO``)."""
    return _str(_obj(universal, "universal_symbol"), "symbol").upper()


def universal_symbol_id(body: object, symbol: str) -> str | None:
    """The id of ``GET /symbols/{query}``'s answer when it is ``symbol`` itself.

    The endpoint answers "the first matching result" for a ticker, which may be another
    listing; only an exact ticker match counts.
    """
    found = _obj(body, "symbol")
    if str(found.get("symbol", "")).upper() != symbol:
        return None
    return _str(found, "id")


def contract_of(symbol: object, field: str = "option symbol") -> OptionContract:
    """An OCC symbol from the wire (SnapTrade sends the 21-character padded form)."""
    if not isinstance(symbol, str):
        raise unknown(field, symbol)
    try:
        return OptionContract.parse(symbol)
    except InvalidOptionSymbol as exc:
        raise unknown(field, symbol) from exc


def option_contract(instrument: dict[str, Any]) -> OptionContract:
    """An ``OptionInstrument`` (``/positions/all``) as a contract; its separate fields must
    agree with its OCC symbol (a mismatch is an unknown value, never guessed between)."""
    multiplier = dec(instrument.get("multiplier"), "multiplier")
    underlying_raw = instrument.get("underlying")
    underlying = underlying_raw.get("symbol") if isinstance(underlying_raw, dict) else None
    parsed = contract_of(instrument.get("symbol"))
    contract = OptionContract.parse(
        parsed.occ_padded,
        underlying=str(underlying).upper() if isinstance(underlying, str) and underlying else None,
        multiplier=multiplier,
    )
    right = WIRE.lookup(_OPTION_TYPES, instrument.get("option_type"), "option_type")
    strike = dec(instrument.get("strike_price"), "strike_price")
    expiry = ts(instrument.get("expiration_date"), "expiration_date").date()
    if (right, strike, expiry) != (contract.right, contract.strike, contract.expiration):
        raise unknown("option instrument (fields disagree with its symbol)", instrument)
    return contract


# --- orders --------------------------------------------------------------------------------


def is_modelled(body: dict[str, Any]) -> bool:
    """An equity order: not an option (``option_symbol``) nor a crypto pair order."""
    return (
        body.get("option_symbol") is None
        and body.get("quote_universal_symbol") is None
        and body.get("quote_currency") is None
        and isinstance(body.get("universal_symbol"), dict)
    )


def order_status(raw: object, quantity: Decimal, filled: Decimal) -> OrderStatus:
    mapped = WIRE.lookup(_STATUS, raw, "order status")
    if mapped is not None:
        if mapped is OrderStatus.submitted and filled > _ZERO:
            return OrderStatus.partially_filled
        return mapped
    return OrderStatus.partially_filled if filled > _ZERO else OrderStatus.accepted


def order_from_wire(
    body: object, *, replaces: str | None = None, notional: Decimal | None = None
) -> BrokerOrder:
    """An ``AccountOrderRecord`` into a ``BrokerOrder``; UnknownBrokerValue if it is not one.

    ``notional``: the dollar amount the gateway placed the order for (the record has no
    field for it). A dollar-amount order's ``total_quantity`` is null until the brokerage
    sizes it (nullable in the spec); its quantity is then what has filled.
    """
    record = _obj(body, "order payload")
    if not is_modelled(record):
        raise unknown("order instrument (options and crypto pairs are not modelled)", "option")
    order_id = _str(record, "brokerage_order_id")
    order_type = _ORDER_TYPES.get(str(record.get("order_type")))
    if order_type is None:
        raise unknown("order type", record.get("order_type"))
    tif = _TIF.get(str(record.get("time_in_force")))
    if tif is None:
        raise unknown("time_in_force", record.get("time_in_force"))
    side = _SIDES.get(str(record.get("action")))
    if side is None:
        raise unknown("action", record.get("action"))
    quantity = opt_dec(record.get("total_quantity"), "total_quantity")
    filled = opt_dec(record.get("filled_quantity"), "filled_quantity") or _ZERO
    if quantity is None:
        # No share count yet: a dollar-amount order the brokerage has not sized (the only
        # order SnapTrade takes without ``units``: Market, Day); its quantity is what has
        # filled. Any other order without a quantity is not one we can read.
        if order_type is not OrderType.market or tif is not TimeInForce.day:
            raise unknown("total_quantity", None)
        quantity = filled
    created = ts(record.get("time_placed"), "time_placed")
    changed = record.get("time_updated") or record.get("time_executed")
    updated = ts(changed, "time_updated") if changed else created
    limit = (
        opt_dec(record.get("limit_price"), "limit_price")
        if order_type in (OrderType.limit, OrderType.stop_limit)
        else None
    )
    stop = (
        opt_dec(record.get("stop_price"), "stop_price")
        if order_type in (OrderType.stop, OrderType.stop_limit)
        else None
    )
    execution = opt_dec(record.get("execution_price"), "execution_price")
    return BrokerOrder(
        broker_order_id=order_id,
        client_order_id=None,  # SnapTrade's order records carry none
        symbol=symbol_of(record.get("universal_symbol")),
        side=side,
        quantity=quantity,
        filled_quantity=filled,
        avg_fill_price=execution if filled > _ZERO else None,
        order_type=order_type,
        time_in_force=tif,
        status=order_status(record.get("status"), quantity, filled),
        limit_price=limit,
        stop_price=stop,
        created_at=created,
        updated_at=max(updated, created),
        replaces=replaces,
        notional=notional,
    )


def has_option_records(body: object) -> bool:
    """Does a V1 order list hold option records (read again from the V2 list, with legs)?"""
    return isinstance(body, list) and any(
        isinstance(item, dict) and item.get("option_symbol") is not None for item in body
    )


def equity_preview(body: object, cash_before: Decimal, order: OrderRequest) -> OrderPreview:
    """A ``ManualTradeAndImpact`` as a preview: the cash change is the account's cash after
    the trade (``combined_remaining_balance.cash``) less its cash now; fees are the impacts'
    ``estimated_commission`` and ``forex_fees``."""
    answer = _obj(body, "impact payload")
    remaining = _obj(answer.get("combined_remaining_balance"), "combined_remaining_balance")
    after = dec(remaining.get("cash"), "combined_remaining_balance.cash")
    fees = _ZERO
    for impact in objects(answer.get("trade_impacts") or [], "trade_impacts"):
        for name in ("estimated_commission", "forex_fees"):
            fees += opt_dec(impact.get(name), name) or _ZERO
    change = tidy(after - cash_before)
    direction = (
        PriceEffect.debit if change < 0 else PriceEffect.credit if change > 0 else PriceEffect.even
    )
    return OrderPreview(
        estimated_cash_change=change,
        direction=direction,
        buying_power_change=None,
        fees=tidy(fees),
        warnings=(),
        rejections=(),
        source=PreviewSource.broker,
    )


def orders_from_wire(body: object, field: str = "orders payload") -> RowList[BrokerOrder]:
    """The equity orders of a list (option and crypto pair records are left out); a record
    the gateway cannot represent is skipped and counted (``read_rows``), never the list."""
    if not isinstance(body, list):
        raise unknown(field, type(body).__name__)
    return read_rows(
        body,
        lambda item: order_from_wire(item) if is_modelled(_obj(item, field)) else None,
        broker=SLUG,
        kind="order",
        row_id=_record_id,
    )


def _record_id(item: object) -> object:
    return item.get("brokerage_order_id") if isinstance(item, dict) else "?"


def refuse_short_sale(order: OrderRequest) -> None:
    """An equity sell that opens (a short sale) or buy that closes (a cover): the impact
    form's ``ActionStrict`` is BUY or SELL only, with no way to say either, so they are
    refused (``short_selling`` unsupported) rather than sent as a plain sell or buy."""
    effect = order.position_effect
    if (order.side, effect) in (
        (OrderSide.sell, PositionEffect.open),
        (OrderSide.buy, PositionEffect.close),
    ):
        raise errors.UnsupportedOrder(
            "SnapTrade's equity orders cannot say a short sale or a cover", broker=SLUG
        )


def impact_form(account_ref: str, order: OrderRequest, universal_symbol_id: str) -> dict[str, Any]:
    """``ManualTradeForm`` for ``POST /trade/impact`` (prices and units are JSON numbers).

    A dollar-amount order sends ``notional_value`` and null ``units``; SnapTrade takes it
    on ``Market`` ``Day`` orders only (spec ``NotionalValue``), refused here otherwise."""
    refuse_short_sale(order)
    form: dict[str, Any] = {
        "account_id": account_ref,
        "action": _SIDES_OUT[order.side],
        "universal_symbol_id": universal_symbol_id,
        "order_type": _ORDER_TYPES_OUT[order.order_type],
        "time_in_force": _TIF_OUT[order.time_in_force],
    }
    if order.notional is not None:
        if order.order_type is not OrderType.market or order.time_in_force is not TimeInForce.day:
            raise errors.UnsupportedOrder(
                "SnapTrade takes a dollar amount on market day orders only", broker=SLUG
            )
        form["units"] = None
        form["notional_value"] = number(order.notional, "notional")
        return form
    form["units"] = number(order.quantity, "quantity")
    if order.order_type in (OrderType.limit, OrderType.stop_limit):
        if order.limit_price is None:
            raise errors.UnsupportedOrder("a limit order needs a limit price", broker=SLUG)
        form["price"] = number(order.limit_price, "limit_price")
    if order.order_type in (OrderType.stop, OrderType.stop_limit):
        if order.stop_price is None:
            raise errors.UnsupportedOrder("a stop order needs a stop price", broker=SLUG)
        form["stop"] = number(order.stop_price, "stop_price")
    return form


def replace_form(current: BrokerOrder, changes: OrderChanges) -> dict[str, Any]:
    """``ManualTradeReplaceForm``: the whole order with the changes applied. An option order
    goes by its 21-character OCC symbol with its option action (BUY_TO_OPEN...); a
    multi-leg order has no replace form (``UnsupportedOrder``)."""
    if current.legs:
        raise errors.UnsupportedOrder(
            "SnapTrade cannot replace a multi-leg order; cancel it and place a new one",
            broker=SLUG,
        )
    quantity = changes.quantity if changes.quantity is not None else current.quantity
    tif = changes.time_in_force or current.time_in_force
    action, symbol = _SIDES_OUT[current.side], current.symbol
    if is_option_symbol(current.symbol):
        if current.position_effect is None:
            raise errors.UnsupportedOrder("the option order's open/close is unknown", broker=SLUG)
        if quantity != quantity.to_integral_value():
            raise errors.UnsupportedOrder("options trade in whole contracts", broker=SLUG)
        symbol = contract_of(current.symbol).occ_padded
        action = f"{action}_TO_{current.position_effect.value.upper()}"
    form: dict[str, Any] = {
        "brokerage_order_id": current.broker_order_id,
        "action": action,
        "order_type": _ORDER_TYPES_OUT[current.order_type],
        "time_in_force": _TIF_OUT[tif],
        "symbol": symbol,
        "units": number(quantity, "quantity"),
    }
    limit = changes.limit_price if changes.limit_price is not None else current.limit_price
    stop = changes.stop_price if changes.stop_price is not None else current.stop_price
    if current.order_type in (OrderType.limit, OrderType.stop_limit) and limit is not None:
        form["price"] = number(limit, "limit_price")
    if current.order_type in (OrderType.stop, OrderType.stop_limit) and stop is not None:
        form["stop"] = number(stop, "stop_price")
    return form


def trade_id(body: object) -> str:
    """The ``trade.id`` of a ``ManualTradeAndImpact`` answer."""
    trade = _obj(_obj(body, "impact payload").get("trade"), "trade")
    return _str(trade, "id")


# --- accounts, balances, positions ---------------------------------------------------------


def account_from_wire(body: object) -> BrokerAccount:
    account = _obj(body, "account payload")
    number = str(account.get("number") or account.get("id") or "")
    name = account.get("name") or account.get("institution_name") or "SnapTrade account"
    _, currency = account_total(account)
    return BrokerAccount(
        broker_account_id=_str(account, "id"),
        name=str(name)[:200],
        number_masked=masked(number),
        currency=str(currency or "USD"),
    )


def is_listed(account: dict[str, Any]) -> bool:
    """Accounts SnapTrade reports closed or archived are not offered."""
    return account.get("status") not in ("closed", "archived")


def account_total(body: object) -> tuple[Decimal | None, str | None]:
    """``balance.total`` of an ``Account``: the brokerage's own total value, if reported."""
    balance = _obj(body, "account payload").get("balance")
    total = balance.get("total") if isinstance(balance, dict) else None
    if not isinstance(total, dict):
        return None, None
    amount = total.get("amount")
    currency = total.get("currency")
    return (
        None if amount is None else dec(amount, "balance.total.amount"),
        currency if isinstance(currency, str) else None,
    )


def links_from_wire(authorizations: object, accounts: object) -> list[InstitutionLink]:
    """``GET /authorizations`` and ``GET /accounts`` into institution links with accounts."""
    by_link: dict[str, list[BrokerAccount]] = {}
    for account in objects(accounts, "accounts payload"):
        if is_listed(account):
            link_id = _str(account, "brokerage_authorization")
            by_link.setdefault(link_id, []).append(account_from_wire(account))
    links = []
    for auth in objects(authorizations, "authorizations payload"):
        link_id = _str(auth, "id")
        brokerage = _obj(auth.get("brokerage"), "brokerage")
        kind = auth.get("type")
        if kind not in ("read", "trade"):
            raise unknown("connection type", kind)
        disabled = auth.get("disabled")
        if not isinstance(disabled, bool):
            raise unknown("connection disabled flag", disabled)
        allows_trading = brokerage.get("allows_trading")
        disabled_date = auth.get("disabled_date")
        links.append(
            InstitutionLink(
                link_id=link_id,
                institution=str(brokerage.get("display_name") or brokerage.get("name") or "?"),
                institution_slug=str(brokerage.get("slug") or ""),
                disabled=disabled,
                # A trade connection at a brokerage that does not refuse trading; a read
                # connection (Fidelity, Robinhood) never takes orders.
                trading=kind == "trade" and allows_trading is not False,
                accounts=tuple(by_link.get(link_id, [])),
                disabled_at=ts(disabled_date, "disabled_date") if disabled_date else None,
            )
        )
    return links


def cash_and_buying_power(balances: object, currency: str) -> tuple[Decimal, Decimal, str]:
    """``GET /accounts/{id}/balances`` (one entry per currency): the account currency's cash
    and buying power. Buying power is "not always available"; without it, cash is what can
    be spent (the spec: "For non-margin accounts, buying power should be the same as cash")."""
    items = objects(balances, "balances payload")
    codes = [_obj(i.get("currency") or {}, "balance currency").get("code") for i in items]
    if currency in codes:
        chosen = items[codes.index(currency)]
    elif len(items) == 1 and isinstance(codes[0], str):
        chosen, currency = items[0], codes[0]
    else:
        raise unknown("balances (none in the account currency)", codes)
    cash = opt_dec(chosen.get("cash"), "cash")
    if cash is None:
        raise unknown("cash", None)
    buying_power = opt_dec(chosen.get("buying_power"), "buying_power")
    return cash, cash if buying_power is None else buying_power, currency


def balances(
    cash: Decimal, buying_power: Decimal, currency: str, equity: Decimal, now: datetime
) -> Balances:
    return Balances(
        cash=cash, equity=equity, buying_power=buying_power, currency=currency, as_of=now
    )


def positions_from_wire(body: object, now: datetime) -> tuple[RowList[Position], datetime]:
    """``GET /accounts/{id}/positions/all`` (``AllAccountPositionsResponse``).

    Futures, CFDs and ``other`` instruments have no asset class here and are left out (with
    a log line); an unknown ``kind`` is an error. ``as_of`` is the answer's
    ``data_freshness.as_of``: SnapTrade may serve cached positions.
    """
    answer = _obj(body, "positions payload")
    freshness = answer.get("data_freshness")
    as_of = (
        ts(freshness.get("as_of"), "data_freshness.as_of") if isinstance(freshness, dict) else now
    )
    results = answer.get("results")
    if not isinstance(results, list):
        raise unknown("positions results", type(results).__name__)
    positions = read_rows(
        results,
        lambda item: position_from_wire(item, as_of),
        broker=SLUG,
        kind="position",
        row_id=_position_id,
    )
    return positions, as_of


def _position_id(item: object) -> object:
    instrument = item.get("instrument") if isinstance(item, dict) else None
    return instrument.get("symbol") if isinstance(instrument, dict) else "?"


def position_from_wire(body: object, as_of: datetime) -> Position | None:
    """One ``AccountPositionsResponse``-style row (None: an instrument with no asset class,
    or a closed position)."""
    item = _obj(body, "position")
    instrument = _obj(item.get("instrument"), "instrument")
    kind = instrument.get("kind")
    if not isinstance(kind, str) or kind not in _KINDS:
        raise unknown("instrument kind", kind)
    asset_class = _KINDS[kind]
    if asset_class is None:
        log.info("a position in a %s is not reported (no asset class for it)", kind)
        return None
    units = opt_dec(item.get("units"), "units")
    price = opt_dec(item.get("price"), "price")
    if units is None or price is None:
        raise unknown("position units/price", (item.get("units"), item.get("price")))
    if units == _ZERO:
        return None
    cost = opt_dec(item.get("cost_basis"), "cost_basis")
    multiplier = Decimal(1)
    symbol = _str(instrument, "symbol").upper()
    contract = None
    if asset_class is AssetClass.option:
        # Options: price and cost basis are per share (the gateway's basis too); a
        # contract is ``multiplier`` shares (10 for a mini option).
        contract = option_contract(instrument)
        multiplier = contract.multiplier
        symbol = contract.symbol
    market_value = units * price * multiplier
    avg_cost = cost if cost is not None else price
    return Position(
        symbol=symbol,
        asset_class=asset_class,
        quantity=units,
        avg_cost=avg_cost,
        current_price=price,
        market_value=tidy(market_value),
        unrealized_pl=tidy((price - avg_cost) * units * multiplier),
        as_of=as_of,
        contract=contract,
    )


# --- transactions and quotes ---------------------------------------------------------------


def transactions_from_wire(body: object) -> tuple[RowList[Transaction], int | None]:
    """``PaginatedUniversalActivity``: the reported activity types, and the total count."""
    page = _obj(body, "activities payload")
    data = page.get("data")
    if not isinstance(data, list):
        raise unknown("activities", type(data).__name__)
    result = read_rows(data, transaction_from_wire, broker=SLUG, kind="transaction")
    pagination = page.get("pagination")
    total = pagination.get("total") if isinstance(pagination, dict) else None
    return result, int(total) if isinstance(total, Decimal | int) else None


def transaction_from_wire(body: object) -> Transaction | None:
    """One ``UniversalActivity`` (None: a type the gateway does not report)."""
    item = _obj(body, "activity")
    kind = _ACTIVITY_TYPES.get(str(item.get("type")))
    if kind is None:
        return None
    symbol = item.get("symbol")
    ticker = symbol.get("symbol") if isinstance(symbol, dict) else None
    option = item.get("option_symbol")
    if isinstance(option, dict):
        # An option's trade or end of life: the contract, in our (unpadded) form.
        ticker = contract_of(option.get("ticker"), "option_symbol.ticker").symbol
    occurred = item.get("trade_date") or item.get("settlement_date")
    amount = opt_dec(item.get("amount"), "amount")
    return Transaction(
        transaction_id=_str(item, "id"),
        type=kind,
        occurred_at=ts(occurred, "trade_date"),
        amount=amount if amount is not None else _ZERO,
        symbol=str(ticker).upper() if ticker else None,
        quantity=opt_dec(item.get("units"), "units") if ticker else None,
        price=opt_dec(item.get("price"), "price") if ticker else None,
        description=str(item.get("description") or item.get("type")),
    )


def quotes_from_wire(body: object, wanted: list[str], now: datetime) -> dict[str, Quote]:
    """``SymbolsQuotes``: numbers, and no timestamp (``as_of`` is when we received them)."""
    quotes: dict[str, Quote] = {}
    for item in objects(body, "quotes payload"):
        symbol = symbol_of(item.get("symbol"))
        if symbol not in wanted:
            continue
        quotes[symbol] = Quote(
            symbol=symbol,
            bid=dec(item.get("bid_price"), "bid_price"),
            ask=dec(item.get("ask_price"), "ask_price"),
            last=dec(item.get("last_trade_price"), "last_trade_price"),
            as_of=now,
        )
    return quotes


# --- errors --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WireError:
    detail: str
    code: str | None


def error_of(response: httpx.Response) -> WireError:
    """``{"detail", "status_code", "code"}`` (docs/ratelimiting.md, spec 4xx/5xx examples;
    some examples spell them ``default_detail`` / ``default_code``, 501 uses ``error``)."""
    fallback = response.reason_phrase or f"HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        return WireError(fallback, None)
    if not isinstance(body, dict):
        return WireError(fallback, None)
    detail = body.get("detail") or body.get("default_detail") or body.get("error") or fallback
    code = body.get("code", body.get("default_code"))
    return WireError(str(detail), None if code is None else str(code))


# Reasons in refusals: SnapTrade relays the brokerage's words, whose texts are not
# documented; these substrings are the ones the sandbox and fake use (unconfirmed).
_INSUFFICIENT = ("insufficient", "buying power", "not enough cash")
_MARKET_CLOSED = ("market is closed", "market closed")
_NOT_MODIFIABLE = ("cannot be canceled", "cannot be cancelled", "not cancelable", "already")


def classify(response: httpx.Response, method: str) -> errors.BrokerError | None:
    """SnapTrade's 4xx answers into the error tree (429 and 5xx are fixed in
    app.brokers.http). 401: the signature, clientId, userId or userSecret was refused;
    402: the connection is disabled (code 3003); 403 on a trade: the connection may not
    trade (1066), elsewhere a feature not enabled (1141); 404: unknown symbol / order /
    account; 400: a refused request, the brokerage's reason in ``detail``; 425: data still
    being populated (retry later); 501: not supported for this brokerage."""
    status = response.status_code
    error = error_of(response)
    path = response.request.url.path if response.request is not None else ""
    reason = error.detail
    lowered = reason.lower()
    if status == 401:
        return errors.AuthenticationFailed(reason, broker=SLUG)
    if status == 402:
        return errors.AuthenticationFailed(
            f"the SnapTrade connection is disabled: {reason}", broker=SLUG
        )
    if status == 403:
        if "/trade/" in path or "/trading/" in path:
            return errors.Rejected(reason, broker=SLUG)
        return errors.NotSupported(reason, broker=SLUG)
    if status == 404:
        if "/symbols/" in path:
            return errors.UnknownSymbol(reason, broker=SLUG)
        return errors.OrderNotFound(reason, broker=SLUG)
    if status == 425:
        return errors.Transient(reason, broker=SLUG)
    if status == 501:
        return errors.NotSupported(reason, broker=SLUG)
    if status in (400, 409, 422):
        if any(s in lowered for s in _INSUFFICIENT):
            return errors.InsufficientFunds(reason, broker=SLUG)
        if any(s in lowered for s in _MARKET_CLOSED):
            return errors.MarketClosed(reason, broker=SLUG)
        if path.endswith("/trading/cancel") or path.endswith("/trading/replace"):
            if any(s in lowered for s in _NOT_MODIFIABLE):
                return errors.OrderNotModifiable(reason, broker=SLUG)
        return errors.Rejected(reason, broker=SLUG)
    return None


def retry_after(response: httpx.Response) -> float | None:
    """When a 429 may be retried: ``X-RateLimit-Account-Reset`` when the account's window is
    the one exhausted, else ``X-RateLimit-Reset`` (seconds; docs/ratelimiting.md). SnapTrade
    documents no ``Retry-After``; one that is present is read first by app.brokers.http."""
    headers = response.headers
    names = ["X-RateLimit-Reset"]
    if headers.get("X-RateLimit-Account-Remaining") == "0":
        names.insert(0, "X-RateLimit-Account-Reset")
    for name in names:
        value = headers.get(name)
        if value is not None:
            try:
                return max(0.0, float(value))
            except ValueError:
                continue
    match = re.search(r"available in (\d+) seconds?", error_of(response).detail)
    return float(match.group(1)) if match else None
