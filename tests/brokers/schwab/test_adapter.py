"""The Schwab adapter against the fake over real HTTP: each method's request, answers, errors."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from app.brokers import errors
from app.brokers.base import (
    FingerprintLookup,
    OrderChanges,
    OrderFingerprint,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    Support,
    TimeInForce,
)
from app.brokers.schwab.adapter import SCHWAB_CAPABILITIES
from tests.brokers.schwab.support import running_fake


def limit(qty: str = "2", price: str = "1.00", side: OrderSide = OrderSide.buy) -> OrderRequest:
    return OrderRequest(
        client_order_id="bg" + uuid.uuid4().hex,
        symbol="AAPL",
        side=side,
        quantity=Decimal(qty),
        order_type=OrderType.limit,
        time_in_force=TimeInForce.gtc,
        limit_price=Decimal(price),
    )


def market(qty: str = "2") -> OrderRequest:
    return OrderRequest(
        client_order_id="bg" + uuid.uuid4().hex,
        symbol="AAPL",
        side=OrderSide.buy,
        quantity=Decimal(qty),
        order_type=OrderType.market,
        time_in_force=TimeInForce.day,
    )


def test_capabilities_say_no_client_order_ids() -> None:
    assert SCHWAB_CAPABILITIES.client_order_ids is Support.unsupported
    assert SCHWAB_CAPABILITIES.as_dict()["client_order_ids"] == "unsupported"
    assert SCHWAB_CAPABILITIES.fractional is Support.unsupported


async def test_accounts_use_the_hash_value_never_the_number() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        [account] = await adapter.list_accounts()
        assert account.broker_account_id == run.account.hash_value
        assert account.number_masked == "****" + run.account.number[-4:]
        assert run.account.number not in account.name
        assert ("GET", "/trader/v1/accounts/accountNumbers") in run.fake.requests
        balances = await adapter.get_balances(run.account.hash_value)
        assert balances.cash == Decimal(100000)
        assert run.fake.calls[-1][:3] == (
            "GET",
            f"/trader/v1/accounts/{run.account.hash_value}",
            {},
        )
        with pytest.raises(errors.OrderNotFound):
            await adapter.get_balances(run.account.number)  # the plain number is no path


async def test_margin_account_buying_power() -> None:
    async with running_fake(cash="5000", account_type="MARGIN") as run:
        balances = await run.adapter().get_balances(run.account.hash_value)
        assert balances.buying_power == Decimal(5000)


async def test_place_reads_the_id_from_location() -> None:
    async with running_fake() as run:
        adapter, ref = run.adapter(), run.account.hash_value
        placed = await adapter.place_order(ref, limit())
        [(method, path, _q, body)] = [c for c in run.fake.calls if c[0] == "POST"]
        assert (method, path) == ("POST", f"/trader/v1/accounts/{ref}/orders")
        assert json.loads(body) == {
            "session": "NORMAL",
            "duration": "GOOD_TILL_CANCEL",
            "orderType": "LIMIT",
            "orderStrategyType": "SINGLE",
            "orderLegCollection": [
                {
                    "instruction": "BUY",
                    "quantity": 2,
                    "instrument": {"symbol": "AAPL", "assetType": "EQUITY"},
                }
            ],
            "price": "1.00",
        }
        assert placed.broker_order_id == str(max(run.account.orders))
        assert placed.status is OrderStatus.accepted
        assert placed.client_order_id is None
        # Read back with a GET of exactly that order.
        assert run.fake.requests[-1] == (
            "GET",
            f"/trader/v1/accounts/{ref}/orders/{placed.broker_order_id}",
        )


async def test_a_201_without_location_is_outcome_unknown_and_found_by_fingerprint() -> None:
    async with running_fake() as run:
        adapter, ref = run.adapter(), run.account.hash_value
        request = limit()
        submitted_at = datetime.now(UTC)
        run.fake.faults.omit_location = 1
        with pytest.raises(errors.OutcomeUnknown):
            await adapter.place_order(ref, request)
        [held] = run.account.orders.values()
        found = await adapter.find_order_by_fingerprint(
            ref, OrderFingerprint.of(request, submitted_at), frozenset()
        )
        assert found is not None
        assert found.broker_order_id == str(held.id)


async def test_modify_replaces_with_a_new_order() -> None:
    async with running_fake() as run:
        adapter, ref = run.adapter(), run.account.hash_value
        placed = await adapter.place_order(ref, limit())
        new = await adapter.modify_order(
            ref,
            placed.broker_order_id,
            OrderChanges(limit_price=Decimal("1.50"), quantity=Decimal(3)),
        )
        assert new.broker_order_id != placed.broker_order_id
        assert new.replaces == placed.broker_order_id
        assert (new.quantity, new.limit_price) == (Decimal(3), Decimal("1.5"))
        puts = [c for c in run.fake.calls if c[0] == "PUT"]
        assert [p[1] for p in puts] == [
            f"/trader/v1/accounts/{ref}/orders/{placed.broker_order_id}"
        ]
        sent = json.loads(puts[0][3])
        assert (sent["price"], sent["orderLegCollection"][0]["quantity"]) == ("1.50", 3)
        old = await adapter.get_order(ref, placed.broker_order_id)
        assert (old.status, old.replaced_by) == (OrderStatus.replaced, new.broker_order_id)
        with pytest.raises(errors.OrderNotModifiable):
            await adapter.modify_order(
                ref, placed.broker_order_id, OrderChanges(quantity=Decimal(1))
            )


async def test_a_lost_replace_answer_is_found_through_the_old_order() -> None:
    async with running_fake() as run:
        adapter, ref = run.adapter(), run.account.hash_value
        placed = await adapter.place_order(ref, limit())
        run.fake.faults.server_errors = 1
        run.fake.faults.server_errors_method = "PUT"
        with pytest.raises(errors.OutcomeUnknown):
            # the fake failed before replacing: Schwab still shows the old order working
            await adapter.modify_order(
                ref, placed.broker_order_id, OrderChanges(quantity=Decimal(1))
            )
        assert len(run.account.orders) == 1


async def test_a_replace_whose_answer_timed_out_returns_the_new_order() -> None:
    async with running_fake() as run:
        adapter, ref = run.adapter(), run.account.hash_value
        placed = await adapter.place_order(ref, limit())
        run.fake.faults.timeout_after_accept = 1
        run.fake.faults.hang_seconds = 2.0
        new = await adapter.modify_order(
            ref, placed.broker_order_id, OrderChanges(limit_price=Decimal("1.25"))
        )
        assert new.replaces == placed.broker_order_id
        assert new.limit_price == Decimal("1.25")
        assert len(run.account.orders) == 2
        assert [c[0] for c in run.fake.calls].count("PUT") == 1


async def test_cancel_then_cancel_again() -> None:
    async with running_fake() as run:
        adapter, ref = run.adapter(), run.account.hash_value
        placed = await adapter.place_order(ref, limit())
        canceled = await adapter.cancel_order(ref, placed.broker_order_id)
        assert canceled.status is OrderStatus.canceled
        assert (
            "DELETE",
            f"/trader/v1/accounts/{ref}/orders/{placed.broker_order_id}",
        ) in run.fake.requests
        with pytest.raises(errors.OrderNotModifiable) as caught:
            await adapter.cancel_order(ref, placed.broker_order_id)
        assert "canceled" in caught.value.reason


async def test_lists_send_entered_time_windows() -> None:
    async with running_fake() as run:
        adapter, ref = run.adapter(), run.account.hash_value
        resting = await adapter.place_order(ref, limit())
        filled = await adapter.place_order(ref, market())
        await run.fake.match()
        open_ids = [o.broker_order_id for o in await adapter.list_orders(ref, "open", 50)]
        assert open_ids == [resting.broker_order_id]
        _m, path, query, _b = run.fake.calls[-1]
        assert path == f"/trader/v1/accounts/{ref}/orders"
        assert query["fromEnteredTime"].endswith("Z")
        assert "." in query["fromEnteredTime"]
        assert set(query) == {"fromEnteredTime", "toEnteredTime"}
        closed = await adapter.list_orders(ref, "closed", 50)
        assert [o.broker_order_id for o in closed] == [filled.broker_order_id]
        assert closed[0].status is OrderStatus.filled
        assert closed[0].avg_fill_price is not None
        history = await adapter.order_history(ref, None, None, "AAPL")
        assert {o.broker_order_id for o in history} == {
            resting.broker_order_id,
            filled.broker_order_id,
        }
        assert await adapter.order_history(ref, None, None, "MSFT") == []


async def test_positions_transactions_and_quotes() -> None:
    async with running_fake() as run:
        adapter, ref = run.adapter(), run.account.hash_value
        await adapter.place_order(ref, market("3"))
        await run.fake.match()
        [position] = await adapter.get_positions(ref)
        assert (position.symbol, position.quantity) == ("AAPL", Decimal(3))
        assert run.fake.calls[-1][2] == {"fields": "positions"}
        assert await adapter.get_position(ref, "MSFT") is None
        trades = await adapter.get_transactions(ref, None, None, "buy")
        assert [(t.symbol, t.quantity) for t in trades] == [("AAPL", Decimal(3))]
        query = run.fake.calls[-1][2]
        assert "TRADE" in query["types"].split(",")
        assert query["startDate"].endswith("Z")
        deposits = await adapter.get_transactions(ref, None, None, "deposit")
        assert [t.amount for t in deposits] == [Decimal(100000)]
        quotes = await adapter.get_quotes(["AAPL", "NOSUCHSYM"])
        assert set(quotes) == {"AAPL"}
        assert quotes["AAPL"].bid < quotes["AAPL"].ask
        assert run.fake.calls[-1][1:3] == (
            "/marketdata/v1/quotes",
            {"symbols": "AAPL,NOSUCHSYM", "fields": "quote"},
        )


async def test_check_symbol() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        await adapter.check_symbol("MSFT")
        with pytest.raises(errors.UnknownSymbol):
            await adapter.check_symbol("NOSUCHSYM")


async def test_no_client_order_id_lookup() -> None:
    async with running_fake() as run:
        with pytest.raises(errors.NotSupported):
            await run.adapter().find_order_by_client_id(run.account.hash_value, "bg123")


async def test_fingerprint_lookup_finds_the_order_of_a_lost_submit() -> None:
    async with running_fake() as run:
        adapter, ref = run.adapter(), run.account.hash_value
        assert isinstance(adapter, FingerprintLookup)
        request = limit()
        submitted_at = datetime.now(UTC)
        run.fake.faults.timeout_after_accept = 1
        run.fake.faults.hang_seconds = 2.0
        with pytest.raises(errors.OutcomeUnknown):
            await adapter.place_order(ref, request)
        [held] = run.account.orders.values()
        fingerprint = OrderFingerprint.of(request, submitted_at)
        found = await adapter.find_order_by_fingerprint(ref, fingerprint, frozenset())
        assert found is not None
        assert found.broker_order_id == str(held.id)
        assert (
            await adapter.find_order_by_fingerprint(ref, fingerprint, frozenset({str(held.id)}))
            is None
        )
        other = OrderFingerprint.of(limit(price="1.01"), submitted_at)
        assert await adapter.find_order_by_fingerprint(ref, other, frozenset()) is None
        later = OrderFingerprint.of(request, submitted_at + timedelta(minutes=10))
        assert await adapter.find_order_by_fingerprint(ref, later, frozenset()) is None


async def test_of_identical_orders_the_nearest_in_time_is_taken() -> None:
    async with running_fake() as run:
        adapter, ref = run.adapter(), run.account.hash_value
        request = limit()
        first = await adapter.place_order(ref, request)
        run.fake.advance(timedelta(seconds=20))
        second = await adapter.place_order(ref, request)
        base = datetime.now(UTC)
        near_first = OrderFingerprint.of(request, base)
        near_second = OrderFingerprint.of(request, base + timedelta(seconds=20))
        found_first = await adapter.find_order_by_fingerprint(ref, near_first, frozenset())
        found_second = await adapter.find_order_by_fingerprint(ref, near_second, frozenset())
        assert found_first is not None
        assert found_second is not None
        assert (found_first.broker_order_id, found_second.broker_order_id) == (
            first.broker_order_id,
            second.broker_order_id,
        )


# --- errors, each mapped once -------------------------------------------------------------


async def test_an_expired_access_token_is_authentication_failed() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        run.fake.expire_access_tokens()
        with pytest.raises(errors.AuthenticationFailed) as caught:
            await adapter.get_balances(run.account.hash_value)
        assert "not authorized" in caught.value.reason


async def test_a_revoked_grant_is_authentication_failed_on_writes_too() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        run.fake.revoke(run.login)
        with pytest.raises(errors.AuthenticationFailed):
            await adapter.place_order(run.account.hash_value, limit())
        assert run.account.orders == {}


async def test_a_refused_order_is_rejected_with_schwab_reason() -> None:
    async with running_fake(cash="100") as run:
        adapter, ref = run.adapter(), run.account.hash_value
        with pytest.raises(errors.InsufficientFunds) as funds:
            await adapter.place_order(ref, market("10"))
        assert "buying power" in funds.value.reason
        with pytest.raises(errors.Rejected) as refused:
            await adapter.place_order(ref, limit(side=OrderSide.sell))
        assert "oversold/overbought position" in refused.value.reason


async def test_rate_limited_with_retry_after() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        run.fake.faults.rate_limited = 1
        run.fake.faults.retry_after = 30
        with pytest.raises(errors.RateLimitExceeded) as caught:
            await adapter.place_order(run.account.hash_value, limit())
        assert caught.value.retry_after == 30
        assert run.account.orders == {}


async def test_server_errors_transient_for_reads_unknown_for_writes() -> None:
    async with running_fake() as run:
        adapter, ref = run.adapter(), run.account.hash_value
        run.fake.faults.server_errors = 3  # every retry of the read fails too
        with pytest.raises(errors.Transient):
            await adapter.get_balances(ref)
        run.fake.faults.server_errors = 1
        run.fake.faults.server_error_status = 503
        with pytest.raises(errors.OutcomeUnknown):
            await adapter.place_order(ref, limit())


async def test_a_read_survives_one_server_error() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        run.fake.faults.server_errors = 1
        balances = await adapter.get_balances(run.account.hash_value)
        assert balances.cash == Decimal(100000)


async def test_a_timeout_after_accept_is_outcome_unknown_not_resent() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        run.fake.faults.timeout_after_accept = 1
        run.fake.faults.hang_seconds = 2.0
        with pytest.raises(errors.OutcomeUnknown):
            await adapter.place_order(run.account.hash_value, limit())
        assert len(run.account.orders) == 1
        assert [c[0] for c in run.fake.calls].count("POST") == 1


async def test_unknown_order_ids_are_not_found() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        with pytest.raises(errors.OrderNotFound):
            await adapter.get_order(run.account.hash_value, "6f1b9c8e-0000-4000-8000-000000000000")
        with pytest.raises(errors.OrderNotFound):
            await adapter.get_order(run.account.hash_value, "999999999")


async def test_an_unknown_status_from_schwab_is_an_error() -> None:
    async with running_fake() as run:
        adapter, ref = run.adapter(), run.account.hash_value
        placed = await adapter.place_order(ref, limit())
        run.fake.set_status(int(placed.broker_order_id), "HALF_FILLED_MAYBE")
        with pytest.raises(errors.UnknownBrokerValue):
            await adapter.get_order(ref, placed.broker_order_id)
