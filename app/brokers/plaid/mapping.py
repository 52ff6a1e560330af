"""Plaid wire payloads <-> the normalized models (pure functions, no I/O).

Field names and value sets are from Plaid's OpenAPI (plaid/plaid-openapi ``2020-09-14.yml``)
and https://plaid.com/docs/api/products/investments/ . Numbers arrive as JSON numbers; the
adapter parses them with ``parse_float=Decimal``, so nothing here passes through a float.

Quirks, each with its doc:

* ``account_id`` is not stable: it changes when the Item is re-created (a re-link) and when
  the institution renames the account (``AccountBase.account_id``,
  https://plaid.com/docs/api/accounts/). Our account reference therefore carries match keys
  besides the account id (``account_ref``), so a re-link finds the same account again.
* ``persistent_account_id`` exists only for depository accounts at Tokenized-Account-Number
  institutions (Chase, PNC, US Bank; same page); investment accounts are matched by
  institution, type, subtype, mask and name.
* ``Holding.cost_basis`` is the holding's TOTAL cost and may be null
  (https://plaid.com/docs/api/products/investments/#investments-holdings-get-response-holdings-cost-basis).
* ``InvestmentTransaction.amount`` is positive when cash leaves the account (a purchase) and
  negative when it comes in (https://plaid.com/docs/api/products/investments/#investmentstransactionsget);
  our ``Transaction.amount`` has the opposite sign (money in is positive).
* Security ``type`` may be null "when institutional data is insufficient" (``Security.type``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import httpx

from app.brokers import errors
from app.brokers.base import (
    AssetClass,
    Balances,
    BrokerAccount,
    InvalidOptionSymbol,
    OptionContract,
    OptionRight,
    Position,
    Transaction,
)
from app.brokers.rows import RowList, read_rows
from app.brokers.wire import WireReader

SLUG = "plaid"
log = logging.getLogger(__name__)
WIRE = WireReader(SLUG, name="Plaid")  # the shared wire readers (app/brokers/wire.py)
unknown = WIRE.unknown
ZERO = Decimal(0)

# AccountType (spec enum). ``brokerage`` is the pre-2018-05-22 name of ``investment``.
ACCOUNT_TYPES = frozenset({"investment", "credit", "depository", "loan", "brokerage", "other"})
INVESTMENT_TYPES = frozenset({"investment", "brokerage"})
# Security.type (spec description), mapped to our asset classes; None: not modelled here
# (cash is folded into the balance; bonds and loans are left out of positions). A
# ``derivative`` is an option where it carries an ``option_contract`` (warrants and other
# derivatives have none and are left out).
SECURITY_TYPES: dict[str, AssetClass | None] = {
    "equity": AssetClass.equity,
    "etf": AssetClass.equity,
    "mutual fund": AssetClass.mutual_fund,
    "cryptocurrency": AssetClass.crypto,
    "cash": None,
    "derivative": AssetClass.option,
    "fixed income": None,
    "loan": None,
    "other": None,
}
# InvestmentTransactionType (spec enum) and the subtypes that name our own types.
TRANSACTION_TYPES = frozenset({"buy", "sell", "cancel", "cash", "fee", "transfer"})
_CASH_SUBTYPES = {
    "deposit": "deposit",
    "contribution": "deposit",
    "withdrawal": "withdrawal",
    "distribution": "withdrawal",
    "dividend": "dividend",
    "qualified dividend": "dividend",
    "non-qualified dividend": "dividend",
    "interest": "interest",
}
# An option's end of life (InvestmentTransactionSubtype: plaid-python
# plaid/model/investment_transaction_subtype.py), whatever the transaction type.
_OPTION_SUBTYPES = {
    "expire": "option_expiration",
    "assignment": "option_assignment",
    "exercise": "option_exercise",
}
# OptionContract.contract_type: "put" or "call" (plaid/model/option_contract.py)
_CONTRACT_TYPES = {"call": OptionRight.call, "put": OptionRight.put}
# Plaid gives no multiplier; a holding's ``quantity`` of an option "will reflect the total
# number of options (typically the number of contracts multiplied by 100), not the number of
# contracts" (plaid/model/holding.py), so a contract is taken as 100 options.
OPTION_MULTIPLIER = Decimal(100)
# Plaid error codes that mean "the user must go through Link again": expired login or
# consent (https://plaid.com/docs/errors/item/#item_login_required) or access the user
# revoked (https://plaid.com/docs/errors/item/#access_not_granted).
LOGIN_REQUIRED = frozenset({"ITEM_LOGIN_REQUIRED"})
REAUTHORIZE = frozenset({"ITEM_LOGIN_REQUIRED", "ACCESS_NOT_GRANTED"})
# The access token is gone: the Item was removed (here or by the user) or never existed
# (https://plaid.com/docs/errors/invalid-input/#invalid_access_token).
TOKEN_GONE = frozenset({"INVALID_ACCESS_TOKEN", "ITEM_NOT_FOUND"})
# Refused public token (https://plaid.com/docs/errors/invalid-input/#invalid_public_token).
PUBLIC_TOKEN_REFUSED = frozenset({"INVALID_PUBLIC_TOKEN"})
# Data not there yet or the institution is down: nothing happened, try later
# (https://plaid.com/docs/errors/item/#product_not_ready,
# https://plaid.com/docs/errors/institution/).
NOT_YET = frozenset({"PRODUCT_NOT_READY"})
REF_SEPARATOR = "~"
MAX_ACCOUNT_ID = 90  # leaves room for two match keys in accounts.broker_account_ref (128)


# --- errors ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlaidError:
    """Plaid's error body (``PlaidError``): type and code are for programs, the message
    for developers, the display message (nullable) for users."""

    error_type: str
    error_code: str
    error_message: str
    display_message: str | None
    request_id: str | None

    @property
    def reason(self) -> str:
        return f"{self.error_code}: {self.display_message or self.error_message}"


def error_of(response: httpx.Response) -> PlaidError | None:
    """The error body of a non-2xx answer, or None when it is not Plaid's shape."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    error_type, error_code = body.get("error_type"), body.get("error_code")
    if not isinstance(error_type, str) or not isinstance(error_code, str):
        return None
    message = body.get("error_message")
    display = body.get("display_message")
    request_id = body.get("request_id")
    return PlaidError(
        error_type=error_type,
        error_code=error_code,
        error_message=message if isinstance(message, str) else "",
        display_message=display if isinstance(display, str) and display else None,
        request_id=request_id if isinstance(request_id, str) else None,
    )


def error_from_plaid(error: PlaidError) -> errors.BrokerError:
    """Plaid's error type and code -> the broker error tree (https://plaid.com/docs/errors/)."""
    if error.error_code in REAUTHORIZE:
        return errors.ReauthorizationRequired(error.reason, broker=SLUG)
    if error.error_code in TOKEN_GONE:
        return errors.AuthenticationFailed(error.reason, broker=SLUG)
    if error.error_code == "INVALID_API_KEYS":
        # This deployment's client id/secret, not the user's link: nothing the user can fix.
        return errors.Transient("Plaid refused this deployment's API keys", broker=SLUG)
    if error.error_code in NOT_YET or error.error_type == "INSTITUTION_ERROR":
        return errors.Transient(error.reason, broker=SLUG)
    return errors.Rejected(error.reason, broker=SLUG)


def classify(response: httpx.Response, method: str) -> errors.BrokerError | None:
    """The ``BrokerClient`` classifier for 4xx answers (429 and 5xx are mapped generically:
    429 ``RATE_LIMIT_EXCEEDED`` -> RateLimitExceeded, 5xx ``API_ERROR`` -> Transient)."""
    error = error_of(response)
    if error is None:
        return None
    return error_from_plaid(error)


# --- numbers, dates ----------------------------------------------------------------------


def dec(value: object, field: str) -> Decimal:
    """Plaid's JSON carries numbers (parsed as Decimal), never decimal strings."""
    return WIRE.decimal(value, field, text=False)


def opt_dec(value: object, field: str) -> Decimal | None:
    return WIRE.opt_decimal(value, field, text=False)


def wire_date(value: object, field: str) -> date:
    if not isinstance(value, str):
        raise unknown(field, value)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise unknown(field, value) from None


def wire_datetime(value: object, field: str) -> datetime:
    """An ISO 8601 instant; one without a zone is refused (Plaid always sends one)."""
    return WIRE.timestamp(value, field, naive_utc=False)


def start_of(day: date) -> datetime:
    """A Plaid date (the institution's day) as a UTC instant: its midnight, UTC."""
    return datetime.combine(day, time(0, 0), tzinfo=UTC)


def currency_of(item: Mapping[str, Any], what: str) -> str:
    """The ISO currency code; an unofficial code (crypto, some countries) is not modelled."""
    iso = item.get("iso_currency_code")
    if isinstance(iso, str) and len(iso) == 3:
        return iso.upper()
    raise unknown(f"{what} currency (unofficial: {item.get('unofficial_currency_code')!r})", iso)


# --- accounts ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlaidAccount:
    account_id: str
    name: str
    mask: str | None
    type: str
    subtype: str | None
    persistent_account_id: str | None
    available: Decimal | None
    current: Decimal | None
    currency: str | None

    @property
    def is_investment(self) -> bool:
        return self.type in INVESTMENT_TYPES


def account_from_wire(item: object) -> PlaidAccount:
    """One ``AccountBase`` (from /accounts/get, /investments/holdings/get, ...)."""
    if not isinstance(item, dict):
        raise unknown("account payload", type(item).__name__)
    account_id = item.get("account_id")
    if not isinstance(account_id, str) or not account_id or len(account_id) > MAX_ACCOUNT_ID:
        raise unknown("account_id", account_id)
    if REF_SEPARATOR in account_id:
        raise unknown("account_id", account_id)
    kind = item.get("type")
    if kind not in ACCOUNT_TYPES:
        raise unknown("account type", kind)
    name, mask, subtype = item.get("name"), item.get("mask"), item.get("subtype")
    persistent = item.get("persistent_account_id")
    balances = item.get("balances")
    if not isinstance(balances, dict):
        raise unknown("account balances", balances)
    iso = balances.get("iso_currency_code")
    return PlaidAccount(
        account_id=account_id,
        name=name if isinstance(name, str) else "",
        mask=mask if isinstance(mask, str) and mask else None,
        type=str(kind),
        subtype=subtype if isinstance(subtype, str) else None,
        persistent_account_id=persistent if isinstance(persistent, str) and persistent else None,
        available=opt_dec(balances.get("available"), "available balance"),
        current=opt_dec(balances.get("current"), "current balance"),
        currency=iso.upper() if isinstance(iso, str) and len(iso) == 3 else None,
    )


def accounts_of(body: object) -> RowList[PlaidAccount]:
    """The Item's accounts; one that cannot be read is skipped and counted (``read_rows``)."""
    if not isinstance(body, dict) or not isinstance(body.get("accounts"), list):
        raise unknown("accounts payload", type(body).__name__)
    return read_rows(body["accounts"], account_from_wire, broker=SLUG, kind="account")


def institution_of(body: object) -> str:
    """``item.institution_id`` of a response (nullable in the spec: "" when absent)."""
    item = body.get("item") if isinstance(body, dict) else None
    if not isinstance(item, dict):
        raise unknown("item payload", type(item).__name__)
    institution = item.get("institution_id")
    return institution if isinstance(institution, str) else ""


def _key(kind: str, *parts: str) -> str:
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:16]
    return kind + digest


def match_keys(institution_id: str, account: PlaidAccount) -> tuple[str, ...]:
    """Keys that name the same account across Items: a fingerprint of (institution, type,
    subtype, mask, name), and the persistent account id where Plaid has one.

    Hashed so the reference has a bounded length and no separator inside; nothing secret
    is hidden by the hash (these are display fields).
    """
    keys = [
        _key(
            "f",
            institution_id,
            account.type,
            account.subtype or "",
            account.mask or "",
            account.name,
        )
    ]
    if account.persistent_account_id is not None:
        keys.append(_key("p", institution_id, account.persistent_account_id))
    return tuple(keys)


def account_ref(institution_id: str, account: PlaidAccount) -> str:
    """Our ``broker_account_ref``: ``<account_id>~<fingerprint>[~<persistent key>]``."""
    return REF_SEPARATOR.join((account.account_id, *match_keys(institution_id, account)))


def account_id_of(ref: str) -> str:
    """The Plaid ``account_id`` inside one of our references."""
    account_id = ref.split(REF_SEPARATOR, 1)[0]
    if not account_id:
        raise errors.Rejected("not a Plaid account reference", broker=SLUG)
    return account_id


def keys_of(ref: str) -> frozenset[str]:
    return frozenset(ref.split(REF_SEPARATOR)[1:])


def same_account(old_ref: str, new_ref: str) -> bool:
    """Whether two references (from two Items) name the same account at the institution.

    The persistent key decides where both sides have one; otherwise the fingerprint.
    """
    old, new = keys_of(old_ref), keys_of(new_ref)
    old_p = {k for k in old if k.startswith("p")}
    new_p = {k for k in new if k.startswith("p")}
    if old_p and new_p:
        return bool(old_p & new_p)
    return bool({k for k in old if k.startswith("f")} & {k for k in new if k.startswith("f")})


def masked(mask: str | None) -> str:
    return "****" + mask if mask else "****"


def broker_account(institution_id: str, account: PlaidAccount) -> BrokerAccount:
    return BrokerAccount(
        broker_account_id=account_ref(institution_id, account),
        name=account.name or "Investment account",
        number_masked=masked(account.mask),
        currency=account.currency or "USD",
    )


def find_account(accounts: Iterable[PlaidAccount], account_id: str) -> PlaidAccount:
    for account in accounts:
        if account.account_id == account_id:
            return account
    # The Item no longer has this account (closed, or renamed: a new account_id).
    raise errors.Rejected("Plaid no longer reports this account; link it again", broker=SLUG)


# --- holdings ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Security:
    security_id: str
    type: str | None
    ticker: str | None
    currency: str | None
    option: OptionContract | None = None


def option_of(security: Mapping[str, Any]) -> OptionContract | None:
    """A ``derivative``'s ``option_contract`` (contract_type, expiration_date, strike_price,
    underlying_security_ticker) as a contract; None for a derivative without one (a warrant).
    The root comes from the security's OCC ``ticker_symbol`` where it has one (SPXW), and
    must then agree with the contract's fields."""
    raw = security.get("option_contract")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise unknown("option_contract", type(raw).__name__)
    underlying = raw.get("underlying_security_ticker")
    if not isinstance(underlying, str) or not underlying.strip():
        raise unknown("underlying_security_ticker", underlying)
    contract = OptionContract(
        underlying=underlying.strip().upper(),
        root=underlying.strip().upper(),
        expiration=wire_date(raw.get("expiration_date"), "expiration_date"),
        right=WIRE.lookup(_CONTRACT_TYPES, raw.get("contract_type"), "contract_type"),
        strike=dec(raw.get("strike_price"), "strike_price").normalize(),
        multiplier=OPTION_MULTIPLIER,
    )
    if contract.strike == contract.strike.to_integral_value():
        contract = OptionContract(
            contract.underlying,
            contract.root,
            contract.expiration,
            contract.right,
            contract.strike.quantize(Decimal(1)),
            contract.multiplier,
        )
    ticker = security.get("ticker_symbol")
    if isinstance(ticker, str) and ticker.strip():
        try:
            named = OptionContract.parse(
                ticker, underlying=contract.underlying, multiplier=OPTION_MULTIPLIER
            )
        except InvalidOptionSymbol:
            return contract  # an institution's own ticker: the fields stand
        if (named.expiration, named.right, named.strike) != (
            contract.expiration,
            contract.right,
            contract.strike,
        ):
            raise unknown("option ticker_symbol (disagrees with option_contract)", ticker)
        return named
    return contract


def securities_of(body: Mapping[str, Any]) -> dict[str, Security]:
    items = body.get("securities")
    if not isinstance(items, list):
        raise unknown("securities payload", type(items).__name__)
    result: dict[str, Security] = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("security_id"), str):
            raise unknown("security payload", item)
        kind = item.get("type")
        if kind is not None and kind not in SECURITY_TYPES:
            raise unknown("security type", kind)
        ticker = item.get("ticker_symbol")
        iso = item.get("iso_currency_code")
        result[item["security_id"]] = Security(
            security_id=item["security_id"],
            type=kind,
            ticker=ticker.strip().upper() if isinstance(ticker, str) and ticker.strip() else None,
            currency=iso.upper() if isinstance(iso, str) else None,
            option=option_of(item) if kind == "derivative" else None,
        )
    return result


def _holdings(body: Mapping[str, Any], account_id: str) -> list[dict[str, Any]]:
    items = body.get("holdings")
    if not isinstance(items, list):
        raise unknown("holdings payload", type(items).__name__)
    for item in items:
        if not isinstance(item, dict):
            raise unknown("holding payload", item)
    return [h for h in items if h.get("account_id") == account_id]


def cash_of(body: Mapping[str, Any], account_id: str) -> Decimal:
    """The account's cash: the value of its holdings in ``cash``-type securities."""
    securities = securities_of(body)
    total = ZERO
    for holding in _holdings(body, account_id):
        security = securities.get(str(holding.get("security_id")))
        if security is not None and security.type == "cash":
            total += dec(holding.get("institution_value"), "institution_value")
    return total


def symbol_for(security: Security, asset_class: AssetClass, currency: str) -> str | None:
    """Our symbol: the ticker; crypto as a pair against the holding's currency (DOGE/USD); an
    option's canonical OCC symbol (a derivative without a contract has none)."""
    if asset_class is AssetClass.option:
        return None if security.option is None else security.option.symbol
    if security.ticker is None:
        return None
    if asset_class is AssetClass.crypto:
        return f"{security.ticker}/{currency}"
    return security.ticker


def positions_from_wire(
    body: Mapping[str, Any], account_id: str, now: datetime
) -> tuple[RowList[Position], int]:
    """The account's holdings as positions, and how many holdings were left out (the
    positions' own ``skipped`` counts those that could not be read at all).

    Left out (counted): cash (it is in the balance), derivatives without an option
    contract, bonds, loans, ``other`` and untyped securities, and securities without a
    ticker. ``avg_cost`` is ``cost_basis / quantity``; where the institution reports no cost
    basis the position shows ``avg_cost`` = current price and ``unrealized_pl`` = 0
    (unknown, not a gain).

    Options (``derivative`` with ``option_contract``): Plaid's ``quantity`` counts options
    (contracts x 100), its ``institution_price`` is per option (per share) and its
    ``institution_value`` is price x quantity, so the multiplier is already in it. The
    position's quantity is contracts (signed), prices and ``avg_cost`` stay per share, and
    ``market_value`` is the institution's value. A quantity that is not a whole number of
    100-share contracts (a mini or adjusted contract Plaid does not describe) is left out.
    """
    securities = securities_of(body)
    left_out = 0

    def parse(holding: dict[str, Any]) -> Position | None:
        nonlocal left_out
        position = _position_of(holding, securities, now)
        if position is _LEFT_OUT:
            left_out += 1
            return None
        return position if isinstance(position, Position) else None

    positions = read_rows(
        _holdings(body, account_id),
        parse,
        broker=SLUG,
        kind="position",
        row_id=lambda h: h.get("security_id") if isinstance(h, dict) else "?",
    )
    return positions, left_out + positions.skipped


_LEFT_OUT = object()  # a holding of a kind the gateway does not report (counted)


def _position_of(
    holding: dict[str, Any], securities: Mapping[str, Any], now: datetime
) -> Position | object | None:
    """One holding: a ``Position``, ``_LEFT_OUT`` (a kind not reported), None (cash or a
    zero quantity); ``UnknownBrokerValue`` when it cannot be read."""
    security_id = holding.get("security_id")
    security = securities.get(str(security_id))
    if security is None:
        raise unknown("holding security_id (not in securities)", security_id)
    asset_class = SECURITY_TYPES.get(security.type) if security.type is not None else None
    if security.type == "cash":
        return None
    currency = currency_of(holding, "holding")
    symbol = None if asset_class is None else symbol_for(security, asset_class, currency)
    if asset_class is None or symbol is None:
        return _LEFT_OUT
    quantity = dec(holding.get("quantity"), "quantity")
    if quantity == 0:
        return None
    price = dec(holding.get("institution_price"), "institution_price")
    value = dec(holding.get("institution_value"), "institution_value")
    cost = opt_dec(holding.get("cost_basis"), "cost_basis")
    if cost is None:
        avg_cost, unrealized = price, ZERO
    else:
        avg_cost, unrealized = cost / quantity, value - cost
    if security.option is not None:
        contracts = quantity / security.option.multiplier
        if contracts != contracts.to_integral_value():
            log.warning("an option holding is not whole contracts; left out")
            return _LEFT_OUT
        quantity = contracts.quantize(Decimal(1))
    as_of = now
    if holding.get("institution_price_datetime") is not None:
        as_of = wire_datetime(holding["institution_price_datetime"], "institution_price_datetime")
    elif holding.get("institution_price_as_of") is not None:
        as_of = start_of(wire_date(holding["institution_price_as_of"], "price date"))
    return Position(
        symbol=symbol,
        asset_class=asset_class,
        quantity=quantity,
        avg_cost=avg_cost,
        current_price=price,
        market_value=value,
        unrealized_pl=unrealized,
        as_of=as_of,
        contract=security.option,
    )


def balances_from_wire(account: PlaidAccount, cash: Decimal | None, now: datetime) -> Balances:
    """Balances of an investment account: ``current`` is the total value of its assets,
    ``available`` the cash that can be withdrawn (``AccountBalance``). Where the
    institution gives no ``available``, ``cash`` (from the cash holdings) stands in. A
    Linked account never buys anything here; ``buying_power`` reports the same cash.
    """
    if account.currency is None:
        raise unknown("account currency", None)
    settled_cash = account.available if account.available is not None else cash
    if settled_cash is None:
        raise unknown("available balance", None)
    equity = account.current if account.current is not None else settled_cash
    return Balances(
        cash=settled_cash,
        equity=equity,
        buying_power=settled_cash,
        currency=account.currency,
        as_of=now,
    )


# --- transactions ------------------------------------------------------------------------


def transaction_type(kind: object, subtype: object) -> str:
    """Our transaction type: buy/sell as such, cash movements by subtype, else the Plaid
    type (cancel, fee, transfer) or ``other`` for a known cash subtype we do not name."""
    if kind not in TRANSACTION_TYPES:
        raise unknown("investment transaction type", kind)
    if isinstance(subtype, str) and subtype in _OPTION_SUBTYPES:
        return _OPTION_SUBTYPES[subtype]
    if kind in ("buy", "sell", "fee", "transfer", "cancel"):
        return str(kind)
    if isinstance(subtype, str) and subtype in _CASH_SUBTYPES:
        return _CASH_SUBTYPES[subtype]
    if isinstance(subtype, str):
        return "other"
    raise unknown("investment transaction subtype", subtype)


def transaction_from_wire(item: object, securities: Mapping[str, Security]) -> Transaction:
    """One ``InvestmentTransaction``; the amount's sign is turned to ours (money in > 0)."""
    if not isinstance(item, dict):
        raise unknown("investment transaction payload", type(item).__name__)
    transaction_id = item.get("investment_transaction_id")
    if not isinstance(transaction_id, str) or not transaction_id:
        raise unknown("investment_transaction_id", transaction_id)
    security = securities.get(str(item.get("security_id")))
    symbol = None
    if security is not None and security.type not in (None, "cash"):
        asset_class = SECURITY_TYPES.get(security.type or "")
        if asset_class is not None:
            symbol = symbol_for(security, asset_class, currency_of(item, "transaction"))
    quantity = opt_dec(item.get("quantity"), "quantity")
    price = opt_dec(item.get("price"), "price")
    occurred = (
        wire_datetime(item["transaction_datetime"], "transaction_datetime")
        if item.get("transaction_datetime") is not None
        else start_of(wire_date(item.get("date"), "date"))
    )
    name = item.get("name")
    return Transaction(
        transaction_id=transaction_id,
        type=transaction_type(item.get("type"), item.get("subtype")),
        occurred_at=occurred,
        amount=-dec(item.get("amount"), "amount"),
        symbol=symbol,
        quantity=None if quantity == 0 else quantity,
        price=None if price == 0 else price,
        description=name if isinstance(name, str) else "",
    )


# --- webhooks ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Webhook:
    webhook_type: str
    webhook_code: str
    item_id: str
    error_code: str | None

    @property
    def refreshes(self) -> bool:
        """New or changed holdings or investment transactions: read the Item again
        (https://plaid.com/docs/api/products/investments/#webhooks)."""
        return self.webhook_code == "DEFAULT_UPDATE" and self.webhook_type in (
            "HOLDINGS",
            "INVESTMENTS_TRANSACTIONS",
        )

    @property
    def login_required(self) -> bool:
        """``ITEM`` ``ERROR`` with ``ITEM_LOGIN_REQUIRED``: the user must sign in again
        (https://plaid.com/docs/api/items/#error)."""
        return (
            self.webhook_type == "ITEM"
            and self.webhook_code == "ERROR"
            and self.error_code in LOGIN_REQUIRED
        )


def webhook_from_wire(body: object) -> Webhook:
    """A webhook body: ``webhook_type``, ``webhook_code``, ``item_id`` (and ``error``)."""
    if not isinstance(body, dict):
        raise unknown("webhook payload", type(body).__name__)
    kind, code, item_id = body.get("webhook_type"), body.get("webhook_code"), body.get("item_id")
    if not isinstance(kind, str) or not isinstance(code, str):
        raise unknown("webhook type/code", (kind, code))
    if not isinstance(item_id, str) or not item_id:
        raise unknown("webhook item_id", item_id)
    error = body.get("error")
    error_code = error.get("error_code") if isinstance(error, dict) else None
    return Webhook(
        webhook_type=kind,
        webhook_code=code,
        item_id=item_id,
        error_code=error_code if isinstance(error_code, str) else None,
    )
