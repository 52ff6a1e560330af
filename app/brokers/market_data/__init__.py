"""Broker-neutral market-data building blocks.

``bars``: aggregating final smaller bars into larger intervals, building 1-minute bars
from trades, and stitching backfilled and live bars at the seam. ``subscription``: checking
a wanted set against a broker's market-data capabilities, and the diff to apply upstream.
``upstream``: the reconnect loop of a streaming session (gap, then resubscribed), brokers
supplying the protocol. ``polling``: a ``MarketDataSession`` for brokers without a market
stream, polling their quotes endpoint.
"""
