"""The Webull adapter against the fake over real HTTP: token states, signatures, faults."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

import httpx
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
from app.brokers.webull import auth
from app.brokers.webull.adapter import WebullAdapter
from tests.brokers.webull.support import running_fake


def limit_buy(client_order_id: str | None = None) -> OrderRequest:
    return OrderRequest(
        client_order_id=client_order_id or "bg" + uuid.uuid4().hex,
        symbol="AAPL",
        side=OrderSide.buy,
        quantity=Decimal(2),
        order_type=OrderType.limit,
        time_in_force=TimeInForce.day,
        limit_price=Decimal("1.00"),
    )


async def test_a_pending_token_is_refused_by_webull_until_the_user_confirms_it() -> None:
    async with running_fake() as wb:
        bare = wb.track(WebullAdapter(wb.settings(), wb.user_credentials()))
        stored = await bare.create_token()
        assert stored["token_status"] == "PENDING"
        pending = wb.track(WebullAdapter(wb.settings(), stored))
        with pytest.raises(errors.AuthenticationFailed, match="pending"):
            await pending.list_accounts()
        with pytest.raises(errors.AuthenticationFailed, match="confirm"):
            await pending.place_order(wb.account.account_id, limit_buy())
        assert ("POST", "/trading/orders/place") not in wb.fake.requests
        assert (await pending.check_token())["token_status"] == "PENDING"
        wb.fake.confirm(stored["access_token"])
        confirmed = await pending.check_token()
        assert confirmed["token_status"] == "NORMAL"
        ready = wb.track(WebullAdapter(wb.settings(), confirmed))
        [account] = await ready.list_accounts()
        assert account.broker_account_id == wb.account.account_id
        placed = await ready.place_order(account.broker_account_id, limit_buy())
        assert placed.status is OrderStatus.accepted


async def test_an_app_without_two_factor_gets_a_usable_token_at_once() -> None:
    async with running_fake(two_factor=False) as wb:
        bare = wb.track(WebullAdapter(wb.settings(), wb.user_credentials()))
        assert (await bare.create_token())["token_status"] == "NORMAL"


async def test_an_expired_token_and_a_revoked_key_are_authentication_failures() -> None:
    async with running_fake() as wb:
        adapter = await wb.adapter()
        wb.fake.expire_token(adapter._credentials[auth.ACCESS_TOKEN])
        with pytest.raises(errors.AuthenticationFailed, match="expired"):
            await adapter.get_balances(wb.account.account_id)
        wb.fake.revoke(wb.app.app_key)
        with pytest.raises(errors.AuthenticationFailed):
            await adapter.create_token()


async def test_a_wrong_secret_and_a_replayed_request_are_refused() -> None:
    async with running_fake() as wb:
        wrong = auth.check_credentials({"app_key": wb.app.app_key, "app_secret": "not-it"})
        with pytest.raises(errors.AuthenticationFailed, match="signature"):
            await wb.track(WebullAdapter(wb.settings(), wrong)).create_token()
        signer = auth.RequestSigner(wb.user_credentials())
        request = httpx.Request("POST", f"{wb.url}/auth/tokens/create", json={})
        request.headers.update(signer(request))
        async with httpx.AsyncClient() as client:
            first = await client.send(request)
            again = await client.send(request)
        assert first.status_code == 200
        assert (again.status_code, again.json()["error_code"]) == (401, "SIGNATURE_NONCE_USED")


async def test_a_stale_timestamp_is_refused() -> None:
    async with running_fake() as wb:
        wb.fake.unix_clock = lambda: time.time() + 3600
        with pytest.raises(errors.AuthenticationFailed, match="out of range"):
            await wb.track(WebullAdapter(wb.settings(), wb.user_credentials())).create_token()


async def test_server_errors_rate_limits_and_lost_answers() -> None:
    async with running_fake() as wb:
        adapter = await wb.adapter()
        ref = wb.account.account_id
        wb.fake.faults.server_errors = 1
        assert await adapter.list_accounts()  # a read is retried once
        wb.fake.faults.server_errors, wb.fake.faults.server_errors_method = 1, "POST"
        with pytest.raises(errors.OutcomeUnknown):
            await adapter.place_order(ref, limit_buy())
        wb.fake.faults.rate_limited = 1
        with pytest.raises(errors.RateLimitExceeded) as caught:
            await adapter.place_order(ref, limit_buy())
        assert caught.value.retry_after == 7
        assert wb.fake.order_count(wb.app.app_key) == 0

        request = limit_buy()
        wb.fake.faults.timeout_after_accept = 1
        with pytest.raises(errors.OutcomeUnknown):
            await adapter.place_order(ref, request)
        found = await adapter.find_order_by_client_id(ref, request.client_order_id)
        assert found is not None
        assert found.client_order_id == request.client_order_id
        again = await adapter.place_order(ref, request)  # refused as a duplicate, adopted
        assert again.broker_order_id == found.broker_order_id
        assert wb.fake.order_count(wb.app.app_key) == 1
        assert await adapter.find_order_by_client_id(ref, "bg" + "0" * 32) is None


async def test_replace_keeps_the_order_and_closed_orders_cannot_change() -> None:
    async with running_fake() as wb:
        adapter = await wb.adapter()
        ref = wb.account.account_id
        placed = await adapter.place_order(ref, limit_buy())
        changed = await adapter.modify_order(
            ref, placed.broker_order_id, OrderChanges(quantity=Decimal(3))
        )
        assert (changed.broker_order_id, changed.quantity) == (placed.broker_order_id, 3)
        canceled = await adapter.cancel_order(ref, placed.broker_order_id)
        assert canceled.status is OrderStatus.canceled
        with pytest.raises(errors.OrderNotModifiable):
            await adapter.modify_order(
                ref, placed.broker_order_id, OrderChanges(limit_price=Decimal(2))
            )


async def test_an_unknown_status_from_the_broker_is_an_error() -> None:
    async with running_fake() as wb:
        adapter = await wb.adapter()
        placed = await adapter.place_order(wb.account.account_id, limit_buy())
        wb.fake.set_status(placed.broker_order_id, "PARTIAL FILLED")
        with pytest.raises(errors.UnknownBrokerValue):
            await adapter.get_order(wb.account.account_id, placed.broker_order_id)


async def test_latency_beyond_the_read_timeout_is_transient_for_reads() -> None:
    async with running_fake() as wb:
        adapter = await wb.adapter()
        wb.fake.faults.latency = 2.0
        with pytest.raises(errors.Transient):
            await adapter.get_balances(wb.account.account_id)
