"""The SnapTrade adapter against the fake over real HTTP: signing, portal, faults."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest

from app.brokers import errors
from app.brokers.base import (
    AggregatorAdapter,
    FingerprintLookup,
    OrderFingerprint,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    TimeInForce,
)
from app.brokers.snaptrade.adapter import SnaptradeAdapter
from tests.brokers.snaptrade.support import running_fake, snaptrade_settings


def buy(qty: str = "2", limit: str | None = "1.00", symbol: str = "AAPL") -> OrderRequest:
    return OrderRequest(
        client_order_id="bg-1",
        symbol=symbol,
        side=OrderSide.buy,
        quantity=Decimal(qty),
        order_type=OrderType.limit if limit else OrderType.market,
        time_in_force=TimeInForce.gtc if limit else TimeInForce.day,
        limit_price=None if limit is None else Decimal(limit),
    )


async def test_it_is_an_aggregator_with_fingerprint_lookup() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        assert isinstance(adapter, AggregatorAdapter)
        assert isinstance(adapter, FingerprintLookup)
        assert adapter.stream_order_updates(run.account.id) is None
        assert "consumer" not in repr(adapter).lower()


async def test_register_portal_and_links_round_trip() -> None:
    async with running_fake() as run:
        credentials = await run.partner_adapter().register_user("bgw-con_test")
        assert credentials["user_id"] == "bgw-con_test"
        assert run.fake.users["bgw-con_test"].secret == credentials["user_secret"]
        adapter = run.track(SnaptradeAdapter(run.settings(), credentials))
        assert await adapter.links() == []
        link = await adapter.portal_link(institution="FIDELITY", reconnect=None)
        assert link.url.startswith(run.url + "/snapTrade/redeemToken?token=")
        assert "broker=FIDELITY" in link.url
        async with httpx.AsyncClient() as browser:
            page = await browser.get(link.url)
            assert page.status_code == 200
            assert "Fidelity" in page.text
            done = await browser.post(link.url, data={"cash": "2500"})
            assert done.status_code == 200
            again = await browser.post(link.url)
            assert again.status_code == 410  # a portal link works once
        [fidelity] = await adapter.links()
        assert (fidelity.institution, fidelity.institution_slug) == ("Fidelity", "FIDELITY")
        assert (fidelity.trading, fidelity.disabled) == (False, False)  # read only
        [account] = fidelity.accounts
        balances = await adapter.get_balances(account.broker_account_id)
        assert balances.cash == Decimal(2500)
        with pytest.raises(errors.Rejected):  # SnapTrade refuses trades on a read link (403)
            await adapter.place_order(account.broker_account_id, buy())
        await adapter.delete_user()
        assert "bgw-con_test" not in run.fake.users
        with pytest.raises(errors.AuthenticationFailed):
            await adapter.list_accounts()


async def test_a_disabled_connection_is_relinked_by_reconnect() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        await run.fake.disable_authorization(run.authorization.id)
        [link] = await adapter.links()
        assert link.disabled is True
        assert link.disabled_at is not None
        # Reads keep answering the last state (spec: "continue to return the last cached").
        assert (await adapter.get_balances(run.account.id)).cash == Decimal(100000)
        with pytest.raises(errors.AuthenticationFailed):  # 402 on a trade: disabled
            await adapter.place_order(run.account.id, buy())
        portal = await adapter.portal_link(institution=None, reconnect=link.link_id)
        async with httpx.AsyncClient() as browser:
            assert (await browser.post(portal.url)).status_code == 200
        [fixed] = await adapter.links()
        assert (fixed.link_id, fixed.disabled) == (link.link_id, False)
        assert [e for e, _ in run.fake.webhooks] == ["CONNECTION_BROKEN", "CONNECTION_FIXED"]


async def test_a_bad_signature_or_secret_is_refused_and_nothing_happens() -> None:
    async with running_fake() as run:
        forged = run.track(
            SnaptradeAdapter(
                snaptrade_settings(run.fake, run.url, snaptrade_consumer_key="not-the-key"),
                run.credentials(),
            )
        )
        with pytest.raises(errors.AuthenticationFailed):
            await forged.list_accounts()
        with pytest.raises(errors.AuthenticationFailed):
            await forged.place_order(run.account.id, buy())
        assert run.fake.requests == []
        assert {status for _, _, status in run.fake.refused} == {401}
        assert run.fake.order_count(run.account.id) == 0

        stale = run.adapter()  # holds the secret as it was
        run.fake.rotate_secret(run.user.user_id)
        with pytest.raises(errors.AuthenticationFailed):
            await stale.get_balances(run.account.id)


async def test_refusals_from_the_brokerage() -> None:
    async with running_fake(cash="1000") as run:
        adapter = run.adapter()
        with pytest.raises(errors.InsufficientFunds):
            await adapter.place_order(run.account.id, buy(qty="10", limit=None))
        sell = OrderRequest(
            "bg-2", "AAPL", OrderSide.sell, Decimal(1), OrderType.market, TimeInForce.day
        )
        with pytest.raises(errors.InsufficientFunds):  # nothing held
            await adapter.place_order(run.account.id, sell)
        with pytest.raises(errors.UnknownSymbol):
            await adapter.place_order(run.account.id, buy(symbol="NOSUCH"))
        assert run.fake.order_count(run.account.id) == 0
        with pytest.raises(errors.OrderNotFound):
            await adapter.cancel_order(run.account.id, "6f1b9c8e-0000-4000-8000-000000000000")
        with pytest.raises(errors.OrderNotFound):
            await adapter.get_balances("6f1b9c8e-0000-4000-8000-000000000000")


async def test_faults_map_to_the_error_tree() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        fake = run.fake
        fake.faults.rate_limited = 1
        fake.faults.rate_limit_reset = 9
        with pytest.raises(errors.RateLimitExceeded) as limited:
            await adapter.list_accounts()
        assert limited.value.retry_after == 9.0
        fake.faults.rate_limited = 1
        fake.faults.rate_limit_reset = 0
        assert len(await adapter.list_accounts()) == 1  # a short wait: the GET is retried

        fake.faults.server_errors = 3
        fake.faults.server_error_status = 503
        with pytest.raises(errors.Transient):
            await adapter.get_positions(run.account.id)
        fake.faults.server_errors = 1
        fake.faults.server_errors_path = r"^/trade/[0-9a-f-]{36}$"
        fake.faults.server_error_status = 500
        with pytest.raises(errors.OutcomeUnknown):  # the impact passed, the placement 500ed
            await adapter.place_order(run.account.id, buy())
        fake.faults.server_errors_path = None

        fake.faults.latency = 2.0  # longer than the 0.5 s read timeout
        with pytest.raises(errors.Transient):
            await adapter.get_balances(run.account.id)
        fake.faults.latency = 0.0


async def test_a_placement_lost_after_acceptance_is_found_by_fingerprint() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        run.fake.faults.timeout_after_accept = 1
        request = buy(qty="3", limit="2.50")
        submitted = datetime.now(UTC)
        with pytest.raises(errors.OutcomeUnknown):
            await adapter.place_order(run.account.id, request)
        assert run.fake.order_count(run.account.id) == 1
        fingerprint = OrderFingerprint.of(request, submitted)
        found = await adapter.find_order_by_fingerprint(run.account.id, fingerprint, frozenset())
        assert found is not None
        assert (found.status, found.quantity, found.limit_price) == (
            OrderStatus.accepted,
            Decimal(3),
            Decimal("2.5"),
        )
        other = OrderFingerprint.of(buy(qty="4", limit="2.50"), submitted)
        assert await adapter.find_order_by_fingerprint(run.account.id, other, frozenset()) is None


async def test_the_legacy_prefix_works_and_is_marked_deprecated() -> None:
    async with running_fake(prefix="/api/v1") as run:
        adapter = run.adapter()
        assert [a.broker_account_id for a in await adapter.list_accounts()] == [run.account.id]
        placed = await adapter.place_order(run.account.id, buy())
        assert placed.status is OrderStatus.accepted
        assert ("POST", "/trade/impact") in run.fake.requests
        async with httpx.AsyncClient() as client:
            status = await client.get(run.url + "/")
        assert status.headers["Deprecation"] == "@1781222400"
        assert status.json()["online"] is True
