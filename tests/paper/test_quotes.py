"""The paper market's seeded quotes (``app.paper.quotes``): the same seed gives the same
prices on every machine and in every release, so fills, bars and benchmarks stay comparable."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.paper.quotes import SeededQuoteSource

# Computed once (seed 2026, 50 ms steps, 100 synthetic symbols) and pinned: a change here is
# a change of every paper price. Steps at and around the swing (60) and slow (3,600) anchors.
GOLDEN = [
    ("AAPL", 0, "192.69", "192.71", "192.69", "213", "203"),
    ("AAPL", 59, "192.45", "192.47", "192.45", "486", "243"),
    ("AAPL", 60, "192.53", "192.55", "192.55", "326", "103"),
    ("AAPL", 3600, "185.62", "185.66", "185.63", "370", "181"),
    ("AAPL", 35000000123, "184.05", "184.07", "184.05", "194", "445"),
    ("BTC-USD", 0, "67085.60", "67117.80", "67092.38", "2.0192", "1.5239"),
    ("BTC-USD", 59, "66547.01", "66574.97", "66547.90", "0.4635", "1.3079"),
    ("BTC-USD", 60, "66548.46", "66579.08", "66560.48", "1.8233", "2.0936"),
    ("BTC-USD", 3600, "66770.76", "66805.48", "66800.84", "2.4435", "0.6091"),
    ("BTC-USD", 35000000123, "65057.82", "65090.36", "65079.35", "1.6404", "1.9388"),
    ("ETH-USD", 0, "3216.15", "3216.79", "3216.69", "27.211", "23.691"),
    ("ETH-USD", 59, "3241.20", "3241.84", "3241.84", "13.759", "7.061"),
    ("ETH-USD", 60, "3240.83", "3242.45", "3240.97", "17.610", "19.666"),
    ("ETH-USD", 3600, "3279.71", "3280.95", "3280.84", "29.314", "18.538"),
    ("ETH-USD", 35000000123, "3353.22", "3354.02", "3353.63", "27.404", "27.570"),
    ("SYM007", 0, "282.59", "282.61", "282.61", "320", "377"),
    ("SYM007", 59, "285.16", "285.18", "285.16", "484", "253"),
    ("SYM007", 60, "285.35", "285.41", "285.41", "248", "483"),
    ("SYM007", 3600, "281.35", "281.41", "281.37", "216", "335"),
    ("SYM007", 35000000123, "274.61", "274.63", "274.63", "169", "95"),
    ("SYM099", 0, "304.88", "304.94", "304.92", "227", "338"),
    ("SYM099", 59, "306.43", "306.49", "306.45", "272", "178"),
    ("SYM099", 60, "306.43", "306.47", "306.44", "268", "344"),
    ("SYM099", 3600, "325.28", "325.34", "325.28", "408", "442"),
    ("SYM099", 35000000123, "309.39", "309.45", "309.44", "222", "176"),
]


@pytest.mark.parametrize(("symbol", "step", "bid", "ask", "last", "bid_size", "ask_size"), GOLDEN)
def test_the_seeded_quotes_are_pinned(
    symbol: str, step: int, bid: str, ask: str, last: str, bid_size: str, ask_size: str
) -> None:
    source = SeededQuoteSource(2026, step_ms=50, synthetic_symbols=100)
    quote = source.quote_at_step(source.instrument(symbol), step)
    assert (quote.bid, quote.ask, quote.last, quote.bid_size, quote.ask_size) == (
        Decimal(bid),
        Decimal(ask),
        Decimal(last),
        Decimal(bid_size),
        Decimal(ask_size),
    )
    # Exact strings too: the scale (cents, size quanta) is part of the price.
    assert [str(quote.bid), str(quote.ask), str(quote.last)] == [bid, ask, last]
