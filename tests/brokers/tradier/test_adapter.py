"""The Tradier adapter against the fake over real HTTP: every result and every error path."""

from __future__ import annotations

import logging
from decimal import Decimal

import httpx
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
from app.brokers.tradier.adapter import TradierAdapter
from app.security.credentials import Credentials
from tests.brokers.support import limit_buy, market
from tests.brokers.tradier.support import running_fake


async def test_it_is_a_broker_adapter_that_hides_its_token() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        assert isinstance(adapter, BrokerAdapter)
        assert run.user.token not in repr(adapter)


async def test_every_request_is_json_and_form_encoded(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_fake() as run:
        adapter = run.adapter()
        await adapter.list_accounts()
        await adapter.place_order(run.account.number, limit_buy("bg-form-1"))
        for recorded in run.fake.recorded:
            assert recorded.headers["accept"] == "application/json"
            assert recorded.headers["authorization"] == f"Bearer {run.user.token}"
        [post] = [r for r in run.fake.recorded if r.method == "POST"]
        assert post.headers["content-type"] == "application/x-www-form-urlencoded"
        assert post.form["tag"] == "bg-form-1"
        assert run.user.token not in caplog.text


async def test_without_accept_json_the_fake_answers_xml_like_tradier() -> None:
    async with running_fake() as run:
        async with httpx.AsyncClient(base_url=run.url) as http:
            answer = await http.get(
                "/v1/user/profile", headers={"Authorization": f"Bearer {run.user.token}"}
            )
        assert answer.headers["content-type"].startswith("application/xml")
        assert answer.text.startswith('<?xml version="1.0" encoding="UTF-8"?><profile>')


async def test_accounts_balances_positions_and_transactions() -> None:
    async with running_fake(cash="50000", accounts=2) as run:
        adapter = run.adapter()
        accounts = await adapter.list_accounts()
        assert [a.broker_account_id for a in accounts] == [a.number for a in run.user.accounts]
        number = run.account.number
        balances = await adapter.get_balances(number)
        assert (balances.cash, balances.buying_power) == (Decimal(50000), Decimal(50000))
        assert await adapter.get_positions(number) == []  # {"positions": "null"}

        placed = await adapter.place_order(number, market("bg-m-1", qty="3"))
        assert placed.status is OrderStatus.submitted  # first seen "pending", as at the sandbox
        assert await run.fake.match() == 1
        filled = await adapter.get_order(number, placed.broker_order_id)
        assert filled.status is OrderStatus.filled
        assert filled.filled_quantity == Decimal(3)
        assert isinstance(filled.avg_fill_price, Decimal)

        [position] = await adapter.get_positions(number)  # a single object on the wire
        assert (position.symbol, position.quantity) == ("AAPL", Decimal(3))
        one = await adapter.get_position(number, "AAPL")
        assert one is not None
        assert one.avg_cost == position.avg_cost
        assert await adapter.get_position(number, "MSFT") is None

        transactions = await adapter.get_transactions(number, None, None, None)
        assert [t.type for t in transactions] == ["buy", "deposit"]
        assert transactions[0].amount == -(Decimal(3) * filled.avg_fill_price)
        deposits = await adapter.get_transactions(number, None, None, "deposit")
        assert [t.amount for t in deposits] == [Decimal(50000)]
        other = run.user.accounts[1].number
        assert (await adapter.get_balances(other)).cash == Decimal(50000)


async def test_quotes_and_symbols() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        quotes = await adapter.get_quotes(["AAPL", "MSFT", "NOPE"])
        assert set(quotes) == {"AAPL", "MSFT"}
        assert quotes["AAPL"].bid < quotes["AAPL"].ask
        await adapter.check_symbol("AAPL")
        await adapter.check_symbol("AAPL")
        assert run.fake.requests.count(("GET", "/v1/markets/quotes")) == 2  # 1 + the remembered
        for _ in range(2):
            with pytest.raises(errors.UnknownSymbol):
                await adapter.check_symbol("NOSUCH")
        assert run.fake.requests.count(("GET", "/v1/markets/quotes")) == 4


async def test_place_uses_our_client_order_id_as_the_tag() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        placed = await adapter.place_order(number, limit_buy("bgclient1"))
        assert placed.client_order_id == "bgclient1"
        assert placed.limit_price == Decimal(100)
        found = await adapter.find_order_by_client_id(number, "bgclient1")
        assert found is not None
        assert found.broker_order_id == placed.broker_order_id
        assert await adapter.find_order_by_client_id(number, "bgnothing") is None
        odd = await adapter.place_order(number, limit_buy("bg_under_score"))
        assert odd.client_order_id == "bg_under_score"
        assert run.fake.recorded[-2].form["tag"].startswith("x-")


async def test_modify_keeps_the_id_and_refuses_a_size_change() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        placed = await adapter.place_order(number, limit_buy("bg-r-1"))
        changed = await adapter.modify_order(
            number,
            placed.broker_order_id,
            OrderChanges(limit_price=Decimal("101.50"), time_in_force=TimeInForce.day),
        )
        assert changed.broker_order_id == placed.broker_order_id
        assert (changed.limit_price, changed.time_in_force) == (Decimal("101.5"), TimeInForce.day)
        with pytest.raises(errors.UnsupportedOrder):
            await adapter.modify_order(
                number, placed.broker_order_id, OrderChanges(quantity=Decimal(5))
            )
        await adapter.cancel_order(number, placed.broker_order_id)
        with pytest.raises(errors.OrderNotModifiable):
            await adapter.modify_order(
                number, placed.broker_order_id, OrderChanges(limit_price=Decimal(99))
            )


async def test_cancel_answers_the_final_state_and_refuses_a_closed_order() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        placed = await adapter.place_order(number, limit_buy("bg-c-1"))
        canceled = await adapter.cancel_order(number, placed.broker_order_id)
        assert canceled.status is OrderStatus.canceled
        assert ("DELETE", f"/v1/accounts/{number}/orders/{placed.broker_order_id}") in (
            run.fake.requests
        )
        with pytest.raises(errors.OrderNotModifiable, match="finalized"):
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
        assert open_ids == [resting.broker_order_id]
        assert closed_ids == [done.broker_order_id]
        history = await adapter.order_history(
            number, resting.created_at.replace(year=2020), None, "AAPL"
        )
        assert {o.broker_order_id for o in history} == {
            resting.broker_order_id,
            done.broker_order_id,
        }
        assert await adapter.order_history(number, None, None, "MSFT") == []


async def test_listing_pages_through_more_than_one_page() -> None:
    async with running_fake(cash="10000000") as run:
        # Well past the published limits, so the pacer does not slow the set-up down.
        adapter = run.adapter(tradier_trading_per_minute=6000, tradier_standard_per_minute=6000)
        number = run.account.number
        for i in range(101):
            await adapter.place_order(number, limit_buy(f"bg-p-{i}", qty="1", price="1"))
        orders = await adapter.list_orders(number, "open", 500)
        assert len(orders) == 101
        pages = [r.query.get("page") for r in run.fake.recorded if r.query.get("limit") == "100"]
        assert pages[-2:] == ["1", "2"]
        found = await adapter.find_order_by_client_id(number, "bg-p-100")
        assert found is not None


# --- refusals --------------------------------------------------------------------------------


async def test_beyond_the_buying_power_is_insufficient_funds_from_a_200() -> None:
    async with running_fake(cash="100") as run:
        with pytest.raises(errors.InsufficientFunds, match="DayTradingBuyingPowerExceeded"):
            await run.adapter().place_order(run.account.number, market("bg-poor"))
        assert run.fake.order_count(run.account.number) == 0


async def test_selling_shares_not_held_is_insufficient_funds() -> None:
    async with running_fake() as run:
        with pytest.raises(errors.InsufficientFunds, match="UnexpectedSellOrder"):
            await run.adapter().place_order(run.account.number, market("bg-s", side=OrderSide.sell))


async def test_an_unknown_symbol_on_placement_is_unknown_symbol() -> None:
    async with running_fake() as run:
        request = OrderRequest(
            "bg-u", "NOSUCH", OrderSide.buy, Decimal(1), OrderType.market, TimeInForce.day
        )
        with pytest.raises(errors.UnknownSymbol, match="Undefined symbol"):
            await run.adapter().place_order(run.account.number, request)


async def test_a_market_gtc_order_is_unsupported() -> None:
    async with running_fake() as run:
        request = OrderRequest(
            "bg-g", "AAPL", OrderSide.buy, Decimal(1), OrderType.market, TimeInForce.gtc
        )
        with pytest.raises(errors.UnsupportedOrder, match="MarketOrderIsGtc"):
            await run.adapter().place_order(run.account.number, request)


async def test_an_unknown_order_is_order_not_found_not_a_broken_token() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        with pytest.raises(errors.OrderNotFound, match="Unauthorized Account"):
            await adapter.get_order(number, "999999")
        with pytest.raises(errors.OrderNotFound):
            await adapter.cancel_order(number, "6f1b9c8e-0000-4000-8000-000000000000")


async def test_an_account_the_token_does_not_have_is_refused_not_a_dead_token() -> None:
    """401 ``Unauthorized Account: <n>`` in plain text: that account is not this token's; the
    token itself works (a dead one is the gateway's JSON fault), so the connection is not
    failed over it."""
    async with running_fake() as run:
        adapter = run.adapter()
        with pytest.raises(errors.Rejected, match="Unauthorized Account") as caught:
            await adapter.get_balances("VA99999999")
        assert not isinstance(caught.value, errors.AuthenticationFailed)
        assert (await adapter.get_balances(run.account.number)).cash == Decimal(100000)


async def test_an_unknown_status_is_an_unknown_broker_value() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        placed = await adapter.place_order(run.account.number, limit_buy("bg-odd"))
        run.fake.set_status(placed.broker_order_id, "teleported")
        with pytest.raises(errors.UnknownBrokerValue, match="teleported"):
            await adapter.get_order(run.account.number, placed.broker_order_id)


# --- fault switches -> the error tree -------------------------------------------------------


async def test_a_bad_token_is_authentication_failed() -> None:
    async with running_fake() as run:
        wrong = Credentials(access_token="not-a-token")
        adapter = run.track(TradierAdapter(run.settings(), wrong))
        with pytest.raises(errors.AuthenticationFailed, match="Invalid Access Token"):
            await adapter.list_accounts()


async def test_revoked_and_expired_tokens_are_authentication_failed() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        run.fake.expire(run.user.token)
        with pytest.raises(errors.AuthenticationFailed, match="expired"):
            await adapter.get_balances(run.account.number)
        run.fake.users[run.user.token].expired = False
        run.fake.revoke(run.user.token)
        with pytest.raises(errors.AuthenticationFailed):
            await adapter.place_order(run.account.number, limit_buy("bg-rev"))


async def test_5xx_on_a_read_is_retried_then_transient() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        path = ("GET", f"/v1/accounts/{run.account.number}/balances")
        run.fake.faults.server_errors = 1
        assert (await adapter.get_balances(run.account.number)).cash == Decimal(100000)
        run.fake.faults.server_errors = 10
        with pytest.raises(errors.Transient) as caught:
            await adapter.get_balances(run.account.number)
        assert not isinstance(caught.value, errors.RateLimitExceeded)
        assert run.fake.requests.count(path) == 2 + 3


async def test_5xx_on_a_write_is_outcome_unknown_and_not_retried() -> None:
    async with running_fake() as run:
        run.fake.faults.server_errors = 1
        run.fake.faults.server_error_status = 503
        with pytest.raises(errors.OutcomeUnknown):
            await run.adapter().place_order(run.account.number, limit_buy("bg-5xx"))
        assert run.fake.requests.count(("POST", f"/v1/accounts/{run.account.number}/orders")) == 1


async def test_429_is_rate_limit_exceeded_with_retry_after() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        run.fake.faults.rate_limited = 1
        with pytest.raises(errors.RateLimitExceeded) as caught:
            await adapter.place_order(run.account.number, limit_buy("bg-429"))
        assert caught.value.retry_after == 7
        assert run.fake.order_count(run.account.number) == 0
        run.fake.faults.rate_limited = 1
        with pytest.raises(errors.RateLimitExceeded):
            await adapter.get_positions(run.account.number)  # 7 s is not waited out
        run.fake.faults.rate_limited = 1
        run.fake.faults.retry_after = 0
        assert await adapter.get_positions(run.account.number) == []  # 0 s is


async def test_the_rate_buckets_follow_the_published_limits() -> None:
    async with running_fake() as run:
        adapter = run.adapter(tradier_trading_per_minute=1)
        await adapter.place_order(run.account.number, limit_buy("bg-b-1"))
        with pytest.raises(errors.RateLimitExceeded):
            await adapter.place_order(run.account.number, limit_buy("bg-b-2"))
        assert run.fake.order_count(run.account.number) == 1  # refused before sending
        await adapter.get_balances(run.account.number)  # another bucket


async def test_a_timeout_after_accept_is_outcome_unknown_and_the_order_exists_once() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        run.fake.faults.timeout_after_accept = 1
        with pytest.raises(errors.OutcomeUnknown):
            await adapter.place_order(run.account.number, limit_buy("bg-lost"))
        assert run.fake.order_count(run.account.number) == 1
        found = await adapter.find_order_by_client_id(run.account.number, "bg-lost")
        assert found is not None
        assert found.status is OrderStatus.submitted  # still "pending" at Tradier


async def test_latency_beyond_the_read_timeout() -> None:
    async with running_fake() as run:
        adapter = run.adapter(broker_read_timeout_seconds=0.2)
        run.fake.faults.latency = 0.5
        with pytest.raises(errors.Transient):
            await adapter.get_balances(run.account.number)
        with pytest.raises(errors.OutcomeUnknown):
            await adapter.cancel_order(run.account.number, "228175")
        run.fake.faults.latency = 0.05
        assert (await adapter.get_balances(run.account.number)).currency == "USD"


async def test_an_unreachable_broker_is_transient_even_for_a_write() -> None:
    async with running_fake() as run:
        closed_url = run.url
    adapter = TradierAdapter(run.settings(tradier_base_url=closed_url), run.credentials())
    with pytest.raises(errors.Transient):
        await adapter.place_order("VA1", limit_buy("bg-refused"))
    with pytest.raises(errors.Transient):
        await adapter.get_balances("VA1")
    await adapter.close()


async def test_a_cancel_whose_result_cannot_be_read_is_outcome_unknown() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        placed = await adapter.place_order(number, limit_buy("bg-c-lost"))
        run.fake.faults.server_errors = 3
        run.fake.faults.server_errors_method = "GET"
        with pytest.raises(errors.OutcomeUnknown, match="cancel was accepted"):
            await adapter.cancel_order(number, placed.broker_order_id)
        run.fake.faults.server_errors_method = None
        assert (await adapter.get_order(number, placed.broker_order_id)).status is (
            OrderStatus.canceled
        )


async def test_a_placement_whose_order_cannot_be_read_back_is_submitted() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        run.fake.faults.server_errors = 3
        run.fake.faults.server_errors_method = "GET"
        placed = await adapter.place_order(run.account.number, limit_buy("bg-readback"))
        assert placed.status is OrderStatus.submitted
        assert placed.client_order_id == "bg-readback"
        assert run.fake.order_count(run.account.number) == 1
