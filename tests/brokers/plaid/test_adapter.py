"""The Plaid adapter against the fake Plaid over real HTTP (a real socket)."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from app.brokers import errors
from app.brokers.base import (
    AssetClass,
    OptionContract,
    OptionRight,
    OrderChanges,
    OrderRequest,
    OrderSide,
    OrderType,
)
from app.brokers.base import TimeInForce as TIF
from app.brokers.http import HttpPool
from app.brokers.plaid import mapping
from app.brokers.plaid.adapter import PlaidApi
from tests.brokers.plaid.support import running_fake


async def test_accounts_are_the_items_investment_accounts() -> None:
    async with running_fake() as run:
        item, credentials = run.link()
        adapter = run.adapter(credentials)
        institution, name, accounts = await adapter.linked_accounts()
        assert (institution, name) == ("ins_109508", "First Platypus Bank")
        [account] = accounts  # the checking account is not an investment account
        assert (account.name, account.number_masked, account.currency) == (
            "Plaid IRA",
            "****5555",
            "USD",
        )
        assert mapping.account_id_of(account.broker_account_id) == item.account_id(run.account)
        assert await adapter.list_accounts() == accounts


async def test_balances_positions_and_one_position() -> None:
    async with running_fake(cash="1000.50") as run:
        run.fake.hold(run.account, "AAPL", "10", "190.25", cost_basis="1500.00")
        run.fake.hold(run.account, "VTSAX", "3.5", "120", kind="mutual fund")
        run.fake.hold(run.account, "DOGE", "1000", "0.14", cost_basis="100", kind="cryptocurrency")
        adapter = run.adapter()
        [account] = await adapter.list_accounts()
        ref = account.broker_account_id
        balances = await adapter.get_balances(ref)
        assert (balances.cash, balances.buying_power) == (Decimal("1000.5"), Decimal("1000.5"))
        assert balances.equity == Decimal("1000.50") + Decimal("1902.5") + 420 + 140
        positions = {p.symbol: p for p in await adapter.get_positions(ref)}
        assert set(positions) == {"AAPL", "VTSAX", "DOGE/USD"}
        aapl = positions["AAPL"]
        assert (aapl.quantity, aapl.current_price, aapl.market_value) == (
            Decimal(10),
            Decimal("190.25"),
            Decimal("1902.5"),
        )
        assert (aapl.avg_cost, aapl.unrealized_pl) == (Decimal(150), Decimal("402.5"))
        assert positions["VTSAX"].asset_class is AssetClass.mutual_fund
        assert positions["VTSAX"].unrealized_pl == 0  # no cost basis reported
        assert positions["DOGE/USD"].asset_class is AssetClass.crypto
        assert await adapter.get_position(ref, "AAPL") == aapl
        assert await adapter.get_position(ref, "MSFT") is None


async def test_cash_comes_from_the_cash_holdings_when_available_is_not_reported() -> None:
    async with running_fake(cash="700") as run:
        run.account.available_reported = False
        adapter = run.adapter()
        [account] = await adapter.list_accounts()
        before = len(run.fake.requests)
        balances = await adapter.get_balances(account.broker_account_id)
        assert balances.cash == Decimal(700)
        assert [p for _, p in run.fake.requests[before:]] == [
            "/accounts/get",
            "/investments/holdings/get",
        ]


async def test_transactions_paged_filtered_and_signed() -> None:
    async with running_fake(cash="5000") as run:
        today = datetime.now(UTC).date()
        aapl = run.fake.security("AAPL", price="190")
        for day in range(3):
            run.fake.add_transaction(
                run.account,
                kind="buy",
                subtype="buy",
                amount=Decimal("190.00"),
                name="BUY AAPL",
                security=aapl,
                quantity=Decimal(1),
                price=Decimal(190),
                on=today - timedelta(days=day + 1),
            )
        run.fake.add_transaction(
            run.account,
            kind="cash",
            subtype="dividend",
            amount=Decimal("-1.25"),
            name="DIVIDEND AAPL",
            security=aapl,
            on=today - timedelta(days=400),
        )
        adapter = run.adapter()
        [account] = await adapter.list_accounts()
        ref = account.broker_account_id
        everything = await adapter.get_transactions(ref, None, None, None)
        assert [t.type for t in everything] == ["deposit", "buy", "buy", "buy", "dividend"]
        assert everything[0].amount == Decimal(5000)
        buys = await adapter.get_transactions(ref, None, None, "buy")
        assert [(t.symbol, t.quantity, t.amount) for t in buys] == [
            ("AAPL", Decimal(1), Decimal(-190))
        ] * 3
        recent = await adapter.get_transactions(
            ref, datetime.now(UTC) - timedelta(days=30), None, "dividend"
        )
        assert recent == []
        sent = [b for p, b in run.fake.bodies if p == "/investments/transactions/get"][-1]
        assert sent["options"]["account_ids"] == [mapping.account_id_of(ref)]


async def test_transactions_follow_total_investment_transactions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.brokers.plaid import adapter as adapter_module

    monkeypatch.setattr(adapter_module, "TRANSACTIONS_PER_PAGE", 2)
    async with running_fake(cash="10") as run:
        for n in range(4):
            run.fake.add_transaction(
                run.account,
                kind="fee",
                subtype="account fee",
                amount=Decimal(n + 1),
                name=f"FEE {n}",
            )
        adapter = run.adapter()
        [account] = await adapter.list_accounts()
        before = len(run.fake.requests)
        found = await adapter.get_transactions(account.broker_account_id, None, None, None)
        assert len(found) == 5
        pages = [p for _, p in run.fake.requests[before:]]
        assert pages == ["/investments/transactions/get"] * 3
        offsets = [b["options"]["offset"] for p, b in run.fake.bodies[-3:]]
        assert offsets == [0, 2, 4]


async def test_the_write_half_is_not_supported_and_sends_nothing() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        [account] = await adapter.list_accounts()
        ref = account.broker_account_id
        before = list(run.fake.requests)
        order = OrderRequest(
            client_order_id="bg" + uuid.uuid4().hex,
            symbol="AAPL",
            side=OrderSide.buy,
            quantity=Decimal(1),
            order_type=OrderType.market,
            time_in_force=TIF.day,
        )
        with pytest.raises(errors.NotSupported):
            await adapter.place_order(ref, order)
        with pytest.raises(errors.NotSupported):
            await adapter.modify_order(ref, "x", OrderChanges(limit_price=Decimal(1)))
        with pytest.raises(errors.NotSupported):
            await adapter.cancel_order(ref, "x")
        with pytest.raises(errors.NotSupported):
            await adapter.check_symbol("AAPL")
        with pytest.raises(errors.NotSupported):
            await adapter.get_quotes(["AAPL"])
        with pytest.raises(errors.OrderNotFound):
            await adapter.get_order(ref, "x")
        assert await adapter.find_order_by_client_id(ref, "bg1") is None
        assert await adapter.list_orders(ref, "all", 10) == []
        assert await adapter.order_history(ref, None, None, None) == []
        assert adapter.stream_order_updates(ref) is None
        assert run.fake.requests == before
        assert adapter.capabilities.place_orders is False


async def test_item_login_required_is_reauthorization() -> None:
    async with running_fake() as run:
        item, credentials = run.link()
        adapter = run.adapter(credentials)
        [account] = await adapter.list_accounts()
        run.fake.require_login(item)
        with pytest.raises(errors.ReauthorizationRequired) as caught:
            await adapter.get_positions(account.broker_account_id)
        assert "ITEM_LOGIN_REQUIRED" in caught.value.reason


async def test_a_revoked_item_is_authentication_failed() -> None:
    async with running_fake() as run:
        item, credentials = run.link()
        adapter = run.adapter(credentials)
        run.fake.revoke(item)
        with pytest.raises(errors.AuthenticationFailed) as caught:
            await adapter.list_accounts()
        assert not isinstance(caught.value, errors.ReauthorizationRequired)
        assert "INVALID_ACCESS_TOKEN" in caught.value.reason


async def test_429_is_rate_limited_after_the_retries() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        run.fake.faults.rate_limited = 3
        before = len(run.fake.requests)
        with pytest.raises(errors.RateLimitExceeded):
            await adapter.list_accounts()
        assert len(run.fake.requests) - before == 3  # a read: retried (no Retry-After: 1 s)


async def test_5xx_on_a_read_is_transient_and_retried() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        run.fake.faults.server_errors = 1
        assert len(await adapter.list_accounts()) == 1
        run.fake.faults.server_errors = 3
        with pytest.raises(errors.Transient) as caught:
            await adapter.list_accounts()
        assert not isinstance(caught.value, errors.RateLimitExceeded)


async def test_institution_down_is_transient() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        run.fake.faults.institution_down = 3
        with pytest.raises(errors.Transient):
            await adapter.list_accounts()


async def test_a_slow_plaid_times_out_as_transient() -> None:
    async with running_fake() as run:
        adapter = run.adapter(broker_read_timeout_seconds=0.05)
        run.fake.faults.latency = 0.3
        with pytest.raises(errors.Transient):
            await adapter.list_accounts()


async def test_wrong_client_keys_are_not_the_users_fault() -> None:
    async with running_fake() as run:
        _, credentials = run.link()
        adapter = run.adapter(credentials, plaid_secret="not-the-secret")
        with pytest.raises(errors.Transient) as caught:
            await adapter.list_accounts()
        assert "API keys" in caught.value.reason


async def test_an_account_the_item_no_longer_has_is_refused() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        with pytest.raises(errors.Rejected):
            await adapter.get_positions("NoSuchAccount~f0000000000000000")


async def test_link_calls() -> None:
    async with running_fake() as run:
        pool = HttpPool()
        try:
            api = PlaidApi(run.settings(), pool)
            token, expiration = await api.create_link_token("alice", "https://gw.test/hook")
            assert token.startswith("link-sandbox-")
            assert expiration.endswith("Z")
            sent = run.fake.link_tokens[token]
            assert sent["user"] == {"client_user_id": "alice"}
            assert sent["products"] == ["investments"]
            assert sent["webhook"] == "https://gw.test/hook"
            exchanged = await api.exchange_public_token(run.fake.public_token(run.login))
            assert exchanged.access_token.startswith("access-sandbox-")
            with pytest.raises(errors.Rejected) as caught:
                await api.exchange_public_token("public-sandbox-not-issued")
            assert "INVALID_PUBLIC_TOKEN" in caught.value.reason
            assert await api.institution_name("ins_109508") == "First Platypus Bank"
            key = await api.webhook_key(run.fake.kid)
            assert (key["alg"], key["crv"], key["kid"]) == ("ES256", "P-256", run.fake.kid)
            await api.remove_item(exchanged.access_token)
            with pytest.raises(errors.AuthenticationFailed):
                await api.remove_item(exchanged.access_token)
        finally:
            await pool.aclose()


async def test_an_exchange_whose_answer_is_lost_is_outcome_unknown() -> None:
    async with running_fake() as run:
        pool = HttpPool()
        try:
            api = PlaidApi(run.settings(), pool)
            run.fake.faults.server_errors = 1
            with pytest.raises(errors.OutcomeUnknown):
                await api.exchange_public_token(run.fake.public_token(run.login))
        finally:
            await pool.aclose()


async def test_no_secret_in_logs_or_reprs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_fake() as run:
        _, credentials = run.link()
        adapter = run.adapter(credentials)
        run.fake.faults.server_errors = 1
        await adapter.list_accounts()
        text = caplog.text + repr(adapter) + repr(adapter.api) + repr(credentials)
        assert credentials["access_token"] not in text
        assert run.fake.secret not in text


async def test_held_options_are_imported_as_option_positions() -> None:
    async with running_fake(cash="500") as run:
        call = OptionContract("AAPL", "AAPL", date(2027, 1, 15), OptionRight.call, Decimal(200))
        put = OptionContract("AAPL", "AAPL", date(2027, 1, 15), OptionRight.put, Decimal("172.5"))
        run.fake.hold_option(run.account, call, 2, "7.25", cost_basis="1300")
        run.fake.hold_option(run.account, put, -1, "3.10", cost_basis="-450")
        adapter = run.adapter()
        [account] = await adapter.list_accounts()
        ref = account.broker_account_id
        positions = {p.symbol: p for p in await adapter.get_positions(ref)}
        assert set(positions) == {call.symbol, put.symbol}
        long, short = positions[call.symbol], positions[put.symbol]
        assert (long.quantity, long.market_value, long.avg_cost) == (2, 1450, Decimal("6.5"))
        assert (short.quantity, short.market_value, short.avg_cost) == (-1, -310, Decimal("4.5"))
        assert long.unrealized_pl == 150
        assert (long.contract, short.contract) == (call, put)
        assert all(p.asset_class is AssetClass.option for p in positions.values())
        balances = await adapter.get_balances(ref)
        assert balances.equity == Decimal(500) + 1450 - 310
        assert await adapter.get_position(ref, put.occ_padded) == short
        with pytest.raises(errors.NotSupported):
            await adapter.place_order(
                ref,
                OrderRequest(
                    client_order_id="bg-plaid-option",
                    symbol=call.symbol,
                    side=OrderSide.sell,
                    quantity=Decimal(1),
                    order_type=OrderType.market,
                    time_in_force=TIF.day,
                ),
            )


async def test_an_expired_option_is_an_option_expiration_of_its_contract() -> None:
    async with running_fake(cash="10") as run:
        put = OptionContract("AAPL", "AAPL", date(2026, 11, 20), OptionRight.put, Decimal(150))
        holding = run.fake.hold_option(run.account, put, 1, "0.01")
        run.account.holdings.remove(holding)  # it expired: the holding is gone
        run.fake.add_transaction(
            run.account,
            kind="transfer",
            subtype="expire",
            amount=Decimal(0),
            name="EXPIRED AAPL PUT",
            security=holding.security,
            quantity=Decimal(-100),
        )
        adapter = run.adapter()
        [account] = await adapter.list_accounts()
        found = await adapter.get_transactions(
            account.broker_account_id, None, None, "option_expiration"
        )
        assert [(t.type, t.symbol) for t in found] == [("option_expiration", put.symbol)]
        assert await adapter.get_positions(account.broker_account_id) == []
