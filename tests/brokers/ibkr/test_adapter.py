"""The IBKR adapter against the fake gateway over real HTTP: session, questions, pacing."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from app.brokers import errors
from app.brokers.base import (
    OrderChanges,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    TimeInForce,
)
from tests.brokers.ibkr.support import running_fake
from tests.fakes.ibkr import Question


def far_limit(client_order_id: str | None = None) -> OrderRequest:
    """A buy limit far below the market: the gateway asks its price-constraint question."""
    return OrderRequest(
        client_order_id=client_order_id or "bg" + uuid.uuid4().hex,
        symbol="AAPL",
        side=OrderSide.buy,
        quantity=Decimal(2),
        order_type=OrderType.limit,
        time_in_force=TimeInForce.gtc,
        limit_price=Decimal("1.00"),
    )


async def test_an_unconfirmed_question_rejects_the_order_and_discards_it() -> None:
    async with running_fake() as ib:
        adapter = ib.adapter()
        with pytest.raises(errors.Rejected, match="Percentage constraint") as caught:
            await adapter.place_order(ib.account.account_id, far_limit())
        assert "IBKR asked" in caught.value.reason
        assert ib.fake.order_count() == 0
        assert ("POST", f"/v1/api/iserver/reply/{ib.fake.requests[-1][1].rsplit('/', 1)[1]}") in (
            ib.fake.requests
        )


async def test_configured_questions_are_confirmed_through_a_chain() -> None:
    async with running_fake() as ib:
        ib.fake.faults.extra_questions = [Question("o354", "You are submitting without data.")]
        adapter = ib.adapter(ibkr_auto_confirm=["o163", "o354"])
        placed = await adapter.place_order(ib.account.account_id, far_limit())
        assert placed.status is OrderStatus.accepted
        assert ib.fake.order_count() == 1
        replies = [p for m, p in ib.fake.requests if "/iserver/reply/" in p]
        assert len(replies) == 2


async def test_a_logged_out_gateway_is_an_authentication_failure_until_login() -> None:
    async with running_fake() as ib:
        adapter = ib.adapter()
        assert await adapter.list_accounts()
        ib.fake.logout()
        with pytest.raises(errors.AuthenticationFailed):
            await adapter.get_order(ib.account.account_id, "1")
        with pytest.raises(errors.AuthenticationFailed, match="log in"):
            await adapter.list_accounts()
        ib.fake.login()
        assert await adapter.list_accounts()  # status and pre-flight are checked again


async def test_the_keepalive_tickles_the_session() -> None:
    async with running_fake() as ib:
        adapter = ib.adapter()
        await adapter.keepalive()
        assert ("POST", "/v1/api/tickle") in ib.fake.requests
        ib.fake.logout()
        with pytest.raises(errors.AuthenticationFailed, match="session ended"):
            await adapter.keepalive()


async def test_pacing_keeps_out_of_the_penalty_box_and_ignoring_it_lands_there() -> None:
    async with running_fake() as ib:
        paced = ib.adapter()
        ref = ib.account.account_id
        await paced.list_orders(ref, "all", 10)  # the empty first answer is asked again
        await paced.list_orders(ref, "open", 10)
        assert ib.fake.penalties == 0
        reckless = ib.adapter(ibkr_slow_endpoint_seconds=0.01)
        with pytest.raises(errors.RateLimitExceeded):
            await reckless.list_orders(ref, "all", 10)
        assert ib.fake.penalties == 1
        with pytest.raises(errors.RateLimitExceeded):  # the whole gateway is locked out
            await paced.get_balances(ref)


async def test_server_errors_and_a_lost_acknowledgement() -> None:
    async with running_fake() as ib:
        adapter = ib.adapter(ibkr_auto_confirm=["o163"])
        ref = ib.account.account_id
        ib.fake.faults.server_errors = 1
        assert await adapter.list_accounts()  # a read is retried
        ib.fake.faults.server_errors, ib.fake.faults.server_errors_method = 1, "POST"
        with pytest.raises(errors.OutcomeUnknown):
            await adapter.place_order(ref, far_limit())
        assert ib.fake.order_count() == 0

        request = far_limit()
        ib.fake.faults.timeout_after_accept = 1
        with pytest.raises(errors.OutcomeUnknown):
            await adapter.place_order(ref, request)
        found = await adapter.find_order_by_client_id(ref, request.client_order_id)
        assert found is not None
        assert found.client_order_id == request.client_order_id
        again = await adapter.place_order(ref, request)  # the cOID is refused, then adopted
        assert again.broker_order_id == found.broker_order_id
        assert ib.fake.order_count() == 1


async def test_modify_keeps_the_id_and_a_filled_order_cannot_be_cancelled() -> None:
    async with running_fake() as ib:
        adapter = ib.adapter(ibkr_auto_confirm=["o163"])
        ref = ib.account.account_id
        placed = await adapter.place_order(ref, far_limit())
        changed = await adapter.modify_order(
            ref, placed.broker_order_id, OrderChanges(quantity=Decimal(3))
        )
        assert (changed.broker_order_id, changed.quantity) == (placed.broker_order_id, 3)
        market = OrderRequest(
            client_order_id="bg" + uuid.uuid4().hex,
            symbol="AAPL",
            side=OrderSide.buy,
            quantity=Decimal(1),
            order_type=OrderType.market,
            time_in_force=TimeInForce.day,
        )
        bought = await adapter.place_order(ref, market)
        await ib.fake.match()
        assert (await adapter.get_order(ref, bought.broker_order_id)).status is OrderStatus.filled
        with pytest.raises(errors.OrderNotModifiable):
            await adapter.cancel_order(ref, bought.broker_order_id)


async def test_an_unknown_status_from_the_gateway_is_an_error() -> None:
    async with running_fake() as ib:
        adapter = ib.adapter(ibkr_auto_confirm=["o163"])
        placed = await adapter.place_order(ib.account.account_id, far_limit())
        ib.fake.set_status(int(placed.broker_order_id), "Working")
        with pytest.raises(errors.UnknownBrokerValue):
            await adapter.get_order(ib.account.account_id, placed.broker_order_id)


async def test_latency_beyond_the_read_timeout_is_transient_for_reads() -> None:
    async with running_fake() as ib:
        adapter = ib.adapter()
        assert await adapter.list_accounts()
        ib.fake.faults.latency = 2.0
        with pytest.raises(errors.Transient):
            await adapter.get_order(ib.account.account_id, "1")
