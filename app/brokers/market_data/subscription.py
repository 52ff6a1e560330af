"""Checking a wanted market-data set against a broker's limits, and the diff an upstream
session applies (``MarketDataCapabilities``: data, never ``if broker == ...``)."""

from __future__ import annotations

from dataclasses import dataclass

from app.brokers import errors
from app.brokers.base import MarketChannel, MarketDataCapabilities, MarketDataSubscription


def check_subscription(
    caps: MarketDataCapabilities, wanted: MarketDataSubscription, *, broker: str
) -> None:
    """Raise ``MarketDataLimit`` when ``wanted`` asks for a channel the broker does not
    offer, a bar interval it does not stream (the service aggregates those from a native
    one) or more symbols than ``max_symbols``."""
    asked = {
        MarketChannel.quotes: wanted.quotes,
        MarketChannel.trades: wanted.trades,
        MarketChannel.bars: wanted.bars,
        MarketChannel.greeks: wanted.greeks,
    }
    for channel, items in asked.items():
        if items and not caps.supports(channel):
            raise errors.MarketDataLimit(f"{broker} has no {channel.value} stream", broker=broker)
    for interval, _ in wanted.bars:
        if interval not in caps.bar_intervals:
            raise errors.MarketDataLimit(
                f"{broker} streams no {interval.value} bars "
                f"(it streams {', '.join(sorted(i.value for i in caps.bar_intervals))})",
                broker=broker,
            )
    if caps.max_symbols is not None and len(wanted.symbols) > caps.max_symbols:
        raise errors.MarketDataLimit(
            f"{broker} allows at most {caps.max_symbols} symbols per session "
            f"({len(wanted.symbols)} asked)",
            broker=broker,
        )


@dataclass(frozen=True, slots=True)
class SubscriptionDiff:
    """What to add and remove upstream to go from ``held`` to ``wanted``."""

    added: MarketDataSubscription
    removed: MarketDataSubscription
    wanted: MarketDataSubscription

    @classmethod
    def between(
        cls, held: MarketDataSubscription, wanted: MarketDataSubscription
    ) -> SubscriptionDiff:
        return cls(added=wanted - held, removed=held - wanted, wanted=wanted)

    def is_empty(self) -> bool:
        return self.added.is_empty() and self.removed.is_empty()
