"""Seeded, reproducible quotes for the paper market.

A quote is a pure function of (seed, symbol, step), where ``step = floor(epoch_seconds /
step_seconds)``: no state, no randomness that varies per process (``random`` and ``hash()``
do), O(1) per call. The price is the symbol's base price moved by three hashed,
piecewise-linear components (a slow hourly drift of up to ±6%, a minute-scale swing of up to
±1%, and per-step noise of up to ±0.05%), so it stays within about ±7% of base and moves
enough for limits and stops to be reached. All arithmetic is ``Decimal`` in a fixed context,
so the same seed gives the same prices on every machine.

The paper market is open 24/7: every step has a quote, for equities as for crypto.

For the market-data benchmark (``scripts/bench/marketdata``: 2,000 quote updates per second
over 100 symbols) a source can take a step in milliseconds (``step_ms``) and a synthetic
universe ``SYM000``..``SYMnnn`` (``synthetic_symbols``) beside the listed one; both come
from settings that are off by default (``from_settings``: ``BROKERAGE_PAPER_MARKET_STEP_MS``
and ``BROKERAGE_PAPER_BENCH_SYMBOLS``), and the default market is unchanged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from functools import lru_cache
from typing import TYPE_CHECKING

from app.brokers.base import AssetClass
from app.brokers.errors import UnknownSymbol

if TYPE_CHECKING:
    from app.config import Settings

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CENT = Decimal("0.01")
_TWO_64 = Decimal(2**64)
_CTX = Context(prec=28, rounding=ROUND_HALF_EVEN)

# (period in steps, amplitude as a fraction of base)
_SLOW = (3600, Decimal("0.06"))
_SWING = (60, Decimal("0.01"))
_NOISE = Decimal("0.0005")


@dataclass(frozen=True, slots=True)
class Instrument:
    symbol: str
    asset_class: AssetClass
    base_price: Decimal
    size_min: Decimal
    size_max: Decimal
    size_quantum: Decimal


def _equity(symbol: str, base: str) -> Instrument:
    return Instrument(
        symbol, AssetClass.equity, Decimal(base), Decimal(50), Decimal(500), Decimal(1)
    )


UNIVERSE: dict[str, Instrument] = {
    i.symbol: i
    for i in (
        _equity("AAPL", "190.00"),
        _equity("MSFT", "420.00"),
        _equity("GOOGL", "170.00"),
        _equity("AMZN", "185.00"),
        _equity("NVDA", "120.00"),
        _equity("TSLA", "250.00"),
        _equity("META", "500.00"),
        _equity("SPY", "540.00"),
        _equity("QQQ", "470.00"),
        _equity("IWM", "210.00"),
        _equity("VTI", "270.00"),
        Instrument(
            "BTC-USD",
            AssetClass.crypto,
            Decimal("65000.00"),
            Decimal("0.05"),
            Decimal("2.5"),
            Decimal("0.0001"),
        ),
        Instrument(
            "ETH-USD",
            AssetClass.crypto,
            Decimal("3200.00"),
            Decimal("0.5"),
            Decimal("40"),
            Decimal("0.001"),
        ),
    )
}


SYNTHETIC_PREFIX = "SYM"


def synthetic_instruments(count: int) -> dict[str, Instrument]:
    """``SYM000``.. equities for the benchmark, base prices spread over $20-$500."""
    if not 0 <= count <= 1000:
        raise ValueError("between 0 and 1000 synthetic symbols")
    return {
        f"{SYNTHETIC_PREFIX}{i:03d}": _equity(
            f"{SYNTHETIC_PREFIX}{i:03d}", f"{20 + (i * 37) % 481}.00"
        )
        for i in range(count)
    }


@dataclass(frozen=True, slots=True)
class PaperQuote:
    """Top of book at one step. ``bid < ask``; ``bid <= last <= ask``; sizes are > 0."""

    symbol: str
    bid: Decimal
    ask: Decimal
    last: Decimal
    bid_size: Decimal
    ask_size: Decimal
    as_of: datetime
    step: int

    @property
    def mid(self) -> Decimal:
        return ((self.bid + self.ask) / 2).quantize(CENT, rounding=ROUND_HALF_EVEN)


def _key(seed: int) -> bytes:
    return hashlib.blake2b(str(seed).encode(), digest_size=32).digest()


@lru_cache(maxsize=8192)
def _digest(key: bytes, symbol: str, tag: str, index: int) -> bytes:
    return hashlib.blake2b(f"{symbol}|{tag}|{index}".encode(), key=key, digest_size=32).digest()


def _unit(digest: bytes, offset: int) -> Decimal:
    """A uniform value in [0, 1) from eight bytes of a digest."""
    return Decimal(int.from_bytes(digest[offset : offset + 8], "big")) / _TWO_64


def _signed(digest: bytes, offset: int) -> Decimal:
    """A uniform value in [-1, 1)."""
    return _unit(digest, offset) * 2 - 1


@lru_cache(maxsize=16384)
def _anchor(key: bytes, symbol: str, tag: str, index: int) -> Decimal:
    """A wave's anchor value: every step between two anchors reads both, so each is
    computed once (in the fixed context, whoever asks first) rather than per step."""
    with localcontext(_CTX):
        return _signed(_digest(key, symbol, tag, index), 0)


class SeededQuoteSource:
    """Deterministic quotes for a fixed universe of equities and crypto pairs (plus, for the
    benchmark only, ``synthetic_symbols`` equities ``SYM000``..)."""

    def __init__(
        self,
        seed: int,
        step_seconds: int = 1,
        *,
        step_ms: int | None = None,
        synthetic_symbols: int = 0,
    ) -> None:
        if step_seconds < 1:
            raise ValueError("step_seconds must be at least 1")
        if step_ms is not None and not 1 <= step_ms <= 60_000:
            raise ValueError("step_ms must be between 1 and 60000")
        self.seed = seed
        self.step_seconds = step_seconds
        self._key = _key(seed)
        self._step = (
            timedelta(milliseconds=step_ms)
            if step_ms is not None
            else timedelta(seconds=step_seconds)
        )
        self._universe = {**UNIVERSE, **synthetic_instruments(synthetic_symbols)}

    @classmethod
    def from_settings(cls, settings: Settings) -> SeededQuoteSource:
        return cls(
            settings.paper_seed,
            step_ms=settings.paper_market_step_ms,
            synthetic_symbols=settings.paper_bench_symbols,
        )

    @property
    def step(self) -> timedelta:
        """How long one quote stays in force."""
        return self._step

    def symbols(self) -> list[str]:
        return list(self._universe)

    def is_known(self, symbol: str) -> bool:
        return symbol in self._universe

    def instrument(self, symbol: str) -> Instrument:
        """Raises ``UnknownSymbol`` for a symbol outside the paper universe."""
        found = self._universe.get(symbol)
        if found is None:
            raise UnknownSymbol(f"the paper market does not list {symbol!r}", broker="paper")
        return found

    def asset_class(self, symbol: str) -> AssetClass:
        return self.instrument(symbol).asset_class

    def step_at(self, at: datetime) -> int:
        """The step containing ``at``; raises ``ValueError`` on a naive datetime."""
        if at.tzinfo is None:
            raise ValueError("quotes need a timezone-aware datetime")
        return (at - EPOCH) // self._step

    def quote(self, symbol: str, at: datetime) -> PaperQuote:
        """The quote in force at ``at``; raises ``UnknownSymbol`` outside the universe."""
        instrument = self.instrument(symbol)
        return self.quote_at_step(instrument, self.step_at(at))

    def quote_at_step(self, instrument: Instrument, step: int) -> PaperQuote:
        with localcontext(_CTX):
            symbol = instrument.symbol
            base = instrument.base_price
            move = (
                self._wave(symbol, "slow", step, *_SLOW)
                + self._wave(symbol, "swing", step, *_SWING)
                + _signed(_digest(self._key, symbol, "noise", step), 0) * _NOISE
            )
            mid = (base * (1 + move)).quantize(CENT)
            detail = _digest(self._key, symbol, "book", step)
            if instrument.asset_class is AssetClass.crypto:
                # Half-spread of 0.5 to 3 basis points: a few dollars on BTC, cents on ETH.
                bps = Decimal(5 + detail[0] % 26) / Decimal(100_000)
                half = max(CENT, (mid * bps).quantize(CENT))
            else:
                half = CENT * (1 + detail[0] % 3)
            bid, ask = mid - half, mid + half
            # last trades somewhere inside the spread, on a cent.
            cents = int((ask - bid) / CENT)
            last = bid + CENT * (int.from_bytes(detail[1:5], "big") % (cents + 1))
            bid_size = self._size(instrument, _unit(detail, 8))
            ask_size = self._size(instrument, _unit(detail, 16))
        return PaperQuote(
            symbol=symbol,
            bid=bid,
            ask=ask,
            last=last,
            bid_size=bid_size,
            ask_size=ask_size,
            as_of=EPOCH + self._step * step,
            step=step,
        )

    # --- what bars need: the trend and bounds on ``last`` ----------------------------------

    TREND_SEGMENT = _SWING[0]  # the trend is linear between multiples of this many steps

    def trend(self, symbol: str, step: int) -> Decimal:
        """The slow and swing components at ``step`` (the price without noise and spread)."""
        with localcontext(_CTX):
            return self._wave(symbol, "slow", step, *_SLOW) + self._wave(
                symbol, "swing", step, *_SWING
            )

    def last_bounds(
        self, instrument: Instrument, first: int, last: int
    ) -> list[tuple[int, int, Decimal, Decimal]]:
        """``[first, last]`` cut into runs within one trend segment each, with bounds on
        ``last`` at every step of the run: ``(run_first, run_last, lower, upper)``.

        The trend is linear over a closed segment, so it is extreme at the segment's ends;
        the bounds are that range plus or minus the noise, a cent of rounding and the widest
        half-spread, with a cent to spare. Loose but safe: bars use them to skip runs that
        cannot hold a high or low."""
        symbol, base, size = instrument.symbol, instrument.base_price, self.TREND_SEGMENT
        crypto = instrument.asset_class is AssetClass.crypto
        widest = Decimal(30) / Decimal(100_000)
        runs = []
        with localcontext(_CTX):
            at = first
            edge = self.trend(symbol, first // size * size)
            while at <= last:
                segment_end = (at // size + 1) * size
                next_edge = self.trend(symbol, segment_end)
                low_mid = base * (1 + min(edge, next_edge) - _NOISE) - CENT
                high_mid = base * (1 + max(edge, next_edge) + _NOISE) + CENT
                if crypto:
                    lower = low_mid * (1 - widest) - 2 * CENT
                    upper = high_mid * (1 + widest) + 2 * CENT
                else:
                    lower, upper = low_mid - 4 * CENT, high_mid + 4 * CENT
                runs.append((at, min(last, segment_end - 1), lower, upper))
                at, edge = segment_end, next_edge
        return runs

    def _wave(self, symbol: str, tag: str, step: int, period: int, amplitude: Decimal) -> Decimal:
        """Linear interpolation between hashed anchors every ``period`` steps."""
        k, into = divmod(step, period)
        a = _anchor(self._key, symbol, tag, k)
        b = _anchor(self._key, symbol, tag, k + 1)
        return (a + (b - a) * Decimal(into) / Decimal(period)) * amplitude

    @staticmethod
    def _size(instrument: Instrument, u: Decimal) -> Decimal:
        span = instrument.size_max - instrument.size_min
        size = (instrument.size_min + span * u).quantize(instrument.size_quantum)
        return max(instrument.size_min, size)
