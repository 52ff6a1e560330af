"""The Coinbase adapter against the fake over real HTTP: results, refusals and faults."""

from __future__ import annotations

import time
from decimal import Decimal

import httpx
import jwt
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
from app.brokers.coinbase import auth
from app.brokers.coinbase.adapter import CoinbaseAdapter
from app.security.credentials import Credentials
from tests.brokers import support as shared
from tests.brokers.coinbase.support import Running, running_fake
from tests.fakes.coinbase.server import new_key


def limit_buy(client_order_id: str, qty: str = "0.01", price: str = "1000") -> OrderRequest:
    return shared.limit_buy(client_order_id, qty, price, symbol="BTC-USD")


def market(
    client_order_id: str, side: OrderSide = OrderSide.buy, qty: str = "0.01"
) -> OrderRequest:
    """Crypto trades around the clock: a market order is IOC (there is no "day")."""
    return shared.market(
        client_order_id, side, qty, symbol="BTC-USD", time_in_force=TimeInForce.ioc
    )


async def test_it_is_a_broker_adapter_without_secrets_in_its_repr() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        assert isinstance(adapter, BrokerAdapter)
        text = repr(adapter) + repr(adapter._signer) + repr(adapter._credentials)
        assert run.user.private_key not in text
        assert "BEGIN" not in text


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA"])
async def test_accounts_balances_positions_and_transactions(algorithm: str) -> None:
    async with running_fake(cash="50000", algorithm=algorithm) as run:
        adapter = run.adapter()
        [account] = await adapter.list_accounts()
        assert account.broker_account_id == run.portfolio
        ref = run.portfolio
        balances = await adapter.get_balances(ref)
        assert (balances.cash, balances.buying_power, balances.equity) == (
            Decimal(50000),
            Decimal(50000),
            Decimal(50000),
        )
        # Below the paper book's smallest size (0.05 BTC), so the IOC order always fills whole
        # whatever the seeded book shows this second.
        placed = await adapter.place_order(ref, market("bg-m-1", qty="0.04"))
        assert (placed.status, placed.filled_quantity) == (OrderStatus.filled, Decimal("0.04"))
        assert isinstance(placed.avg_fill_price, Decimal)

        [position] = await adapter.get_positions(ref)
        assert (position.symbol, position.quantity) == ("BTC-USD", Decimal("0.04"))
        assert position.avg_cost == placed.avg_fill_price
        one = await adapter.get_position(ref, "BTC-USD")
        assert one is not None
        assert one.quantity == position.quantity
        assert await adapter.get_position(ref, "ETH-USD") is None

        transactions = await adapter.get_transactions(ref, None, None, None)
        assert [t.type for t in transactions] == ["buy", "deposit"]
        assert transactions[0].amount == -(Decimal("0.04") * placed.avg_fill_price)
        after = await adapter.get_balances(ref)
        assert after.cash == Decimal(50000) + transactions[0].amount
        assert after.equity > after.cash
        assert all(c["header"]["alg"] == algorithm for c in run.fake.claims)


async def test_a_sell_without_coins_is_refused_there_is_no_shorting() -> None:
    async with running_fake() as run:
        with pytest.raises(errors.InsufficientFunds):
            await run.adapter().place_order(run.portfolio, market("bg-short", side=OrderSide.sell))
        assert run.fake.order_count(run.user) == 0


async def test_place_find_edit_cancel() -> None:
    async with running_fake() as run:
        adapter, ref = run.adapter(), run.portfolio
        placed = await adapter.place_order(ref, limit_buy("bg-client-1"))
        assert (placed.status, placed.client_order_id, placed.limit_price) == (
            OrderStatus.accepted,
            "bg-client-1",
            Decimal(1000),
        )
        found = await adapter.find_order_by_client_id(ref, "bg-client-1")
        assert found is not None
        assert found.broker_order_id == placed.broker_order_id
        assert await adapter.find_order_by_client_id(ref, "bg-nothing") is None

        edited = await adapter.modify_order(
            ref,
            placed.broker_order_id,
            OrderChanges(limit_price=Decimal("1100"), quantity=Decimal("0.02")),
        )
        assert (edited.broker_order_id, edited.limit_price, edited.quantity) == (
            placed.broker_order_id,
            Decimal(1100),
            Decimal("0.02"),
        )
        fake_order = run.user.orders[placed.broker_order_id]
        assert fake_order.edit_history[-1]["price"] == "1100"
        with pytest.raises(errors.Rejected, match="EDIT_REQUEST_EQUAL_TO_ORIGINAL_REQUEST"):
            await adapter.modify_order(
                ref, placed.broker_order_id, OrderChanges(limit_price=Decimal(1100))
            )

        balances = await adapter.get_balances(ref)
        assert balances.buying_power == balances.cash - Decimal("22")  # held for the order

        canceled = await adapter.cancel_order(ref, placed.broker_order_id)
        assert canceled.status is OrderStatus.canceled
        with pytest.raises(errors.OrderNotModifiable):
            await adapter.cancel_order(ref, placed.broker_order_id)
        with pytest.raises(errors.OrderNotModifiable):
            await adapter.modify_order(
                ref, placed.broker_order_id, OrderChanges(limit_price=Decimal(5))
            )
        with pytest.raises(errors.OrderNotFound):
            await adapter.cancel_order(ref, "6f1b9c8e-0000-4000-8000-000000000000")


async def test_a_stop_limit_rests_until_triggered_and_cannot_be_edited() -> None:
    async with running_fake() as run:
        adapter, ref = run.adapter(), run.portfolio
        stop = OrderRequest(
            "bg-stop",
            "BTC-USD",
            OrderSide.buy,
            Decimal("0.01"),
            OrderType.stop_limit,
            TimeInForce.gtc,
            limit_price=Decimal("200000"),
            stop_price=Decimal("150000"),
        )
        placed = await adapter.place_order(ref, stop)
        assert (placed.order_type, placed.stop_price, placed.status) == (
            OrderType.stop_limit,
            Decimal(150000),
            OrderStatus.accepted,
        )
        await run.fake.match()
        assert (await adapter.get_order(ref, placed.broker_order_id)).status is OrderStatus.accepted
        [(_, _, body)] = [b for b in run.fake.bodies if b[1].endswith("/orders")]
        terms = body["order_configuration"]["stop_limit_stop_limit_gtc"]
        assert terms["stop_direction"] == "STOP_DIRECTION_STOP_UP"
        with pytest.raises(errors.UnsupportedOrder):
            await adapter.modify_order(
                ref, placed.broker_order_id, OrderChanges(limit_price=Decimal(1))
            )


async def test_an_ioc_limit_that_cannot_fill_is_canceled_at_once() -> None:
    async with running_fake() as run:
        ioc = OrderRequest(
            "bg-ioc",
            "BTC-USD",
            OrderSide.buy,
            Decimal("0.01"),
            OrderType.limit,
            TimeInForce.ioc,
            limit_price=Decimal(1),
        )
        placed = await run.adapter().place_order(run.portfolio, ioc)
        assert placed.status is OrderStatus.canceled


async def test_quotes_and_symbols() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        quotes = await adapter.get_quotes(["BTC-USD", "ETH-USD", "DOGE-USD", "AAPL"])
        assert set(quotes) == {"BTC-USD", "ETH-USD"}
        assert quotes["BTC-USD"].bid < quotes["BTC-USD"].ask
        await adapter.check_symbol("ETH-USD")
        with pytest.raises(errors.UnknownSymbol):
            await adapter.check_symbol("DOGE-USD")  # the fake's 404 NOT_FOUND
        doge = OrderRequest(
            "bg-doge", "DOGE-USD", OrderSide.buy, Decimal(1), OrderType.market, TimeInForce.ioc
        )
        with pytest.raises(errors.UnknownSymbol, match="INVALID_PRODUCT_ID"):
            await adapter.place_order(run.portfolio, doge)  # 200, success: false


# --- the fake's authentication, as Coinbase's ---------------------------------------------------


def handmade(run: Running, path: str, **claims: object) -> str:
    key = auth.load_private_key(run.user.private_key)
    now = int(time.time())
    values: dict[str, object] = {
        "sub": run.user.key_name,
        "iss": "cdp",
        "nbf": now,
        "exp": now + 120,
        "uri": f"GET {run.url.removeprefix('http://')}{path}",
    }
    values.update(claims)
    return jwt.encode(
        values, key, algorithm="ES256", headers={"kid": run.user.key_name, "nonce": "ab12"}
    )


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({}, None),
        ({"uri": "GET api.coinbase.com/api/v3/brokerage/accounts"}, "uri claim"),
        ({"uri": "POST {host}/api/v3/brokerage/accounts"}, "uri claim"),
        ({"nbf": int(time.time()) - 400, "exp": int(time.time()) - 280}, "ExpiredSignature"),
        ({"iss": "coinbase-cloud"}, "InvalidIssuer"),
        ({"exp": int(time.time()) + 3600}, "longer than 120"),
    ],
)
async def test_the_fake_checks_every_claim(claims: dict[str, object], why: str | None) -> None:
    async with running_fake() as run:
        path = "/api/v3/brokerage/accounts"
        host = run.url.removeprefix("http://")
        claims = {k: v.format(host=host) if isinstance(v, str) else v for k, v in claims.items()}
        token = handmade(run, path, **claims)
        async with httpx.AsyncClient(base_url=run.url) as client:
            response = await client.get(path, headers={"Authorization": f"Bearer {token}"})
        if why is None:
            assert response.status_code == 200
            return
        assert (response.status_code, response.text) == (401, "Unauthorized\n")
        assert why in run.fake.refusals[-1]


async def test_another_keys_signature_or_a_revoked_key_is_a_401() -> None:
    async with running_fake() as run:
        stranger, _ = new_key("ES256")
        impostor = run.track(
            CoinbaseAdapter(
                run.settings(),
                Credentials(api_key_name=run.user.key_name, private_key=stranger),
            )
        )
        with pytest.raises(errors.AuthenticationFailed):
            await impostor.list_accounts()
        assert "InvalidSignature" in run.fake.refusals[-1]
        adapter = run.adapter()
        await adapter.list_accounts()
        run.fake.revoke(run.user)
        with pytest.raises(errors.AuthenticationFailed, match="Unauthorized"):
            await adapter.get_balances(run.portfolio)


# --- faults -----------------------------------------------------------------------------


async def test_429_is_rate_limited_with_retry_after_and_nothing_was_placed() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        run.fake.faults.rate_limited = 1
        with pytest.raises(errors.RateLimitExceeded) as limited:
            await adapter.place_order(run.portfolio, limit_buy("bg-429"))
        assert limited.value.retry_after == 7
        assert run.fake.order_count(run.user) == 0
        run.fake.faults.rate_limited = 1
        run.fake.faults.retry_after = 0  # a short wait: a read is retried and succeeds
        assert await adapter.list_accounts()
        run.fake.faults.rate_limited = 5
        run.fake.faults.retry_after = None
        with pytest.raises(errors.RateLimitExceeded) as bare:
            await adapter.list_accounts()
        assert bare.value.retry_after is None


async def test_5xx_is_transient_for_reads_and_unknown_for_writes() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        run.fake.faults.server_errors = 1
        assert await adapter.list_accounts()  # retried
        run.fake.faults.server_errors = 5
        run.fake.faults.server_errors_method = "GET"
        with pytest.raises(errors.Transient):
            await adapter.get_balances(run.portfolio)
        run.fake.faults.server_errors = 1
        run.fake.faults.server_errors_method = "POST"
        with pytest.raises(errors.OutcomeUnknown):
            await adapter.place_order(run.portfolio, limit_buy("bg-5xx"))


async def test_a_timeout_after_accept_is_unknown_and_the_order_is_found_by_client_id() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        run.fake.faults.timeout_after_accept = 1
        with pytest.raises(errors.OutcomeUnknown):
            await adapter.place_order(run.portfolio, limit_buy("bg-lost-1"))
        assert run.fake.order_count(run.user) == 1
        found = await adapter.find_order_by_client_id(run.portfolio, "bg-lost-1")
        assert found is not None
        assert found.status is OrderStatus.accepted


async def test_an_unreachable_broker_is_transient() -> None:
    async with running_fake() as run:
        url = run.url
        settings = run.settings()
    adapter = CoinbaseAdapter(settings, run.credentials())
    try:
        assert url
        with pytest.raises(errors.Transient):
            await adapter.list_accounts()
        with pytest.raises(errors.Transient):  # never reached: a write that left nothing
            await adapter.place_order(run.portfolio, limit_buy("bg-nowhere"))
    finally:
        await adapter.close()


async def test_an_unknown_status_from_the_broker_is_an_error() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        placed = await adapter.place_order(run.portfolio, limit_buy("bg-odd"))
        run.fake.set_status(placed.broker_order_id, "SETTLING")
        with pytest.raises(errors.UnknownBrokerValue):
            await adapter.get_order(run.portfolio, placed.broker_order_id)
