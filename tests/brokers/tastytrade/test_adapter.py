"""The tastytrade adapter against the fake over real HTTP: results, refusals and faults."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.brokers import errors
from app.brokers.base import (
    BrokerAdapter,
    OrderChanges,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    TimeInForce,
)
from app.brokers.http import HttpPool
from app.brokers.tastytrade.adapter import TastytradeAdapter
from app.security.credentials import Credentials
from tests.brokers.support import limit_buy, market
from tests.brokers.tastytrade.support import running_fake


async def test_it_is_a_broker_adapter_without_secrets_in_its_repr() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        assert isinstance(adapter, BrokerAdapter)
        await adapter.list_accounts()  # a token is held now
        text = repr(adapter) + repr(adapter._tokens)
        assert run.customer.client_secret not in text
        assert run.customer.refresh_token not in text
        assert not any(token in text for token in run.fake.tokens)


async def test_accounts_balances_positions_and_transactions() -> None:
    async with running_fake(cash="50000") as run:
        # The fake's clock held at one moment: the paper market's quotes move every second,
        # and the position read twice below (the list, then the one) must carry one price
        # however slow the machine is between the two reads.
        now = run.fake.clock()
        run.fake.clock = lambda: now
        adapter = run.adapter()
        second = run.fake.add_account(run.customer, cash="10")
        accounts = await adapter.list_accounts()
        assert [a.broker_account_id for a in accounts] == [run.account.number, second.number]
        assert accounts[0].number_masked == "****" + run.account.number[-4:]
        number = run.account.number
        balances = await adapter.get_balances(number)
        assert (balances.cash, balances.buying_power, balances.equity) == (
            Decimal("50000.00"),
            Decimal("50000.00"),
            Decimal("50000.00"),
        )

        placed = await adapter.place_order(number, market("bg-m-1", qty="3"))
        assert placed.status is OrderStatus.submitted  # "Routed" in the answer
        assert await run.fake.match() == 1
        filled = await adapter.get_order(number, placed.broker_order_id)
        assert (filled.status, filled.filled_quantity) == (OrderStatus.filled, Decimal(3))
        assert isinstance(filled.avg_fill_price, Decimal)

        [position] = await adapter.get_positions(number)
        assert (position.symbol, position.quantity) == ("AAPL", Decimal(3))
        assert position.avg_cost == filled.avg_fill_price
        one = await adapter.get_position(number, "AAPL")
        assert one == position
        assert await adapter.get_position(number, "MSFT") is None
        assert await adapter.get_positions(second.number) == []

        transactions = await adapter.get_transactions(number, None, None, None)
        assert [t.type for t in transactions] == ["buy", "deposit"]
        assert transactions[0].amount == -(Decimal(3) * filled.avg_fill_price)
        deposits = await adapter.get_transactions(number, None, None, "deposit")
        assert [t.amount for t in deposits] == [Decimal("50000.00")]
        after = await adapter.get_balances(number)
        assert after.cash == Decimal("50000.00") + transactions[0].amount


async def test_a_sell_without_shares_opens_a_short() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        placed = await adapter.place_order(number, market("bg-short", side=OrderSide.sell))
        await run.fake.match()
        assert (await adapter.get_order(number, placed.broker_order_id)).status is (
            OrderStatus.filled
        )
        [position] = await adapter.get_positions(number)
        assert position.quantity == Decimal(-2)
        sent = [b for m, p, b in run.fake.bodies if p.endswith("/orders")]
        assert sent[-1]["legs"][0]["action"] == "Sell to Close"  # turned into an opening sell


async def test_quotes_are_decimals() -> None:
    async with running_fake() as run:
        quotes = await run.adapter().get_quotes(["AAPL", "MSFT", "NOPE"])
        assert set(quotes) == {"AAPL", "MSFT"}
        quote = quotes["AAPL"]
        assert isinstance(quote.bid, Decimal)
        assert quote.bid < quote.ask
        assert ("GET", "/market-data/by-type") in run.fake.requests


async def test_place_carries_our_client_order_id_and_lookup_finds_it() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        placed = await adapter.place_order(number, limit_buy("bg-client-1"))
        assert placed.client_order_id == "bg-client-1"
        assert placed.limit_price == Decimal(100)
        found = await adapter.find_order_by_client_id(number, "bg-client-1")
        assert found is not None
        assert (found.broker_order_id, found.status) == (
            placed.broker_order_id,
            OrderStatus.accepted,
        )
        assert await adapter.find_order_by_client_id(number, "bg-nothing") is None


async def test_tastytrade_does_not_deduplicate_external_identifiers() -> None:
    # Documented: a repeated external-identifier places a second order. The gateway never
    # resends (idempotency keys, reconciliation); this pins the broker behaviour the fake has.
    async with running_fake() as run:
        adapter = run.adapter()
        await adapter.place_order(run.account.number, limit_buy("bg-twice"))
        await adapter.place_order(run.account.number, limit_buy("bg-twice"))
        assert run.fake.order_count(run.account.number) == 2


async def test_replace_makes_a_new_order_and_the_old_one_replaced() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        placed = await adapter.place_order(number, limit_buy("bg-r-1"))
        new = await adapter.modify_order(
            number, placed.broker_order_id, OrderChanges(limit_price=Decimal("101.50"))
        )
        assert new.broker_order_id != placed.broker_order_id
        assert new.replaces == placed.broker_order_id
        assert (new.limit_price, new.status) == (Decimal("101.50"), OrderStatus.accepted)
        assert new.client_order_id == f"bgr-{placed.broker_order_id}"
        old = await adapter.get_order(number, placed.broker_order_id)
        assert (old.status, old.replaced_by) == (OrderStatus.replaced, new.broker_order_id)
        again = await adapter.modify_order(
            number, new.broker_order_id, OrderChanges(time_in_force=TimeInForce.day)
        )
        assert (again.time_in_force, again.limit_price) == (TimeInForce.day, Decimal("101.50"))
        with pytest.raises(errors.OrderNotModifiable):
            await adapter.modify_order(
                number, placed.broker_order_id, OrderChanges(limit_price=Decimal(99))
            )
        puts = [r for r in run.fake.requests if r[0] == "PUT"]
        with pytest.raises(errors.UnsupportedOrder, match="quantity"):
            await adapter.modify_order(
                number, again.broker_order_id, OrderChanges(quantity=Decimal(5))
            )
        assert [r for r in run.fake.requests if r[0] == "PUT"] == puts  # nothing sent
        unchanged = await adapter.modify_order(number, again.broker_order_id, OrderChanges())
        assert unchanged.broker_order_id == again.broker_order_id


async def test_cancel_answers_cancel_requested_and_refuses_a_finished_order() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        placed = await adapter.place_order(number, limit_buy("bg-c-1"))
        canceled = await adapter.cancel_order(number, placed.broker_order_id)
        assert canceled.status is OrderStatus.pending_cancel
        assert ("DELETE", f"/accounts/{number}/orders/{placed.broker_order_id}") in (
            run.fake.requests
        )
        assert (await adapter.get_order(number, placed.broker_order_id)).status is (
            OrderStatus.canceled
        )
        with pytest.raises(errors.OrderNotModifiable):
            await adapter.cancel_order(number, placed.broker_order_id)


async def test_list_and_history() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        resting = await adapter.place_order(number, limit_buy("bg-l-1"))
        done = await adapter.place_order(number, limit_buy("bg-l-2"))
        await adapter.cancel_order(number, done.broker_order_id)
        open_ids = [o.broker_order_id for o in await adapter.list_orders(number, "open", 10)]
        closed_ids = [o.broker_order_id for o in await adapter.list_orders(number, "closed", 10)]
        all_ids = [o.broker_order_id for o in await adapter.list_orders(number, "all", 10)]
        assert open_ids == [resting.broker_order_id]
        assert closed_ids == [done.broker_order_id]
        assert all_ids == [done.broker_order_id, resting.broker_order_id]
        assert [o.broker_order_id for o in await adapter.list_orders(number, "all", 1)] == [
            done.broker_order_id
        ]
        history = await adapter.order_history(
            number, resting.created_at.replace(year=2020), None, "AAPL"
        )
        assert {o.broker_order_id for o in history} == {
            resting.broker_order_id,
            done.broker_order_id,
        }
        assert await adapter.order_history(number, None, None, "MSFT") == []


async def test_history_reads_every_page() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        for n in range(5):
            await adapter.place_order(number, limit_buy(f"bg-p-{n}", price="1"))
        assert len(await adapter.list_orders(number, "all", 3)) == 3
        searches = [r for r in run.fake.requests if r == ("GET", f"/accounts/{number}/orders")]
        assert len(searches) == 1  # one page of 3 was enough
        import app.brokers.tastytrade.adapter as module

        page_size = module.PER_PAGE
        module.PER_PAGE = 2
        try:
            history = await adapter.order_history(number, None, None, None)
        finally:
            module.PER_PAGE = page_size
        assert len(history) == 5
        searches = [r for r in run.fake.requests if r == ("GET", f"/accounts/{number}/orders")]
        assert len(searches) == 1 + 3


async def test_check_symbol_remembers_tradable_equities_only() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        await adapter.check_symbol("AAPL")
        await adapter.check_symbol("AAPL")
        assert run.fake.requests.count(("GET", "/instruments/equities/AAPL")) == 1
        for _ in range(2):
            with pytest.raises(errors.UnknownSymbol):
                await adapter.check_symbol("NOSUCH")
        assert run.fake.requests.count(("GET", "/instruments/equities/NOSUCH")) == 2


# --- refusals -------------------------------------------------------------------------------


async def test_insufficient_buying_power_is_insufficient_funds() -> None:
    async with running_fake(cash="100") as run:
        with pytest.raises(errors.InsufficientFunds, match="sufficient buying power"):
            await run.adapter().place_order(run.account.number, market("bg-poor"))
        assert run.fake.order_count(run.account.number) == 0


async def test_a_gtc_market_order_is_rejected_with_the_brokers_reason() -> None:
    async with running_fake() as run:
        request = OrderRequest(
            "bg-gtc", "AAPL", OrderSide.buy, Decimal(1), OrderType.market, TimeInForce.gtc
        )
        with pytest.raises(errors.Rejected, match="GTC/GTD Market orders are not supported"):
            await run.adapter().place_order(run.account.number, request)


async def test_an_unknown_symbol_on_placement_is_rejected() -> None:
    async with running_fake() as run:
        request = OrderRequest(
            "bg-u", "NOSUCH", OrderSide.buy, Decimal(1), OrderType.market, TimeInForce.day
        )
        with pytest.raises(errors.Rejected, match="NOSUCH"):
            await run.adapter().place_order(run.account.number, request)


async def test_an_unknown_order_is_order_not_found() -> None:
    async with running_fake() as run:
        with pytest.raises(errors.OrderNotFound):
            await run.adapter().get_order(run.account.number, "999999999")


async def test_an_unknown_status_is_an_unknown_broker_value() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        placed = await adapter.place_order(run.account.number, limit_buy("bg-odd"))
        run.fake.set_status(placed.broker_order_id, "Teleported")
        with pytest.raises(errors.UnknownBrokerValue, match="Teleported"):
            await adapter.get_order(run.account.number, placed.broker_order_id)


async def test_another_customers_account_is_forbidden() -> None:
    async with running_fake() as run:
        other = run.fake.add_customer()
        with pytest.raises(errors.AuthenticationFailed, match="not permitted"):
            await run.adapter().get_balances(other.accounts[0].number)


# --- credentials and tokens ---------------------------------------------------------------


async def test_a_wrong_secret_is_authentication_failed() -> None:
    async with running_fake() as run:
        wrong = Credentials(client_secret="wrong", refresh_token=run.customer.refresh_token)
        adapter = run.track(TastytradeAdapter(run.settings(), wrong))
        with pytest.raises(errors.AuthenticationFailed, match="refused the refresh token"):
            await adapter.list_accounts()


async def test_one_token_serves_many_calls_and_adapters_on_a_pool() -> None:
    async with running_fake() as run:
        pool = HttpPool()
        try:
            for _ in range(3):
                adapter = TastytradeAdapter(run.settings(), run.credentials(), pool)
                await adapter.get_balances(run.account.number)
            assert run.fake.token_requests == 1
        finally:
            await pool.aclose()


async def test_an_expired_token_is_refreshed_transparently_even_for_a_write() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        await adapter.get_balances(number)
        run.fake.expire_tokens()
        placed = await adapter.place_order(number, limit_buy("bg-after-expiry"))
        assert placed.client_order_id == "bg-after-expiry"
        assert run.fake.token_requests == 2
        assert run.fake.order_count(number) == 1
        assert run.fake.requests.count(("POST", f"/accounts/{number}/orders")) == 2  # 401, then ok


async def test_a_revoked_grant_is_authentication_failed_for_reads_and_writes() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        await adapter.get_balances(number)
        run.fake.revoke(run.customer)
        with pytest.raises(errors.AuthenticationFailed):
            await adapter.get_balances(number)
        with pytest.raises(errors.AuthenticationFailed):
            await adapter.place_order(number, limit_buy("bg-rev"))
        assert run.fake.order_count(number) == 0


async def test_a_forbidden_call_is_authentication_failed_without_a_token_retry() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        run.fake.faults.forbidden = 1
        with pytest.raises(errors.AuthenticationFailed, match="not permitted"):
            await adapter.get_balances(run.account.number)
        assert run.fake.token_requests == 1


async def test_a_missing_user_agent_is_refused_by_the_fake() -> None:
    import httpx

    async with running_fake() as run, httpx.AsyncClient(base_url=run.url) as client:
        answer = await client.post(
            "/oauth/token", json={}, headers={"User-Agent": "no-version-here"}
        )
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "unauthorized"


# --- transport faults -> the error tree -----------------------------------------------------


async def test_5xx_on_a_read_is_retried_then_transient() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        await adapter.get_balances(number)
        run.fake.faults.server_errors = 1
        assert (await adapter.get_balances(number)).cash == Decimal("100000.00")  # retried
        run.fake.faults.server_errors = 10
        with pytest.raises(errors.Transient) as caught:
            await adapter.get_balances(number)
        assert not isinstance(caught.value, errors.RateLimitExceeded)
        assert run.fake.requests.count(("GET", f"/accounts/{number}/balances")) == 1 + 2 + 3


async def test_5xx_on_a_write_is_outcome_unknown_and_not_retried() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        await adapter.get_balances(number)
        run.fake.faults.server_errors = 1
        run.fake.faults.server_error_status = 503
        with pytest.raises(errors.OutcomeUnknown):
            await adapter.place_order(number, limit_buy("bg-5xx"))
        assert run.fake.requests.count(("POST", f"/accounts/{number}/orders")) == 1


async def test_a_token_endpoint_failure_is_transient_even_for_a_write() -> None:
    async with running_fake() as run:
        run.fake.faults.server_errors = 1
        with pytest.raises(errors.Transient):
            await run.adapter().place_order(run.account.number, limit_buy("bg-no-token"))
        assert run.fake.order_count(run.account.number) == 0


async def test_429_is_rate_limit_exceeded_with_or_without_retry_after() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        await adapter.get_balances(number)
        run.fake.faults.rate_limited = 1
        run.fake.faults.retry_after = 7
        with pytest.raises(errors.RateLimitExceeded) as caught:
            await adapter.place_order(number, limit_buy("bg-429"))
        assert caught.value.retry_after == 7
        assert run.fake.order_count(number) == 0
        run.fake.faults.rate_limited = 1
        run.fake.faults.retry_after = None  # tastytrade's documented 429 has no headers
        with pytest.raises(errors.RateLimitExceeded) as bare:
            await adapter.place_order(number, limit_buy("bg-429b"))
        assert bare.value.retry_after is None


async def test_a_short_retry_after_on_a_read_is_waited_out() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        await adapter.get_balances(number)
        run.fake.faults.rate_limited = 1
        run.fake.faults.retry_after = 0
        assert await adapter.get_positions(number) == []
        assert run.fake.requests.count(("GET", f"/accounts/{number}/positions")) == 2


async def test_a_timeout_after_accept_is_outcome_unknown_and_the_order_exists_once() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        run.fake.faults.timeout_after_accept = 1
        with pytest.raises(errors.OutcomeUnknown):
            await adapter.place_order(number, limit_buy("bg-lost"))
        assert run.fake.order_count(number) == 1
        found = await adapter.find_order_by_client_id(number, "bg-lost")
        assert found is not None
        assert found.status is OrderStatus.accepted


async def test_latency_beyond_the_read_timeout() -> None:
    async with running_fake() as run:
        adapter = run.adapter(broker_read_timeout_seconds=0.2)
        number = run.account.number
        await adapter.get_balances(number)
        run.fake.faults.latency = 0.5
        with pytest.raises(errors.Transient):
            await adapter.get_balances(number)
        with pytest.raises(errors.OutcomeUnknown):
            await adapter.cancel_order(number, "270561")
        run.fake.faults.latency = 0.05
        assert (await adapter.get_balances(number)).currency == "USD"


async def test_an_unreachable_broker_is_transient_even_for_a_write() -> None:
    async with running_fake() as run:
        closed_url = run.url  # the fake stops below; its port then refuses connections
        settings = run.settings()
    adapter = TastytradeAdapter(
        settings.model_copy(update={"tastytrade_base_url": closed_url}), run.credentials()
    )
    try:
        with pytest.raises(errors.Transient):
            await adapter.place_order("5WT00001", limit_buy("bg-refused"))
        with pytest.raises(errors.Transient):
            await adapter.get_balances("5WT00001")
    finally:
        await adapter.close()
