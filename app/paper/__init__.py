"""The deterministic paper broker (the seed's "MBT"): the product's only paper path.

``PaperEngine`` owns the books (cash, positions, orders, fills) in the paper tables;
``SeededQuoteSource`` makes prices a pure function of (seed, symbol, time step);
``matching`` decides fills without I/O; ``PaperAdapter`` exposes it all as a broker.
Options: ``SeededOptionMarket`` lists contracts and prices them (Black-Scholes on a seeded
volatility surface); ``option_risk`` says what cover and cash short option legs need; the
engine fills single- and multi-leg option orders whole at their net price and settles
expired positions (worthless, exercised or assigned) on the ticker. Market data:
``PaperMarketData`` derives trades, 1-minute bars, history bars and greeks from the same
seeded path, and ``PaperMarketDataSession`` streams them on the paper clock.
"""
