"""Plaid payloads -> normalized models, on the spec's own examples (payloads.py)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal

import httpx
import pytest

from app.brokers import errors
from app.brokers.base import AssetClass, OptionContract, OptionRight
from app.brokers.plaid import mapping
from tests.brokers.plaid import payloads

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


def parsed(name: str) -> dict[str, object]:
    """The example as the adapter sees it: numbers parsed as Decimal."""
    body: dict[str, object] = json.loads(payloads.example_text(name), parse_float=Decimal)
    return body


def response(status: int, body: object) -> httpx.Response:
    return httpx.Response(status, json=body)


def test_holdings_example_maps_to_positions_and_leaves_out_what_is_not_modelled() -> None:
    body = parsed("HOLDINGS_GET")
    k401 = "k67E4xKvMlhmleEa4pg9hlwGGNnnEeixPolGm"
    positions, skipped = mapping.positions_from_wire(body, k401, NOW)
    by_symbol = {p.symbol: p for p in positions}
    # ACHN (equity), DBLTX and MIPTX (mutual funds), NHX105509 (etf); the US Treasury bill
    # (fixed income, no ticker) is left out, the USD cash holding is cash, not a position.
    assert set(by_symbol) == {"ACHN", "DBLTX", "MIPTX", "NHX105509"}
    assert skipped == 1
    achn = by_symbol["ACHN"]
    assert achn.asset_class is AssetClass.equity
    assert (achn.quantity, achn.current_price, achn.market_value) == (
        Decimal(1),
        Decimal("2.11"),
        Decimal("2.11"),
    )
    # cost_basis is the holding's total cost: 1.5 for 1 share.
    assert (achn.avg_cost, achn.unrealized_pl) == (Decimal("1.5"), Decimal("0.61"))
    miptx = by_symbol["MIPTX"]
    assert miptx.asset_class is AssetClass.mutual_fund
    assert miptx.quantity == Decimal("23.567")
    assert miptx.avg_cost == Decimal(23) / Decimal("23.567")
    assert miptx.unrealized_pl == Decimal("636.309") - Decimal(23)
    # institution_price_as_of "2021-04-13": the date's midnight, UTC.
    assert achn.as_of == datetime(2021, 4, 13, tzinfo=UTC)
    assert by_symbol["NHX105509"].asset_class is AssetClass.equity  # an etf


def test_holdings_example_crypto_is_a_pair_and_options_are_option_positions() -> None:
    body = parsed("HOLDINGS_GET")
    crypto, skipped = mapping.positions_from_wire(
        body, "ax0xgOBYRAIqOOjeLZr0iZBb8r6K88HZXpvmq", NOW
    )
    [doge] = crypto
    assert (doge.symbol, doge.asset_class) == ("DOGE/USD", AssetClass.crypto)
    assert doge.as_of == datetime(2022, 6, 7, 23, 1, tzinfo=UTC)  # institution_price_datetime
    assert skipped == 0
    ira, skipped = mapping.positions_from_wire(body, "JqMLm4rJwpF6gMPJwBqdh9ZjjPvvpDcb7kDK1", NOW)
    [call] = ira  # beside USD cash: the NFLX call (quantity 10000 options = 100 contracts)
    assert skipped == 0
    assert (call.symbol, call.asset_class, call.quantity) == (
        "NFLX180201C00355000",
        AssetClass.option,
        Decimal(100),
    )
    assert call.contract == OptionContract(
        "NFLX", "NFLX", date(2018, 2, 1), OptionRight.call, Decimal(355)
    )
    # institution_value (110) = institution_price (0.011 per option) x 10000 options:
    # already price x contracts x multiplier; avg_cost is per share (cost_basis / options)
    assert (call.current_price, call.market_value) == (Decimal("0.011"), Decimal(110))
    assert call.market_value == call.current_price * call.quantity * call.contract.multiplier
    assert call.avg_cost == Decimal("0.01") / 10000
    assert mapping.cash_of(body, "JqMLm4rJwpF6gMPJwBqdh9ZjjPvvpDcb7kDK1") == Decimal("0.01")


def test_a_holding_without_cost_basis_shows_no_gain() -> None:
    body = parsed("HOLDINGS_GET")
    holdings = body["holdings"]
    assert isinstance(holdings, list)
    holdings[1]["cost_basis"] = None  # ACHN
    positions, _ = mapping.positions_from_wire(body, "k67E4xKvMlhmleEa4pg9hlwGGNnnEeixPolGm", NOW)
    achn = next(p for p in positions if p.symbol == "ACHN")
    assert (achn.avg_cost, achn.unrealized_pl) == (achn.current_price, Decimal(0))


def test_an_unknown_security_type_is_an_error_not_a_guess() -> None:
    body = parsed("HOLDINGS_GET")
    securities = body["securities"]
    assert isinstance(securities, list)
    securities[2]["type"] = "structured note"
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.positions_from_wire(body, "k67E4xKvMlhmleEa4pg9hlwGGNnnEeixPolGm", NOW)


def test_a_null_security_type_is_left_out() -> None:
    body = parsed("HOLDINGS_GET")
    securities = body["securities"]
    assert isinstance(securities, list)
    achn = next(s for s in securities if s["ticker_symbol"] == "ACHN")
    achn["type"] = None  # "In rare instances, a null value is returned"
    positions, skipped = mapping.positions_from_wire(
        body, "k67E4xKvMlhmleEa4pg9hlwGGNnnEeixPolGm", NOW
    )
    assert "ACHN" not in {p.symbol for p in positions}
    assert skipped == 2


def test_accounts_example_keeps_investment_accounts_only() -> None:
    body = parsed("ACCOUNTS_GET")
    accounts = mapping.accounts_of(body)
    assert [a.type for a in accounts] == ["depository", "investment", "loan"]
    [k401] = [a for a in accounts if a.is_investment]
    institution = mapping.institution_of(body)
    assert institution == "ins_117650"
    found = mapping.broker_account(institution, k401)
    assert (found.name, found.number_masked, found.currency) == ("Plaid 401k", "****6666", "USD")
    assert mapping.account_id_of(found.broker_account_id) == k401.account_id


def test_balances_of_an_investment_account() -> None:
    body = parsed("HOLDINGS_GET")
    ira = next(a for a in mapping.accounts_of(body) if a.name == "Plaid IRA")
    # available is null for this account: the cash holdings stand in.
    balances = mapping.balances_from_wire(ira, mapping.cash_of(body, ira.account_id), NOW)
    assert (balances.cash, balances.equity, balances.buying_power) == (
        Decimal("0.01"),
        Decimal("110.01"),
        Decimal("0.01"),
    )
    assert (balances.currency, balances.as_of) == ("USD", NOW)
    crypto = next(a for a in mapping.accounts_of(body) if a.subtype == "crypto exchange")
    reported = mapping.balances_from_wire(crypto, None, NOW)
    assert (reported.cash, reported.equity) == (Decimal("48200.03"), Decimal("48200.03"))


def test_an_unknown_account_type_is_an_error_and_that_account_is_left_out() -> None:
    body = parsed("ACCOUNTS_GET")
    accounts = body["accounts"]
    assert isinstance(accounts, list)
    accounts[0]["type"] = "savings-ish"
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.account_from_wire(accounts[0])
    listed = mapping.accounts_of(body)
    assert listed.skipped == 1
    assert [a.account_id for a in listed] == [a["account_id"] for a in accounts[1:]]


def test_transactions_example_signs_and_types() -> None:
    body = parsed("TRANSACTIONS_GET")
    securities = mapping.securities_of(body)
    items = body["investment_transactions"]
    assert isinstance(items, list)
    mapped = [mapping.transaction_from_wire(item, securities) for item in items]
    by_id = {t.transaction_id: t for t in mapped}
    dividend = by_id["oq99Pz97joHQem4BNjXECev1E4B6L6sRzwANW"]
    # Plaid's -8.72 is cash coming in: +8.72 for us.
    assert (dividend.type, dividend.amount) == ("dividend", Decimal("8.72"))
    assert (dividend.quantity, dividend.price) == (None, None)
    assert dividend.occurred_at == datetime(2020, 5, 29, tzinfo=UTC)
    assert dividend.description == "INCOME DIV DIVIDEND RECEIVED"
    types = sorted(t.type for t in mapped)
    assert "buy" in types
    buy = next(t for t in mapped if t.type == "buy")
    assert buy.amount < 0  # a purchase is money out
    assert buy.symbol is not None
    assert buy.quantity is not None
    assert buy.quantity > 0


@pytest.mark.parametrize(
    ("kind", "subtype", "expected"),
    [
        ("buy", "buy", "buy"),
        ("sell", "sell", "sell"),
        ("cash", "deposit", "deposit"),
        ("cash", "contribution", "deposit"),
        ("cash", "withdrawal", "withdrawal"),
        ("cash", "qualified dividend", "dividend"),
        ("cash", "interest", "interest"),
        ("cash", "tax withheld", "other"),
        ("fee", "account fee", "fee"),
        ("transfer", "transfer", "transfer"),
        ("cancel", "buy", "cancel"),
    ],
)
def test_transaction_types(kind: str, subtype: str, expected: str) -> None:
    assert mapping.transaction_type(kind, subtype) == expected


def test_an_unknown_transaction_type_is_an_error() -> None:
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.transaction_type("swap", "swap")


def test_references_match_across_items_by_fingerprint_and_persistent_id() -> None:
    body = parsed("HOLDINGS_GET")
    ira = next(a for a in mapping.accounts_of(body) if a.name == "Plaid IRA")
    old = mapping.account_ref("ins_3", ira)
    relinked = mapping.account_ref(
        "ins_3", mapping.PlaidAccount(**{**_fields(ira), "account_id": "NewId123"})
    )
    assert mapping.account_id_of(relinked) == "NewId123"
    assert mapping.same_account(old, relinked)
    other_institution = mapping.account_ref("ins_4", ira)
    assert not mapping.same_account(old, other_institution)
    renamed = mapping.account_ref(
        "ins_3", mapping.PlaidAccount(**{**_fields(ira), "name": "My IRA"})
    )
    assert not mapping.same_account(old, renamed)
    # With a persistent id on both sides it decides, even over a changed name.
    with_p = mapping.account_ref(
        "ins_3", mapping.PlaidAccount(**{**_fields(ira), "persistent_account_id": "pers-1"})
    )
    with_p_renamed = mapping.account_ref(
        "ins_3",
        mapping.PlaidAccount(
            **{**_fields(ira), "persistent_account_id": "pers-1", "name": "My IRA"}
        ),
    )
    with_other_p = mapping.account_ref(
        "ins_3", mapping.PlaidAccount(**{**_fields(ira), "persistent_account_id": "pers-2"})
    )
    assert mapping.same_account(with_p, with_p_renamed)
    assert not mapping.same_account(with_p, with_other_p)
    assert mapping.same_account(old, with_p)  # one side without: the fingerprint decides
    assert len(with_p) <= 128


def _fields(account: mapping.PlaidAccount) -> dict[str, object]:
    return {name: getattr(account, name) for name in mapping.PlaidAccount.__slots__}


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, payloads.ITEM_LOGIN_REQUIRED, errors.ReauthorizationRequired),
        (400, payloads.ACCESS_NOT_GRANTED, errors.ReauthorizationRequired),
        (400, payloads.INVALID_ACCESS_TOKEN, errors.AuthenticationFailed),
        (
            400,
            {**payloads.INVALID_ACCESS_TOKEN, "error_code": "INVALID_API_KEYS"},
            errors.Transient,
        ),
        (
            400,
            {**payloads.ITEM_LOGIN_REQUIRED, "error_code": "PRODUCT_NOT_READY"},
            errors.Transient,
        ),
        (
            400,
            {"error_type": "INSTITUTION_ERROR", "error_code": "INSTITUTION_DOWN"},
            errors.Transient,
        ),
        (
            400,
            {"error_type": "INVALID_INPUT", "error_code": "INVALID_PUBLIC_TOKEN"},
            errors.Rejected,
        ),
    ],
)
def test_errors_are_classified(status: int, body: dict[str, object], expected: type) -> None:
    found = mapping.classify(response(status, body), "GET")
    assert type(found) is expected
    assert found is not None
    assert found.broker == "plaid"


def test_a_body_that_is_not_plaids_is_left_to_the_generic_mapping() -> None:
    assert mapping.classify(response(400, {"message": "nope"}), "GET") is None
    assert mapping.classify(httpx.Response(400, text="<html>"), "GET") is None


def test_webhook_examples() -> None:
    holdings = mapping.webhook_from_wire(payloads.example("HOLDINGS_WEBHOOK"))
    assert holdings.refreshes
    assert not holdings.login_required
    assert holdings.item_id == "wz666MBjYWTp2PDzzggYhM6oWWmBb"
    assert mapping.webhook_from_wire(payloads.example("INVESTMENTS_WEBHOOK")).refreshes
    error = mapping.webhook_from_wire(payloads.example("ITEM_ERROR_WEBHOOK"))
    assert error.login_required
    assert not error.refreshes
    with pytest.raises(errors.UnknownBrokerValue):
        mapping.webhook_from_wire({"webhook_type": "HOLDINGS"})


def _option_security(**changes: object) -> dict[str, object]:
    body = parsed("HOLDINGS_GET")
    securities = body["securities"]
    assert isinstance(securities, list)
    [nflx] = [s for s in securities if s["type"] == "derivative"]
    return {**nflx, **changes}


def test_option_securities_are_read_strictly() -> None:
    nflx = _option_security()
    assert mapping.option_of(nflx) == OptionContract.parse("NFLX180201C00355000")
    # An institution's own ticker: the contract's fields name it.
    own = mapping.option_of({**nflx, "ticker_symbol": "NFLX 02/01/18 C355"})
    assert own is not None
    assert own.symbol == "NFLX180201C00355000"
    spxw = _option_security(
        ticker_symbol="SPXW  261218P05000000",
        option_contract={
            "contract_type": "put",
            "expiration_date": "2026-12-18",
            "strike_price": 5000,
            "underlying_security_ticker": "SPX",
        },
    )
    weekly = mapping.option_of(spxw)
    assert weekly is not None
    assert (weekly.root, weekly.underlying, weekly.symbol) == ("SPXW", "SPX", "SPXW261218P05000000")
    assert mapping.option_of({**nflx, "option_contract": None}) is None  # a warrant
    for bad in (
        {"contract_type": "straddle"},
        {"strike_price": "abc"},
        {"underlying_security_ticker": ""},
        {"expiration_date": "2018-02-31"},
        {"strike_price": 360},  # disagrees with the OCC ticker
    ):
        contract = {**nflx["option_contract"], **bad}  # type: ignore[dict-item]
        with pytest.raises(errors.UnknownBrokerValue):
            mapping.option_of({**nflx, "option_contract": contract})


def test_a_written_option_is_negative_and_odd_quantities_are_left_out() -> None:
    body = parsed("HOLDINGS_GET")
    holdings = body["holdings"]
    assert isinstance(holdings, list)
    account = "JqMLm4rJwpF6gMPJwBqdh9ZjjPvvpDcb7kDK1"
    for holding in holdings:
        if holding["security_id"] == "8E4L9XLl6MudjEpwPAAgivmdZRdBPJuvMPlPb":
            holding.update(quantity=-300, institution_value=Decimal("-3.3"), cost_basis=-6)
    [short], skipped = mapping.positions_from_wire(body, account, NOW)
    assert (short.quantity, short.market_value, skipped) == (Decimal(-3), Decimal("-3.3"), 0)
    assert short.avg_cost == Decimal("0.02")
    for holding in holdings:
        if holding["security_id"] == "8E4L9XLl6MudjEpwPAAgivmdZRdBPJuvMPlPb":
            holding.update(quantity=150)  # not whole 100-share contracts
    assert mapping.positions_from_wire(body, account, NOW) == ([], 1)


@pytest.mark.parametrize(
    ("kind", "subtype", "ours"),
    [
        ("transfer", "expire", "option_expiration"),
        ("transfer", "assignment", "option_assignment"),
        ("transfer", "exercise", "option_exercise"),
        ("sell", "assignment", "option_assignment"),
    ],
)
def test_option_lifecycle_subtypes_are_their_own_types(kind: str, subtype: str, ours: str) -> None:
    assert mapping.transaction_type(kind, subtype) == ours
