"""Broker-neutral market-data building blocks.

``bars``: aggregating final smaller bars into larger intervals, building 1-minute bars
from trades, and stitching backfilled and live bars at the seam. ``polling``: a
``MarketDataSession`` for brokers without a market stream, polling their quotes endpoint.
"""
