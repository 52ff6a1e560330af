"""The Alpaca adapter against the fake over real HTTP: every result and every error path."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.brokers import errors
from app.brokers.alpaca.adapter import AlpacaAdapter
from app.brokers.base import (
    BrokerAdapter,
    OrderChanges,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    TimeInForce,
)
from app.security.credentials import Credentials
from tests.brokers.alpaca.support import running_fake
from tests.brokers.support import limit_buy, market


async def test_it_is_a_broker_adapter() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        assert isinstance(adapter, BrokerAdapter)
        assert "secret" not in repr(adapter).lower()
        assert run.account.secret not in repr(adapter)


async def test_account_balances_positions_and_transactions() -> None:
    async with running_fake(cash="50000") as run:
        adapter = run.adapter()
        [account] = await adapter.list_accounts()
        assert account.broker_account_id == run.account.id
        assert account.number_masked.endswith(run.account.account_number[-4:])
        balances = await adapter.get_balances(account.broker_account_id)
        assert balances.cash == Decimal("50000.00")
        assert balances.buying_power == Decimal("50000.00")
        assert balances.as_of.tzinfo is not None

        placed = await adapter.place_order(run.account.id, market("bg-m-1", qty="3"))
        assert placed.status is OrderStatus.accepted
        assert await run.fake.match() == 1
        filled = await adapter.get_order(run.account.id, placed.broker_order_id)
        assert filled.status is OrderStatus.filled
        assert filled.filled_quantity == Decimal(3)
        assert isinstance(filled.avg_fill_price, Decimal)

        [position] = await adapter.get_positions(run.account.id)
        assert (position.symbol, position.quantity) == ("AAPL", Decimal(3))
        one = await adapter.get_position(run.account.id, "AAPL")
        assert one is not None
        assert (one.symbol, one.quantity, one.avg_cost) == ("AAPL", Decimal(3), position.avg_cost)
        assert await adapter.get_position(run.account.id, "MSFT") is None

        transactions = await adapter.get_transactions(run.account.id, None, None, None)
        kinds = [t.type for t in transactions]
        assert kinds == ["buy", "deposit"]
        assert transactions[0].amount == -(Decimal(3) * filled.avg_fill_price)
        deposits = await adapter.get_transactions(run.account.id, None, None, "deposit")
        assert [t.amount for t in deposits] == [Decimal("50000.00")]


async def test_quotes_come_from_the_data_host_as_decimals() -> None:
    async with running_fake() as run:
        quotes = await run.adapter().get_quotes(["AAPL", "MSFT", "NOPE"])
        assert set(quotes) == {"AAPL", "MSFT"}
        quote = quotes["AAPL"]
        assert isinstance(quote.bid, Decimal)
        assert quote.bid < quote.ask
        assert ("GET", "/v2/stocks/quotes/latest") in run.fake.requests


async def test_place_uses_our_client_order_id_and_lookup_finds_it() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        placed = await adapter.place_order(run.account.id, limit_buy("bg-client-1"))
        assert placed.client_order_id == "bg-client-1"
        assert placed.limit_price == Decimal(100)
        found = await adapter.find_order_by_client_id(run.account.id, "bg-client-1")
        assert found is not None
        assert found.broker_order_id == placed.broker_order_id
        assert await adapter.find_order_by_client_id(run.account.id, "bg-nothing") is None


async def test_a_reused_client_order_id_answers_the_existing_order() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        first = await adapter.place_order(run.account.id, limit_buy("bg-dup"))
        again = await adapter.place_order(run.account.id, limit_buy("bg-dup"))
        assert again.broker_order_id == first.broker_order_id
        assert run.fake.order_count(run.account.key_id) == 1


async def test_replace_creates_a_new_order_id() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        placed = await adapter.place_order(run.account.id, limit_buy("bg-r-1"))
        replaced = await adapter.modify_order(
            run.account.id, placed.broker_order_id, OrderChanges(limit_price=Decimal("101.50"))
        )
        assert replaced.broker_order_id != placed.broker_order_id
        assert replaced.replaces == placed.broker_order_id
        assert replaced.limit_price == Decimal("101.50")
        assert replaced.client_order_id == f"bgr-{placed.broker_order_id}"
        again = await adapter.find_order_by_client_id("a", f"bgr-{placed.broker_order_id}")
        assert again is not None
        assert again.broker_order_id == replaced.broker_order_id
        # A quantity change alone still sends the limit price the spec requires.
        resized = await adapter.modify_order(
            run.account.id, replaced.broker_order_id, OrderChanges(quantity=Decimal(5))
        )
        assert (resized.quantity, resized.limit_price) == (Decimal(5), Decimal("101.50"))
        old = await adapter.get_order(run.account.id, placed.broker_order_id)
        assert old.status is OrderStatus.replaced
        assert old.replaced_by == replaced.broker_order_id
        with pytest.raises(errors.OrderNotModifiable):
            await adapter.modify_order(
                run.account.id, placed.broker_order_id, OrderChanges(quantity=Decimal(5))
            )


async def test_cancel_answers_the_final_state_and_refuses_a_closed_order() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        placed = await adapter.place_order(run.account.id, limit_buy("bg-c-1"))
        canceled = await adapter.cancel_order(run.account.id, placed.broker_order_id)
        assert canceled.status is OrderStatus.canceled
        assert ("DELETE", f"/v2/orders/{placed.broker_order_id}") in run.fake.requests
        with pytest.raises(errors.OrderNotModifiable):
            await adapter.cancel_order(run.account.id, placed.broker_order_id)


async def test_list_and_history() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        resting = await adapter.place_order(run.account.id, limit_buy("bg-l-1"))
        done = await adapter.place_order(run.account.id, limit_buy("bg-l-2"))
        await adapter.cancel_order(run.account.id, done.broker_order_id)
        open_ids = [o.broker_order_id for o in await adapter.list_orders("a", "open", 10)]
        closed_ids = [o.broker_order_id for o in await adapter.list_orders("a", "closed", 10)]
        assert open_ids == [resting.broker_order_id]
        assert closed_ids == [done.broker_order_id]
        history = await adapter.order_history(
            "a", resting.created_at.replace(year=2020), None, "AAPL"
        )
        assert {o.broker_order_id for o in history} == {
            resting.broker_order_id,
            done.broker_order_id,
        }
        assert await adapter.order_history("a", None, None, "MSFT") == []


async def test_check_symbol_remembers_tradable_assets_only() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        await adapter.check_symbol("AAPL")
        await adapter.check_symbol("AAPL")
        assert run.fake.requests.count(("GET", "/v2/assets/AAPL")) == 1
        for _ in range(2):
            with pytest.raises(errors.UnknownSymbol):
                await adapter.check_symbol("NOSUCH")
        assert run.fake.requests.count(("GET", "/v2/assets/NOSUCH")) == 2


# --- rejections ----------------------------------------------------------------------------


async def test_insufficient_buying_power_is_insufficient_funds() -> None:
    async with running_fake(cash="100") as run:
        with pytest.raises(errors.InsufficientFunds, match="insufficient buying power"):
            await run.adapter().place_order(run.account.id, market("bg-poor"))
        assert run.fake.order_count(run.account.key_id) == 0


async def test_selling_shares_not_held_is_insufficient_funds() -> None:
    async with running_fake() as run:
        with pytest.raises(errors.InsufficientFunds, match="insufficient qty"):
            await run.adapter().place_order(run.account.id, market("bg-s", side=OrderSide.sell))


async def test_an_unknown_symbol_on_placement_is_unknown_symbol() -> None:
    async with running_fake() as run:
        request = OrderRequest(
            "bg-u", "NOSUCH", OrderSide.buy, Decimal(1), OrderType.market, TimeInForce.day
        )
        with pytest.raises(errors.UnknownSymbol):
            await run.adapter().place_order(run.account.id, request)


async def test_an_unknown_order_is_order_not_found() -> None:
    async with running_fake() as run:
        with pytest.raises(errors.OrderNotFound):
            await run.adapter().get_order("a", "6f1b9c8e-0000-4000-8000-000000000000")


async def test_an_unknown_status_is_an_unknown_broker_value() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        placed = await adapter.place_order(run.account.id, limit_buy("bg-odd"))
        run.fake.set_status(placed.broker_order_id, "teleported")
        with pytest.raises(errors.UnknownBrokerValue, match="teleported"):
            await adapter.get_order(run.account.id, placed.broker_order_id)


# --- fault switches -> the error tree -------------------------------------------------------


async def test_a_bad_key_is_authentication_failed() -> None:
    async with running_fake() as run:
        wrong = Credentials(api_key_id=run.account.key_id, api_secret_key="wrong-secret")
        adapter = run.track(AlpacaAdapter(run.settings(), wrong))
        with pytest.raises(errors.AuthenticationFailed, match="not authorized"):
            await adapter.list_accounts()


async def test_a_revoked_key_is_authentication_failed_for_reads_and_writes() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        run.fake.revoke(run.account.key_id)
        with pytest.raises(errors.AuthenticationFailed):
            await adapter.get_balances("a")
        with pytest.raises(errors.AuthenticationFailed):
            await adapter.place_order("a", limit_buy("bg-rev"))


async def test_5xx_on_a_read_is_retried_then_transient() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        run.fake.faults.server_errors = 1
        assert (await adapter.get_balances("a")).cash == Decimal("100000.00")  # retried
        run.fake.faults.server_errors = 10
        with pytest.raises(errors.Transient) as caught:
            await adapter.get_balances("a")
        assert not isinstance(caught.value, errors.RateLimitExceeded)
        assert run.fake.requests.count(("GET", "/v2/account")) == 1 + 1 + 3


async def test_5xx_on_a_write_is_outcome_unknown_and_not_retried() -> None:
    async with running_fake() as run:
        run.fake.faults.server_errors = 1
        run.fake.faults.server_error_status = 503
        with pytest.raises(errors.OutcomeUnknown):
            await run.adapter().place_order(run.account.id, limit_buy("bg-5xx"))
        assert run.fake.requests.count(("POST", "/v2/orders")) == 1


async def test_429_is_rate_limit_exceeded_with_retry_after() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        run.fake.faults.rate_limited = 1
        run.fake.faults.retry_after = 7
        with pytest.raises(errors.RateLimitExceeded) as caught:
            await adapter.place_order(run.account.id, limit_buy("bg-429"))
        assert caught.value.retry_after == 7
        assert run.fake.order_count(run.account.key_id) == 0
        # A long Retry-After on a read is not waited out: raised at once, not retried.
        run.fake.faults.rate_limited = 1
        with pytest.raises(errors.RateLimitExceeded):
            await adapter.get_positions("a")
        assert run.fake.requests.count(("GET", "/v2/positions")) == 1


async def test_a_short_retry_after_on_a_read_is_waited_out() -> None:
    async with running_fake() as run:
        run.fake.faults.rate_limited = 1
        run.fake.faults.retry_after = 0
        assert await run.adapter().get_positions("a") == []
        assert run.fake.requests.count(("GET", "/v2/positions")) == 2


async def test_a_timeout_after_accept_is_outcome_unknown_and_the_order_exists_once() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        run.fake.faults.timeout_after_accept = 1
        with pytest.raises(errors.OutcomeUnknown):
            await adapter.place_order(run.account.id, limit_buy("bg-lost"))
        assert run.fake.order_count(run.account.key_id) == 1
        found = await adapter.find_order_by_client_id(run.account.id, "bg-lost")
        assert found is not None
        assert found.status is OrderStatus.accepted


async def test_latency_beyond_the_read_timeout() -> None:
    async with running_fake() as run:
        adapter = run.adapter(broker_read_timeout_seconds=0.2)
        run.fake.faults.latency = 0.5
        with pytest.raises(errors.Transient):
            await adapter.get_balances("a")
        with pytest.raises(errors.OutcomeUnknown):
            await adapter.cancel_order("a", "6f1b9c8e-0000-4000-8000-000000000000")
        run.fake.faults.latency = 0.05
        assert (await adapter.get_balances("a")).currency == "USD"


async def test_an_unreachable_broker_is_transient_even_for_a_write() -> None:
    async with running_fake() as run:
        closed_url = run.url  # the fake stops below; its port then refuses connections
    adapter = AlpacaAdapter(run.settings(alpaca_trading_url=closed_url), run.credentials())
    with pytest.raises(errors.Transient):
        await adapter.place_order("a", limit_buy("bg-refused"))
    with pytest.raises(errors.Transient):
        await adapter.get_balances("a")
    await adapter.close()


async def test_a_cancel_whose_result_cannot_be_read_is_outcome_unknown() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        placed = await adapter.place_order(run.account.id, limit_buy("bg-c-lost"))
        run.fake.faults.server_errors = 3
        run.fake.faults.server_errors_method = "GET"
        with pytest.raises(errors.OutcomeUnknown, match="cancel was accepted"):
            await adapter.cancel_order(run.account.id, placed.broker_order_id)
        run.fake.faults.server_errors_method = None
        assert (await adapter.get_order("a", placed.broker_order_id)).status is OrderStatus.canceled


async def test_a_duplicate_whose_order_cannot_be_read_is_outcome_unknown() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        await adapter.place_order(run.account.id, limit_buy("bg-dup-lost"))
        run.fake.faults.server_errors = 3
        run.fake.faults.server_errors_method = "GET"
        with pytest.raises(errors.OutcomeUnknown, match="could not be read"):
            await adapter.place_order(run.account.id, limit_buy("bg-dup-lost"))
        assert run.fake.order_count(run.account.key_id) == 1
