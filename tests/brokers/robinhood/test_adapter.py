"""The Robinhood adapter against the fake over real HTTP: signatures, faults, idempotency."""

from __future__ import annotations

import base64
import time
import uuid
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.brokers import errors
from app.brokers.base import OrderRequest, OrderSide, OrderStatus, OrderType, TimeInForce
from app.brokers.robinhood.adapter import RobinhoodAdapter
from app.security.credentials import Credentials
from tests.brokers.robinhood.support import running_fake


def limit_buy(client_order_id: str | None = None, qty: str = "0.1") -> OrderRequest:
    return OrderRequest(
        client_order_id=client_order_id or "bg" + uuid.uuid4().hex,
        symbol="BTC-USD",
        side=OrderSide.buy,
        quantity=Decimal(qty),
        order_type=OrderType.limit,
        time_in_force=TimeInForce.gtc,
        limit_price=Decimal("1.00"),
    )


async def test_every_request_is_signed_and_verified_by_the_fake() -> None:
    async with running_fake() as rh:
        adapter = rh.adapter()
        [account] = await adapter.list_accounts()
        assert account.broker_account_id == rh.account.account_number
        placed = await adapter.place_order(account.broker_account_id, limit_buy())
        assert placed.status is OrderStatus.accepted
        assert ("POST", "/api/v1/crypto/trading/orders/") in rh.fake.requests
        # A key that is not the registered one signs validly but wrongly: refused.
        impostor = Credentials(
            api_key=rh.account.api_key,
            private_key=base64.b64encode(Ed25519PrivateKey.generate().private_bytes_raw()).decode(),
        )
        wrong = RobinhoodAdapter(rh.settings(), impostor)
        rh.adapters.append(wrong)
        with pytest.raises(errors.AuthenticationFailed, match="signature"):
            await wrong.list_accounts()


async def test_a_stale_timestamp_is_refused() -> None:
    async with running_fake() as rh:
        rh.fake.unix_clock = lambda: time.time() + 120  # the fake's clock is ahead
        with pytest.raises(errors.AuthenticationFailed, match="expired"):
            await rh.adapter().list_accounts()


async def test_a_revoked_key_is_an_authentication_failure() -> None:
    async with running_fake() as rh:
        rh.fake.revoke(rh.account.api_key)
        with pytest.raises(errors.AuthenticationFailed):
            await rh.adapter().get_balances(rh.account.account_number)


async def test_server_errors_on_reads_are_retried_then_transient() -> None:
    async with running_fake() as rh:
        adapter = rh.adapter()
        rh.fake.faults.server_errors = 1
        assert await adapter.list_accounts()  # one 500, then the retry succeeds
        rh.fake.faults.server_errors = 10
        with pytest.raises(errors.Transient):
            await adapter.list_accounts()


async def test_a_5xx_on_placement_is_outcome_unknown() -> None:
    async with running_fake() as rh:
        rh.fake.faults.server_errors = 1
        rh.fake.faults.server_errors_method = "POST"
        with pytest.raises(errors.OutcomeUnknown):
            await rh.adapter().place_order(rh.account.account_number, limit_buy())


async def test_429_is_rate_limited_with_retry_after() -> None:
    async with running_fake() as rh:
        rh.fake.faults.rate_limited = 1
        with pytest.raises(errors.RateLimitExceeded) as caught:
            await rh.adapter().place_order(rh.account.account_number, limit_buy())
        assert caught.value.retry_after == 7
        assert rh.fake.order_count(rh.account.api_key) == 0


async def test_a_timeout_after_accept_is_unknown_and_found_by_client_order_id_once() -> None:
    async with running_fake() as rh:
        adapter = rh.adapter()
        request = limit_buy()
        rh.fake.faults.timeout_after_accept = 1
        with pytest.raises(errors.OutcomeUnknown):
            await adapter.place_order(rh.account.account_number, request)
        found = await adapter.find_order_by_client_id(
            rh.account.account_number, request.client_order_id
        )
        assert found is not None
        assert found.client_order_id == request.client_order_id
        assert rh.fake.order_count(rh.account.api_key) == 1
        # Sending it again would not duplicate it either: the id is refused and adopted.
        again = await adapter.place_order(rh.account.account_number, request)
        assert again.broker_order_id == found.broker_order_id
        assert rh.fake.order_count(rh.account.api_key) == 1
        assert (
            await adapter.find_order_by_client_id(rh.account.account_number, "bg" + "f" * 32)
            is None
        )


async def test_latency_beyond_the_read_timeout_is_transient_for_reads() -> None:
    async with running_fake() as rh:
        rh.fake.faults.latency = 2.0
        with pytest.raises(errors.Transient):
            await rh.adapter().get_order(rh.account.account_number, str(uuid.uuid4()))


async def test_sell_without_holdings_and_cancel_of_a_filled_order_are_refused() -> None:
    async with running_fake() as rh:
        adapter = rh.adapter()
        ref = rh.account.account_number
        sell = OrderRequest(
            client_order_id="bg" + uuid.uuid4().hex,
            symbol="BTC-USD",
            side=OrderSide.sell,
            quantity=Decimal("0.05"),
            order_type=OrderType.market,
            time_in_force=TimeInForce.gtc,
        )
        with pytest.raises(errors.Rejected, match="Insufficient holdings"):
            await adapter.place_order(ref, sell)
        buy = OrderRequest(
            client_order_id="bg" + uuid.uuid4().hex,
            symbol="BTC-USD",
            side=OrderSide.buy,
            quantity=Decimal("0.05"),
            order_type=OrderType.market,
            time_in_force=TimeInForce.gtc,
        )
        placed = await adapter.place_order(ref, buy)
        await rh.fake.match()
        assert (await adapter.get_order(ref, placed.broker_order_id)).status is OrderStatus.filled
        with pytest.raises(errors.OrderNotModifiable):
            await adapter.cancel_order(ref, placed.broker_order_id)
        [position] = await adapter.get_positions(ref)
        assert position.quantity == Decimal("0.05")
        filled = await adapter.get_order(ref, placed.broker_order_id)
        assert position.avg_cost == filled.avg_fill_price
        sold = await adapter.place_order(ref, sell)
        await rh.fake.match()
        assert (await adapter.get_order(ref, sold.broker_order_id)).status is OrderStatus.filled
        assert await adapter.get_positions(ref) == []


async def test_an_unknown_state_from_the_broker_is_an_error() -> None:
    async with running_fake() as rh:
        adapter = rh.adapter()
        placed = await adapter.place_order(rh.account.account_number, limit_buy())
        rh.fake.set_state(placed.broker_order_id, "cancelled")
        with pytest.raises(errors.UnknownBrokerValue):
            await adapter.get_order(rh.account.account_number, placed.broker_order_id)
