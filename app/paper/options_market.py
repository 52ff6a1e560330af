"""The paper market's listed options: expirations, strikes and model quotes with greeks.

Deterministic like the equity quotes it is driven by (``SeededQuoteSource``): a contract's
quote is a pure function of (seed, contract, time). Listing is a pure function of the
underlying and today's date: weeklies (every Friday for eight weeks), monthlies (the third
Friday of the next six months) and quarterlies (the third Friday of March, June, September
and December within a year), with strikes around the underlying's base price at the usual
increments for its price level, so the same contracts are listed all day however the price
moves. Prices come from Black-Scholes (no dividends) on a seeded volatility surface (a base
volatility per underlying, a put skew and a term structure); the broker fakes of
``tests/fakes/`` use this module too, so every fake's chain is the same market.

Arithmetic: the model runs in binary floating point (``math``: exp, log, erf), then every
figure leaves this module as a ``Decimal`` rounded to its published precision (prices to the
cent, greeks to four places), so what the API shows is exact and reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from app.brokers.base import (
    AssetClass,
    ExpirationType,
    Greeks,
    OptionContract,
    OptionExpiration,
    OptionRight,
)
from app.brokers.errors import UnknownSymbol
from app.paper.quotes import CENT, UNIVERSE, SeededQuoteSource, _digest, _unit

# US equity options stop trading at 16:00 New York time on expiration day; the paper market
# takes 21:00 UTC (16:00 EST) all year round, so expiry needs no time-zone database.
EXPIRY_TIME_UTC = time(21, 0, tzinfo=UTC)
RISK_FREE_RATE = 0.04
_YEAR_SECONDS = 365.0 * 24 * 3600
_MIN_YEARS = 1.0 / (365 * 24 * 60)  # one minute: the model needs T > 0
_GREEK_PLACES = Decimal("0.0001")
_WEEKLIES = 8
_MONTHLIES = 6


@dataclass(frozen=True, slots=True)
class OptionModelQuote:
    """A contract's model quote at one time: bid < ask on the cent, ``mark`` their mid."""

    contract: OptionContract
    bid: Decimal
    ask: Decimal
    last: Decimal
    mark: Decimal
    underlying_price: Decimal
    greeks: Greeks
    as_of: datetime


def _third_friday(year: int, month: int) -> date:
    first = date(year, month, 1)
    first_friday = first + timedelta(days=(4 - first.weekday()) % 7)
    return first_friday + timedelta(days=14)


def _add_months(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


def strike_increment(price: Decimal) -> Decimal:
    """The listing increment for an underlying at ``price`` (the usual exchange grid)."""
    if price < 25:
        return Decimal("0.5")
    if price < 200:
        return Decimal("2.5")
    return Decimal(5)


class SeededOptionMarket:
    """Listed contracts and model quotes for the equities of the paper universe."""

    def __init__(self, quotes: SeededQuoteSource, *, strikes_each_side: int = 20) -> None:
        self.quotes = quotes
        self.strikes_each_side = strikes_each_side

    @staticmethod
    def has_options(underlying: str) -> bool:
        found = UNIVERSE.get(underlying)
        return found is not None and found.asset_class is AssetClass.equity

    def _require_underlying(self, underlying: str) -> Decimal:
        found = UNIVERSE.get(underlying)
        if found is None or found.asset_class is not AssetClass.equity:
            raise UnknownSymbol(f"the paper market lists no options on {underlying!r}")
        return found.base_price

    def expirations(self, underlying: str, today: date) -> list[OptionExpiration]:
        """Listed expirations from ``today`` (included while it trades) onward, sorted."""
        self._require_underlying(underlying)
        found: dict[date, ExpirationType] = {}
        next_friday = today + timedelta(days=(4 - today.weekday()) % 7)
        for week in range(_WEEKLIES):
            found[next_friday + timedelta(weeks=week)] = ExpirationType.weekly
        for months in range(_MONTHLIES + 1):
            year, month = _add_months(today.year, today.month, months)
            found[_third_friday(year, month)] = ExpirationType.standard
        for months in range(13):
            year, month = _add_months(today.year, today.month, months)
            if month % 3 == 0:
                day = _third_friday(year, month)
                found[day] = ExpirationType.quarterly
        return [
            OptionExpiration(expiration=day, expiration_type=kind)
            for day, kind in sorted(found.items())
            if day >= today
        ]

    def strikes(self, underlying: str) -> list[Decimal]:
        """Strikes around the base price, ``strikes_each_side`` below and above it."""
        base = self._require_underlying(underlying)
        step = strike_increment(base)
        center = (base / step).to_integral_value(rounding=ROUND_HALF_EVEN) * step
        return [
            center + step * offset
            for offset in range(-self.strikes_each_side, self.strikes_each_side + 1)
            if center + step * offset > 0
        ]

    def contracts(self, underlying: str, expiration: date) -> list[OptionContract]:
        return [
            OptionContract(
                underlying=underlying,
                root=underlying,
                expiration=expiration,
                right=right,
                strike=strike,
            )
            for strike in self.strikes(underlying)
            for right in (OptionRight.call, OptionRight.put)
        ]

    def is_listed(self, contract: OptionContract, today: date) -> bool:
        """Is ``contract`` a listed, unexpired paper contract (root, date, strike, terms)?"""
        if not self.has_options(contract.underlying) or contract.root != contract.underlying:
            return False
        if contract.multiplier != 100:
            return False
        if contract.expiration not in {
            e.expiration for e in self.expirations(contract.underlying, today)
        }:
            return False
        return contract.strike in self.strikes(contract.underlying)

    def volatility(self, contract: OptionContract, spot: Decimal, years: float) -> float:
        """The seeded surface: base 18-45% per underlying, a put skew, a gentle term slope."""
        digest = _digest(self.quotes._key, contract.underlying, "vol", 0)
        base = 0.18 + float(_unit(digest, 0)) * 0.27
        moneyness = math.log(float(contract.strike) / float(spot))
        skew = -0.25 * moneyness + 0.35 * moneyness * moneyness
        term = 0.02 * math.exp(-years * 4)
        return max(0.05, base + skew + term)

    def quote(self, contract: OptionContract, at: datetime) -> OptionModelQuote:
        """The model quote at ``at``; raises ``UnknownSymbol`` for an unlisted underlying.

        After expiry the quote is the intrinsic value (what exercise would be worth).
        """
        self._require_underlying(contract.underlying)
        spot_quote = self.quotes.quote(contract.underlying, at)
        spot = spot_quote.mid
        expiry = datetime.combine(contract.expiration, EXPIRY_TIME_UTC)
        years = max((expiry - at).total_seconds() / _YEAR_SECONDS, _MIN_YEARS)
        sigma = self.volatility(contract, spot, years)
        price, greeks = black_scholes(
            spot=float(spot),
            strike=float(contract.strike),
            years=years,
            rate=RISK_FREE_RATE,
            sigma=sigma,
            right=contract.right,
        )
        if at >= expiry:
            price = intrinsic_value(contract, spot)
        mark = max(CENT, Decimal(price).quantize(CENT, rounding=ROUND_HALF_EVEN))
        # Half-spread: a cent, or 1.5% of the premium for dearer contracts.
        half = max(CENT, (mark * Decimal("0.015")).quantize(CENT))
        bid = max(Decimal(0), mark - half)
        ask = mark + half
        return OptionModelQuote(
            contract=contract,
            bid=bid,
            ask=ask,
            last=mark,
            mark=mark,
            underlying_price=spot,
            greeks=greeks,
            as_of=spot_quote.as_of,
        )


def intrinsic_value(contract: OptionContract, spot: Decimal) -> float:
    if contract.right is OptionRight.call:
        return float(max(Decimal(0), spot - contract.strike))
    return float(max(Decimal(0), contract.strike - spot))


def _norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _norm_pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _greek(value: float) -> Decimal:
    return Decimal(repr(value)).quantize(_GREEK_PLACES, rounding=ROUND_HALF_EVEN)


def black_scholes(
    *, spot: float, strike: float, years: float, rate: float, sigma: float, right: OptionRight
) -> tuple[float, Greeks]:
    """Price per share and greeks (theta per calendar day, vega and rho per 1 point)."""
    sqrt_t = math.sqrt(years)
    d1 = (math.log(spot / strike) + (rate + 0.5 * sigma * sigma) * years) / (sigma * sqrt_t)
    d2 = d1 - sigma * sqrt_t
    discount = math.exp(-rate * years)
    pdf = _norm_pdf(d1)
    gamma = pdf / (spot * sigma * sqrt_t)
    vega = spot * pdf * sqrt_t / 100
    if right is OptionRight.call:
        price = spot * _norm_cdf(d1) - strike * discount * _norm_cdf(d2)
        delta = _norm_cdf(d1)
        theta = -spot * pdf * sigma / (2 * sqrt_t) - rate * strike * discount * _norm_cdf(d2)
        rho = strike * years * discount * _norm_cdf(d2) / 100
    else:
        price = strike * discount * _norm_cdf(-d2) - spot * _norm_cdf(-d1)
        delta = _norm_cdf(d1) - 1
        theta = -spot * pdf * sigma / (2 * sqrt_t) + rate * strike * discount * _norm_cdf(-d2)
        rho = -strike * years * discount * _norm_cdf(-d2) / 100
    greeks = Greeks(
        delta=_greek(delta),
        gamma=_greek(gamma),
        theta=_greek(theta / 365),
        vega=_greek(vega),
        rho=_greek(rho),
        iv=_greek(sigma),
    )
    return max(price, 0.0), greeks
