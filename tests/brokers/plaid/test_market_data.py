"""Plaid market data: Plaid has no quotes to stream or poll, so the adapter declares every
market-data channel unsupported (subscribers get ``market_data_unsupported``) and offers no
session."""

from __future__ import annotations

import pytest

from app.brokers import errors
from app.brokers.base import MarketChannel, MarketDataSubscription, SupportsMarketData
from app.brokers.market_data.polling import PollingMarketDataSession
from app.brokers.market_data.subscription import check_subscription
from app.brokers.plaid.adapter import PLAID_CAPABILITIES, PlaidAdapter


def test_no_market_data_channel_is_offered_and_nothing_is_polled() -> None:
    caps = PLAID_CAPABILITIES.market_data
    assert not any(caps.supports(channel) for channel in MarketChannel)
    assert caps.poll_seconds is None
    assert caps.history.value == "unsupported"
    assert not hasattr(PlaidAdapter, "market_data_session")
    assert not issubclass(PlaidAdapter, SupportsMarketData)


@pytest.mark.parametrize(
    "wanted",
    [
        MarketDataSubscription(quotes=frozenset({"AAPL"})),
        MarketDataSubscription(trades=frozenset({"AAPL"})),
        MarketDataSubscription(greeks=frozenset({"AAPL"})),
    ],
)
def test_every_subscription_is_refused(wanted: MarketDataSubscription) -> None:
    with pytest.raises(errors.MarketDataLimit, match="plaid has no"):
        check_subscription(PLAID_CAPABILITIES.market_data, wanted, broker="plaid")


def test_a_polling_session_cannot_be_built_for_it() -> None:
    class Shaped:
        slug = "plaid"
        capabilities = PLAID_CAPABILITIES

        async def get_quotes(self, symbols: list[str]) -> dict[str, object]:
            raise AssertionError("never called")

    with pytest.raises(ValueError, match="no poll interval"):
        PollingMarketDataSession(Shaped())  # type: ignore[arg-type]
