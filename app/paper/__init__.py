"""The deterministic paper broker (the seed's "MBT"): the product's only paper path.

``PaperEngine`` owns the books (cash, positions, orders, fills) in the paper tables;
``SeededQuoteSource`` makes prices a pure function of (seed, symbol, time step);
``matching`` decides fills without I/O; ``PaperAdapter`` exposes it all as a broker.
"""
