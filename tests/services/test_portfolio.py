"""The portfolio's aggregation (pure) and its failure reasons, without the network."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app import errors
from app.brokers import errors as broker_errors
from app.brokers.base import AssetClass, Balances, Position
from app.config import Settings
from app.db.models import PortfolioSnapshot
from app.schemas.portfolio import PortfolioOut
from app.security.vault import CredentialRevoked
from app.services.portfolio import (
    AccountFailure,
    AccountRead,
    AccountRef,
    _failure_from,
    aggregate,
    exact_sum,
)

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
ZERO = Decimal(0)

# Numbers with 16 integer digits and 10 decimal places, both signs: floats lose these, and
# the sums of up to 40 of them still fit the API's decimal strings (18 integer digits).
money = st.decimals(
    min_value=Decimal("-9999999999999999.9999999999"),
    max_value=Decimal("9999999999999999.9999999999"),
    places=10,
    allow_nan=False,
    allow_infinity=False,
)
symbols = st.sampled_from(["AAPL", "MSFT", "BTC/USD", "VTSAX"])
positions = st.lists(
    st.builds(
        Position,
        symbol=symbols,
        asset_class=st.sampled_from(list(AssetClass)),
        quantity=money,
        avg_cost=money,
        current_price=money,
        market_value=money,
        unrealized_pl=money,
        as_of=st.just(NOW),
    ),
    max_size=5,
)


@st.composite
def account_reads(draw: st.DrawFn) -> list[AccountRead]:
    count = draw(st.integers(min_value=0, max_value=8))
    reads = []
    for n in range(count):
        tier = draw(st.sampled_from(["A", "B", "C", "paper"]))
        ref = AccountRef(
            account_id=f"acc_{n}",
            connection_id=f"con_{n}",
            broker=draw(st.sampled_from(["alpaca", "tradier", "paper", "plaid"])),
            tier=tier,
            mode="paper" if tier == "paper" else "live",
        )
        balances = Balances(
            cash=draw(money),
            equity=draw(money),
            buying_power=draw(money),
            currency=draw(st.sampled_from(["USD", "EUR", "CAD"])),
            as_of=NOW,
        )
        reads.append(AccountRead(ref, balances, draw(positions), NOW))
    return reads


def exact(values: list[Decimal]) -> Decimal:
    with localcontext(prec=200):
        return sum(values, Decimal(0))


@settings(max_examples=300, deadline=None)
@given(account_reads())
def test_totals_are_exactly_the_sum_of_their_breakdown(reads: list[AccountRead]) -> None:
    body = aggregate(reads, [], {}, NOW)
    # The JSON the client gets, read back: every figure must survive as an exact decimal.
    out = PortfolioOut.model_validate_json(body.model_dump_json())
    accounts = {a.account_id: a for a in out.accounts}
    assert len(accounts) == len(reads)

    for total in out.totals:
        members = [a for a in out.accounts if (a.currency, a.mode) == (total.currency, total.mode)]
        assert total.accounts == len(members)
        assert total.equity == exact([a.equity for a in members])
        assert total.cash == exact([a.cash for a in members])
    # One total per (currency, mode) actually present: currencies and paper never mix.
    assert Counter((t.currency, t.mode) for t in out.totals) == Counter(
        {(a.currency, a.mode): 1 for a in out.accounts}
    )

    for row in out.positions:
        assert row.quantity == exact([h.quantity for h in row.accounts])
        assert row.market_value == exact([h.market_value for h in row.accounts])
        for holding in row.accounts:
            assert (accounts[holding.account_id].currency, accounts[holding.account_id].mode) == (
                row.currency,
                row.mode,
            )
    # Never netted: every position any account reported is one breakdown line.
    assert sum(len(row.accounts) for row in out.positions) == sum(len(r.positions) for r in reads)
    for total in out.totals:
        rows = [p for p in out.positions if (p.currency, p.mode) == (total.currency, total.mode)]
        assert total.market_value == exact([h.market_value for p in rows for h in p.accounts])


def test_sums_are_decimal_exact_where_floats_are_not() -> None:
    ref = AccountRef("acc_1", "con_1", "alpaca", "A", "live")
    other = AccountRef("acc_2", "con_2", "tradier", "A", "live")
    reads = [
        AccountRead(ref, Balances(Decimal("0.1"), Decimal("0.1"), ZERO, "USD", NOW), [], NOW),
        AccountRead(other, Balances(Decimal("0.2"), Decimal("0.2"), ZERO, "usd", NOW), [], NOW),
    ]
    [total] = aggregate(reads, [], {}, NOW).totals
    assert total.cash == Decimal("0.3")
    assert total.currency == "USD"  # currency codes compared case-insensitively
    assert exact_sum([Decimal("123456789012345678.0123456789")] * 3) == Decimal(
        "370370367037037034.0370370367"
    )


def test_an_unavailable_account_shows_its_last_good_data_and_age_but_is_in_no_total() -> None:
    ref = AccountRef("acc_1", "con_1", "alpaca", "C", "live")
    snapshot = PortfolioSnapshot(
        account_id="acc_1",
        user_id="u",
        currency="USD",
        cash=Decimal("10.5"),
        equity=Decimal("20.25"),
        buying_power=Decimal("10.5"),
        positions=[
            {
                "symbol": "AAPL",
                "asset_class": "equity",
                "quantity": "1",
                "avg_cost": "9.75",
                "current_price": "9.75",
                "market_value": "9.75",
                "unrealized_pl": "0",
            }
        ],
        taken_at=NOW - timedelta(seconds=90, milliseconds=700),
    )
    failure = AccountFailure(ref, "timeout", "slow", attempted=False)
    body = aggregate([], [failure], {"acc_1": snapshot}, NOW)
    assert body.complete is False
    assert body.totals == []
    assert body.positions == []
    [entry] = body.unavailable
    assert (entry.label, entry.reason, entry.attempted) == ("Linked", "timeout", False)
    assert entry.last_good is not None
    assert entry.last_good.age_seconds == 90
    assert entry.last_good.positions[0].avg_cost == Decimal("9.75")


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (broker_errors.RateLimitExceeded("slow down", retry_after=3), "rate_limited"),
        (broker_errors.Transient("the broker answered 503"), "broker_unavailable"),
        (broker_errors.AuthenticationFailed("request is not authorized"), "connection_broken"),
        (broker_errors.UnknownBrokerValue("unknown asset_class 'x'"), "broker_error"),
        (broker_errors.Rejected("account is closed"), "broker_error"),
        (broker_errors.NotSupported("no positions here"), "broker_error"),
        (CredentialRevoked(), "connection_broken"),
        (errors.ConnectionBroken("no credential"), "connection_broken"),
        (ExceptionGroup("read", [broker_errors.Transient("503")]), "broker_unavailable"),
        (RuntimeError("a bug"), "internal_error"),
    ],
)
def test_every_failure_has_a_stable_reason(exc: Exception, reason: str) -> None:
    ref = AccountRef("acc_1", "con_1", "alpaca", "A", "live")
    failure = _failure_from(ref, exc)
    assert failure.reason == reason
    assert failure.attempted is True
    if reason == "internal_error":
        assert "a bug" not in failure.detail  # internals stay in the log


def test_the_timeout_is_a_setting_overridable_per_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKERAGE_PORTFOLIO_BROKER_TIMEOUT_SECONDS", "0.75")
    monkeypatch.setenv("BROKERAGE_PORTFOLIO_BROKER_TIMEOUTS", '{"schwab": 2.5}')
    configured = Settings()
    assert configured.portfolio_timeout_for("schwab") == 2.5
    assert configured.portfolio_timeout_for("alpaca") == 0.75
    assert Settings().portfolio_skip_seconds == 30
    monkeypatch.setenv("BROKERAGE_PORTFOLIO_BROKER_TIMEOUTS", '{"schwab": 0}')
    with pytest.raises(ValidationError):
        Settings()
