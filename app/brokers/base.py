"""The adapter contract every path implements (Tier A, B, C and the paper broker).

Normalized models carry ``Decimal`` for every quantity and price and timezone-aware UTC
datetimes. Status enums are strict: a value a mapping does not know is an error
(``UnknownBrokerValue``), never guessed into something plausible.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from app.security.credentials import Credentials


class AssetClass(StrEnum):
    equity = "equity"
    option = "option"
    crypto = "crypto"
    mutual_fund = "mutual_fund"


class OrderSide(StrEnum):
    buy = "buy"
    sell = "sell"


class OrderType(StrEnum):
    market = "market"
    limit = "limit"
    stop = "stop"
    stop_limit = "stop_limit"


class TimeInForce(StrEnum):
    day = "day"
    gtc = "gtc"
    ioc = "ioc"
    fok = "fok"


class OrderStatus(StrEnum):
    pending_submit = "pending_submit"
    submitted = "submitted"
    accepted = "accepted"
    partially_filled = "partially_filled"
    filled = "filled"
    pending_cancel = "pending_cancel"
    canceled = "canceled"
    pending_replace = "pending_replace"
    replaced = "replaced"
    rejected = "rejected"
    expired = "expired"
    unknown = "unknown"


OrderListFilter = Literal["open", "closed", "all"]


class Support(StrEnum):
    """ccxt-style capability value: richer than a boolean."""

    native = "native"
    emulated = "emulated"
    unsupported = "unsupported"


class Tier(StrEnum):
    A = "A"
    B = "B"
    C = "C"
    paper = "paper"


class AuthKind(StrEnum):
    api_key = "api_key"
    oauth2 = "oauth2"
    aggregator = "aggregator"
    gateway = "gateway"
    none = "none"


# --- Options -------------------------------------------------------------------------------


class OptionRight(StrEnum):
    call = "call"
    put = "put"


class OptionStyle(StrEnum):
    american = "american"
    european = "european"


class ExpirationType(StrEnum):
    standard = "standard"  # the monthly: third Friday
    weekly = "weekly"
    quarterly = "quarterly"
    end_of_month = "end_of_month"
    other = "other"


class PositionEffect(StrEnum):
    """Whether an order opens or closes a position (a sell that opens is a short sale)."""

    open = "open"
    close = "close"


class PriceEffect(StrEnum):
    """The direction of a net price: the account pays (debit), receives (credit) or neither."""

    debit = "debit"
    credit = "credit"
    even = "even"


class InvalidOptionSymbol(ValueError):
    """The text is not an OCC option symbol (the API answers 422 ``invalid_option_symbol``)."""


# OCC symbology (OCC "Symbology Initiative" / https://www.theocc.com/): a root of 1-6
# characters, YYMMDD, C or P, and the strike times 1000 in 8 digits. On the wire the root is
# padded with spaces to 6 characters (tastytrade, Schwab) or not (Alpaca, Tradier).
_OCC = re.compile(
    r"^(?P<root>[A-Z][A-Z0-9.]{0,5}) *(?P<date>\d{6})(?P<right>[CP])(?P<strike>\d{8})$"
)
_STRIKE_SCALE = Decimal(1000)


@dataclass(frozen=True, slots=True)
class OptionContract:
    """One listed option contract, whatever broker lists it.

    ``symbol`` (the canonical form the API answers with) is the unpadded OCC symbol
    (``AAPL261218C00150000``): no spaces, so it is safe in a URL path. ``occ_padded`` is the
    21-character form. ``underlying`` is the instrument the contract delivers or settles on;
    it equals ``root`` except for roots such as SPXW (underlying SPX) that a broker reports.
    ``multiplier`` is the number of underlying units per contract (100 unless adjusted).
    """

    underlying: str
    root: str
    expiration: date
    right: OptionRight
    strike: Decimal
    multiplier: Decimal = Decimal(100)
    style: OptionStyle = OptionStyle.american

    @property
    def symbol(self) -> str:
        return f"{self.root}{self._occ_tail()}"

    @property
    def occ_padded(self) -> str:
        return f"{self.root:<6}{self._occ_tail()}"

    def _occ_tail(self) -> str:
        millis = self.strike * _STRIKE_SCALE
        return (
            f"{self.expiration:%y%m%d}{'C' if self.right is OptionRight.call else 'P'}"
            f"{int(millis):08d}"
        )

    @classmethod
    def parse(
        cls,
        text: str,
        *,
        underlying: str | None = None,
        multiplier: Decimal = Decimal(100),
        style: OptionStyle = OptionStyle.american,
    ) -> OptionContract:
        """Parse an OCC symbol, padded or unpadded; raise ``InvalidOptionSymbol`` otherwise.

        Expiry in the past is not checked here (it depends on the clock): see ``is_expired``.
        """
        match = _OCC.match(text.strip().upper()) if len(text) <= 32 else None
        if match is None:
            raise InvalidOptionSymbol(f"{text!r} is not an OCC option symbol")
        digits = match["date"]
        try:
            expiration = date(2000 + int(digits[:2]), int(digits[2:4]), int(digits[4:]))
        except ValueError as exc:
            raise InvalidOptionSymbol(f"{text!r} has no valid expiration date") from exc
        strike = (Decimal(match["strike"]) / _STRIKE_SCALE).normalize()
        if strike <= 0:
            raise InvalidOptionSymbol(f"{text!r} has a zero strike")
        if strike == strike.to_integral_value():
            strike = strike.quantize(Decimal(1))
        root = match["root"]
        return cls(
            underlying=underlying or root,
            root=root,
            expiration=expiration,
            right=OptionRight.call if match["right"] == "C" else OptionRight.put,
            strike=strike,
            multiplier=multiplier,
            style=style,
        )

    def is_expired(self, today: date) -> bool:
        """Expired once its expiration day is over (the contract trades on that day)."""
        return self.expiration < today


def is_option_symbol(text: str) -> bool:
    """Does ``text`` look like an OCC option symbol (padded or not)?"""
    return len(text) <= 32 and _OCC.match(text.strip().upper()) is not None


@dataclass(frozen=True, slots=True)
class OptionCapabilities:
    """What a broker path offers for options, beyond ``asset_classes[option]`` (single leg).

    ``max_legs`` bounds a multi-leg order; ``combo_order_types`` and ``combo_time_in_force``
    are what the broker takes for combos (Alpaca mleg: market and limit only).
    ``chain``/``expirations``: discovery endpoints (``unsupported`` answers 422
    ``options_chain_unsupported``, never an empty list). ``exercise``: the account holder can
    instruct an exercise or do-not-exercise (Alpaca).
    """

    chain: Support = Support.unsupported
    expirations: Support = Support.unsupported
    max_legs: int = 1
    combo_order_types: frozenset[OrderType] = frozenset()
    combo_time_in_force: frozenset[TimeInForce] = frozenset()
    greeks: Support = Support.unsupported
    exercise: Support = Support.unsupported
    # Net price directions the broker takes for combos (tastytrade has no "even").
    combo_price_effects: frozenset[PriceEffect] = frozenset(PriceEffect)
    # Order types and durations the broker takes for single-leg option orders, where they
    # are narrower than for equities (Alpaca: market and limit, day and gtc). None: as
    # ``Capabilities.order_types`` / ``time_in_force``.
    single_order_types: frozenset[OrderType] | None = None
    single_time_in_force: frozenset[TimeInForce] | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "combo_price_effects": sorted(e.value for e in self.combo_price_effects),
            "single_order_types": None
            if self.single_order_types is None
            else sorted(t.value for t in self.single_order_types),
            "single_time_in_force": None
            if self.single_time_in_force is None
            else sorted(t.value for t in self.single_time_in_force),
            "chain": self.chain.value,
            "expirations": self.expirations.value,
            "max_legs": self.max_legs,
            "combo_order_types": sorted(t.value for t in self.combo_order_types),
            "combo_time_in_force": sorted(t.value for t in self.combo_time_in_force),
            "greeks": self.greeks.value,
            "exercise": self.exercise.value,
        }


NO_OPTIONS = OptionCapabilities()


@dataclass(frozen=True, slots=True)
class Greeks:
    """Sensitivities per contract share; ``iv`` as a fraction (0.25 = 25%, Schwab's percent
    is divided by 100 in its mapping)."""

    delta: Decimal | None
    gamma: Decimal | None
    theta: Decimal | None
    vega: Decimal | None
    rho: Decimal | None
    iv: Decimal | None


@dataclass(frozen=True, slots=True)
class OptionExpiration:
    expiration: date
    expiration_type: ExpirationType


@dataclass(frozen=True, slots=True)
class OptionChainQuery:
    """A chain request. Adapters may ignore filters their broker cannot apply: the service
    applies every filter again to what comes back."""

    underlying: str
    expiration: date | None = None
    right: OptionRight | None = None
    strike_gte: Decimal | None = None
    strike_lte: Decimal | None = None


@dataclass(frozen=True, slots=True)
class OptionQuote:
    """One contract of a chain with its quote. ``source`` names where the quote (and greeks)
    came from: ``broker``, a vendor the broker names (``orats``), or ``model`` (paper)."""

    contract: OptionContract
    bid: Decimal | None
    ask: Decimal | None
    last: Decimal | None
    open_interest: int | None
    greeks: Greeks | None
    source: str
    as_of: datetime


@dataclass(frozen=True, slots=True)
class OrderLeg:
    """One leg of a multi-leg order. ``symbol`` is the canonical option symbol (or an equity
    symbol for a stock leg where the broker allows one); ``ratio`` is per strategy unit."""

    symbol: str
    side: OrderSide
    ratio: int
    position_effect: PositionEffect


@dataclass(frozen=True, slots=True)
class BrokerOrderLeg:
    """A leg as the broker reports it, with its own fills."""

    symbol: str
    side: OrderSide
    ratio: int
    position_effect: PositionEffect | None
    filled_quantity: Decimal
    avg_fill_price: Decimal | None
    broker_leg_id: str | None = None


class PreviewSource(StrEnum):
    broker = "broker"  # the broker's own preview
    estimate = "estimate"  # the gateway's estimate from quotes (the broker has no preview)


@dataclass(frozen=True, slots=True)
class OrderPreview:
    """What an order would do, placing nothing.

    ``estimated_cash_change`` is signed from the account's side (negative: cash leaves it)
    and agrees with ``direction``; ``buying_power_change`` likewise (None where unknown).
    ``rejections`` non-empty means the broker would refuse the order (Schwab answers 200
    with rejects).
    """

    estimated_cash_change: Decimal
    direction: PriceEffect
    buying_power_change: Decimal | None
    fees: Decimal
    warnings: tuple[str, ...]
    rejections: tuple[str, ...]
    source: PreviewSource


# --- Market data -------------------------------------------------------------------------


class BarInterval(StrEnum):
    m1 = "1m"
    m5 = "5m"
    m15 = "15m"
    h1 = "1h"
    d1 = "1d"

    @property
    def seconds(self) -> int:
        return _BAR_SECONDS[self]


_BAR_SECONDS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86400}


class MarketDataSource(StrEnum):
    """Where a market-data event came from: the broker's stream, the gateway's aggregation
    of smaller bars or trades (a bar interval the broker lacks), or a REST poll (brokers
    without a stream)."""

    stream = "stream"
    aggregated = "aggregated"
    poll = "poll"
    history = "history"  # a bar from the broker's history endpoint (REST bars, backfill)


class MarketChannel(StrEnum):
    quotes = "quotes"
    trades = "trades"
    bars = "bars"
    greeks = "greeks"


@dataclass(frozen=True, slots=True)
class MarketQuote:
    """Top of book. ``ts`` is the exchange's (or broker's) time of the quote."""

    symbol: str
    bid: Decimal | None
    ask: Decimal | None
    bid_size: Decimal | None
    ask_size: Decimal | None
    ts: datetime
    source: MarketDataSource


@dataclass(frozen=True, slots=True)
class MarketTrade:
    symbol: str
    price: Decimal
    size: Decimal
    ts: datetime
    source: MarketDataSource


@dataclass(frozen=True, slots=True)
class Bar:
    """OHLCV over ``[start, start + interval)``. ``final`` is False while the bar is still
    forming (a live bar updated in place); a final bar never changes again."""

    symbol: str
    interval: BarInterval
    start: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    vwap: Decimal | None
    trade_count: int | None
    final: bool
    source: MarketDataSource


@dataclass(frozen=True, slots=True)
class GreeksUpdate:
    symbol: str  # the canonical option symbol
    greeks: Greeks
    underlying_price: Decimal | None
    ts: datetime
    source: MarketDataSource


@dataclass(frozen=True, slots=True)
class MarketGap:
    """The upstream session was lost: events may be missing from ``since`` until the
    matching ``MarketResubscribed``. Subscribers are told; a hole is never silent."""

    reason: str
    since: datetime


@dataclass(frozen=True, slots=True)
class MarketResubscribed:
    """The upstream session is back and every wanted symbol is subscribed again."""

    at: datetime


MarketEvent = MarketQuote | MarketTrade | Bar | GreeksUpdate | MarketGap | MarketResubscribed


@dataclass(frozen=True, slots=True)
class MarketDataSubscription:
    """A declarative set of wanted market data (the union of local subscribers' wishes, or
    one subscriber's). Set algebra, so an upstream session can diff what it has against what
    is wanted and add or remove in its broker's own way."""

    quotes: frozenset[str] = frozenset()
    trades: frozenset[str] = frozenset()
    bars: frozenset[tuple[BarInterval, str]] = frozenset()
    greeks: frozenset[str] = frozenset()

    def __or__(self, other: MarketDataSubscription) -> MarketDataSubscription:
        return MarketDataSubscription(
            self.quotes | other.quotes,
            self.trades | other.trades,
            self.bars | other.bars,
            self.greeks | other.greeks,
        )

    def __sub__(self, other: MarketDataSubscription) -> MarketDataSubscription:
        return MarketDataSubscription(
            self.quotes - other.quotes,
            self.trades - other.trades,
            self.bars - other.bars,
            self.greeks - other.greeks,
        )

    @property
    def symbols(self) -> frozenset[str]:
        """Every instrument named, whatever the channel (what per-symbol caps count)."""
        return self.quotes | self.trades | {s for _, s in self.bars} | self.greeks

    def is_empty(self) -> bool:
        return not (self.quotes or self.trades or self.bars or self.greeks)


@dataclass(frozen=True, slots=True)
class MarketDataCapabilities:
    """What a broker path streams, and its limits (data, never ``if broker == ...``).

    ``bar_intervals``: intervals the broker streams natively; others are aggregated by the
    gateway from the smallest native one (or from trades). ``max_symbols``: the plan's
    symbol cap per upstream session (Alpaca IEX 30); ``max_sessions``: upstream connections
    allowed per credential (Alpaca 1 per endpoint, Tradier 1 session). ``poll_seconds`` is
    set for brokers without a stream (a REST poll behind the same subscription, within the
    broker's rate budget). ``history``: REST bars.
    """

    quotes: Support = Support.unsupported
    trades: Support = Support.unsupported
    bars: Support = Support.unsupported
    greeks: Support = Support.unsupported
    bar_intervals: frozenset[BarInterval] = frozenset()
    history: Support = Support.unsupported
    history_intervals: frozenset[BarInterval] = frozenset()
    max_symbols: int | None = None
    max_sessions: int | None = 1
    poll_seconds: float | None = None

    def supports(self, channel: MarketChannel) -> bool:
        value: Support = getattr(self, channel.value)
        return value is not Support.unsupported

    def as_dict(self) -> dict[str, object]:
        return {
            "quotes": self.quotes.value,
            "trades": self.trades.value,
            "bars": self.bars.value,
            "greeks": self.greeks.value,
            "bar_intervals": sorted(i.value for i in self.bar_intervals),
            "history": self.history.value,
            "history_intervals": sorted(i.value for i in self.history_intervals),
            "max_symbols": self.max_symbols,
            "max_sessions": self.max_sessions,
            "poll_seconds": self.poll_seconds,
        }


NO_MARKET_DATA = MarketDataCapabilities()


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What one broker path supports; the pre-trade check reads only this."""

    asset_classes: dict[AssetClass, Support]
    order_types: dict[OrderType, Support]
    time_in_force: dict[TimeInForce, Support]
    fractional: Support
    extended_hours: Support
    short_selling: Support
    multi_leg: Support
    modify: Support
    order_stream: Support
    place_orders: bool = True
    # Does the broker take our client order id (and find an order by it)? ``unsupported``
    # (Schwab): an order whose submit outcome is unknown is found by its fingerprint
    # (``FingerprintLookup``) instead.
    client_order_ids: Support = Support.native
    # Options (see ``OptionCapabilities``): single-leg option orders are
    # ``asset_classes[option]``; ``multi_leg`` above says whether combos are taken at all.
    options: OptionCapabilities = field(default_factory=lambda: NO_OPTIONS)
    # A preview of an order (cash and buying-power effect, fees, warnings) without placing it:
    # ``native`` is the broker's own (Tradier ``preview=true``, tastytrade dry-run, Schwab
    # ``previewOrder``), ``emulated`` is the gateway's estimate from quotes (marked so).
    preview: Support = Support.emulated
    market_data: MarketDataCapabilities = field(default_factory=lambda: NO_MARKET_DATA)
    # Dollar-amount orders (``OrderRequest.notional``): on market orders, and on limit
    # orders where ``notional_limit`` says so.
    notional: Support = Support.unsupported
    notional_limit: Support = Support.unsupported

    def supports_asset(self, asset_class: AssetClass) -> bool:
        return self.asset_classes.get(asset_class, Support.unsupported) is not Support.unsupported

    def as_dict(self) -> dict[str, object]:
        return {
            "asset_classes": {k.value: v.value for k, v in self.asset_classes.items()},
            "order_types": {k.value: v.value for k, v in self.order_types.items()},
            "time_in_force": {k.value: v.value for k, v in self.time_in_force.items()},
            "fractional": self.fractional.value,
            "extended_hours": self.extended_hours.value,
            "short_selling": self.short_selling.value,
            "multi_leg": self.multi_leg.value,
            "modify": self.modify.value,
            "order_stream": self.order_stream.value,
            "place_orders": self.place_orders,
            "client_order_ids": self.client_order_ids.value,
            "options": self.options.as_dict(),
            "preview": self.preview.value,
            "market_data": self.market_data.as_dict(),
            "notional": self.notional.value,
            "notional_limit": self.notional_limit.value,
        }


@dataclass(frozen=True, slots=True)
class BrokerAccount:
    broker_account_id: str
    name: str
    number_masked: str
    currency: str = "USD"


@dataclass(frozen=True, slots=True)
class Balances:
    cash: Decimal
    equity: Decimal
    buying_power: Decimal
    currency: str
    as_of: datetime


@dataclass(frozen=True, slots=True)
class Position:
    symbol: str
    asset_class: AssetClass
    quantity: Decimal
    avg_cost: Decimal
    current_price: Decimal
    market_value: Decimal
    unrealized_pl: Decimal
    as_of: datetime
    # Options: the contract (``quantity`` signed, negative = short; ``market_value`` =
    # price x quantity x multiplier; long and short legs are separate positions).
    contract: OptionContract | None = None


@dataclass(frozen=True, slots=True)
class Quote:
    symbol: str
    bid: Decimal
    ask: Decimal
    last: Decimal
    as_of: datetime


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """An order as the gateway sends it; ``client_order_id`` is ours and stable across retries."""

    client_order_id: str
    symbol: str
    side: OrderSide
    quantity: Decimal
    order_type: OrderType
    time_in_force: TimeInForce
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    extended_hours: bool = False
    # Options and short sales: required for an option order, optional for equities
    # (sell + open is a short sale, buy + close a cover).
    position_effect: PositionEffect | None = None
    # Multi-leg: ``legs`` (2 or more), ``quantity`` in strategy units, ``limit_price``
    # unsigned with ``price_effect`` saying its direction. ``symbol`` is then the legs'
    # underlying and ``side`` is ``sell`` for a credit and ``buy`` otherwise.
    legs: tuple[OrderLeg, ...] = ()
    price_effect: PriceEffect | None = None
    # Dollar-amount orders: the amount to spend (buy) or raise (sell) instead of a quantity;
    # ``quantity`` is then 0 (unknown until filled). Only where ``capabilities.notional``.
    notional: Decimal | None = None

    @property
    def is_multi_leg(self) -> bool:
        return bool(self.legs)

    @property
    def is_notional(self) -> bool:
        return self.notional is not None


@dataclass(frozen=True, slots=True)
class OrderChanges:
    quantity: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: TimeInForce | None = None

    def is_empty(self) -> bool:
        return (
            self.quantity is None
            and self.limit_price is None
            and self.stop_price is None
            and self.time_in_force is None
        )


@dataclass(frozen=True, slots=True)
class BrokerOrder:
    """An order as the broker reports it, already mapped to the unified vocabulary."""

    broker_order_id: str
    client_order_id: str | None
    symbol: str
    side: OrderSide
    quantity: Decimal
    filled_quantity: Decimal
    avg_fill_price: Decimal | None
    order_type: OrderType
    time_in_force: TimeInForce
    status: OrderStatus
    limit_price: Decimal | None
    stop_price: Decimal | None
    created_at: datetime
    updated_at: datetime
    reject_reason: str | None = None
    replaced_by: str | None = None
    replaces: str | None = None
    position_effect: PositionEffect | None = None
    legs: tuple[BrokerOrderLeg, ...] = ()
    price_effect: PriceEffect | None = None
    # A dollar-amount order: ``quantity`` is what the broker reports (0 until it is known).
    notional: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Transaction:
    transaction_id: str
    type: str
    occurred_at: datetime
    amount: Decimal
    symbol: str | None = None
    quantity: Decimal | None = None
    price: Decimal | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    """One upstream order change, from a broker stream, a poller or the paper engine."""

    account_ref: str
    order: BrokerOrder
    occurred_at: datetime
    fills: tuple[Fill, ...] = field(default_factory=tuple)
    # An order the broker made itself on the account's behalf, not one we placed: an option
    # expiring worthless, an exercise or an assignment (``option_expiration``,
    # ``option_exercise``, ``option_assignment``, ``option_cash_settlement``). The gateway
    # records it as an order of the account and tells the subscribers.
    lifecycle: str | None = None


@dataclass(frozen=True, slots=True)
class Fill:
    fill_id: str
    quantity: Decimal
    price: Decimal
    occurred_at: datetime
    # The leg this fill belongs to (its symbol), for a multi-leg order; None otherwise.
    leg_symbol: str | None = None


@dataclass(frozen=True, slots=True)
class OrderFingerprint:
    """What identifies an order at a broker that takes no client order id.

    ``submitted_at`` is when we committed the intent, just before the broker call: the
    broker entered the order (if it did) shortly after it.
    """

    symbol: str
    side: OrderSide
    quantity: Decimal
    order_type: OrderType
    time_in_force: TimeInForce
    limit_price: Decimal | None
    stop_price: Decimal | None
    submitted_at: datetime
    # Multi-leg: the legs (symbol, side, ratio, position effect) and the net price's
    # direction, so two combos differing only in one leg are told apart.
    legs: tuple[OrderLeg, ...] = ()
    price_effect: PriceEffect | None = None

    @classmethod
    def of(cls, order: OrderRequest, submitted_at: datetime) -> OrderFingerprint:
        return cls(
            symbol=order.symbol,
            side=order.side,
            quantity=order.quantity,
            order_type=order.order_type,
            time_in_force=order.time_in_force,
            limit_price=order.limit_price,
            stop_price=order.stop_price,
            submitted_at=submitted_at,
            legs=order.legs,
            price_effect=order.price_effect,
        )

    def matches(self, order: BrokerOrder) -> bool:
        """Same instrument, side, size, type, duration and prices (entry time is separate);
        for a multi-leg order also the same legs (in any order; a leg's position effect where
        the broker reports one) and price effect."""
        legs = sorted(self.legs, key=lambda g: (g.symbol, g.side.value, g.ratio))
        seen = sorted(order.legs, key=lambda g: (g.symbol, g.side.value, g.ratio))
        same_legs = len(legs) == len(seen) and all(
            (a.symbol, a.side, a.ratio) == (b.symbol, b.side, b.ratio)
            and b.position_effect in (None, a.position_effect)
            for a, b in zip(legs, seen, strict=False)
        )
        return (
            same_legs
            and (not self.legs or order.price_effect is self.price_effect)
            and order.symbol == self.symbol
            and order.side is self.side
            and order.quantity == self.quantity
            and order.order_type is self.order_type
            and order.time_in_force is self.time_in_force
            and order.limit_price == self.limit_price
            and order.stop_price == self.stop_price
        )


@runtime_checkable
class FingerprintLookup(Protocol):
    """Adapters of brokers without client order ids (``client_order_ids = unsupported``).

    ``claimed`` holds broker order ids already adopted by other orders of ours, which are
    never candidates. The adapter chooses the window around ``submitted_at`` (it knows its
    broker's clock and latency); when several orders match it returns the one entered
    closest after the submit, so identical orders submitted apart are told apart by time.
    """

    fingerprint_window: timedelta

    async def find_order_by_fingerprint(
        self, account_ref: str, fingerprint: OrderFingerprint, claimed: frozenset[str]
    ) -> BrokerOrder | None: ...


# --- Tier B: aggregators (SnapTrade) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PortalLink:
    """Where to send the user's browser to link (or re-link) a brokerage at the aggregator."""

    url: str
    expires_at: datetime
    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class InstitutionLink:
    """One brokerage login held by the aggregator (SnapTrade: a brokerage authorization).

    ``trading`` is the aggregator's own word that orders may be placed through this link
    (a trade-type link at a brokerage that allows trading); a read-only link (Fidelity)
    is ``False`` and its accounts never take orders.
    """

    link_id: str
    institution: str
    institution_slug: str
    disabled: bool
    trading: bool
    accounts: tuple[BrokerAccount, ...] = ()
    disabled_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AggregatorEvent:
    """A verified notification from an aggregator (a webhook), already parsed.

    ``refresh``: the aggregator says the user's links, accounts or orders may have changed
    (the broker package decides which of its event types mean that).
    """

    event_id: str
    event_type: str
    user_ref: str
    occurred_at: datetime
    refresh: bool
    link_id: str | None = None
    account_ref: str | None = None


@runtime_checkable
class AggregatorAdapter(Protocol):
    """What a Tier B (aggregator) adapter adds to ``BrokerAdapter``.

    The aggregator keeps the brokerage credentials; we keep one aggregator user per
    connection (its secret sealed in the vault). ``register_user`` works on an adapter
    built without credentials (partner keys only) and returns the credentials to seal;
    every other method acts for the adapter's own user.
    """

    async def register_user(self, user_ref: str) -> Credentials: ...

    async def delete_user(self) -> None: ...

    async def portal_link(
        self, *, institution: str | None, reconnect: str | None
    ) -> PortalLink: ...

    async def links(self) -> list[InstitutionLink]: ...

    async def close(self) -> None: ...


@runtime_checkable
class BrokerAdapter(Protocol):
    """One connection's view of one broker. Instances are bound to decrypted credentials.

    Errors are raised from ``app.brokers.errors``: ``Rejected`` when the broker
    definitively refused, ``Transient`` when nothing happened and a retry is safe,
    ``OutcomeUnknown`` when a write may or may not have happened (never resent blindly),
    ``AuthenticationFailed`` when the credentials stopped working, ``NotSupported`` for
    operations this path does not have.

    Optional: ``async def revoke(self) -> RevokeOutcome`` (``SupportsRevoke`` below), called
    through ``revoke_credential`` when a connection is disconnected.
    """

    slug: str
    capabilities: Capabilities

    async def list_accounts(self) -> list[BrokerAccount]: ...

    async def get_balances(self, account_ref: str) -> Balances: ...

    async def get_positions(self, account_ref: str) -> list[Position]: ...

    async def get_position(self, account_ref: str, symbol: str) -> Position | None: ...

    async def check_symbol(self, symbol: str) -> None:
        """Raise ``UnknownSymbol`` when the broker does not list ``symbol``.

        Called before the order row is written, so an unknown symbol leaves nothing behind.
        """
        ...

    async def place_order(self, account_ref: str, order: OrderRequest) -> BrokerOrder: ...

    async def modify_order(
        self, account_ref: str, broker_order_id: str, changes: OrderChanges
    ) -> BrokerOrder: ...

    async def cancel_order(self, account_ref: str, broker_order_id: str) -> BrokerOrder: ...

    async def get_order(self, account_ref: str, broker_order_id: str) -> BrokerOrder: ...

    async def find_order_by_client_id(
        self, account_ref: str, client_order_id: str
    ) -> BrokerOrder | None: ...

    async def list_orders(
        self, account_ref: str, status: OrderListFilter, limit: int
    ) -> list[BrokerOrder]: ...

    async def order_history(
        self, account_ref: str, start: datetime | None, end: datetime | None, symbol: str | None
    ) -> list[BrokerOrder]: ...

    async def get_transactions(
        self, account_ref: str, start: datetime | None, end: datetime | None, type_: str | None
    ) -> list[Transaction]: ...

    async def get_quotes(self, symbols: list[str]) -> dict[str, Quote]: ...

    def stream_order_updates(self, account_ref: str) -> AsyncIterator[OrderUpdate] | None: ...

    async def close(self) -> None: ...


@runtime_checkable
class SupportsSharedOrderStream(Protocol):
    """The optional part of the adapter contract for brokers whose order stream serves every
    account of one credential, and that allow one such stream at a time (Tradier: one
    streaming session per user). The supervisor then runs one stream per connection, not
    one per account (``BrokerSpec.shared_order_stream``).

    Yields the updates of ``account_refs`` (tagged with their account), after a catch-up of
    each of them; raises like ``stream_order_updates``.
    """

    def stream_accounts_order_updates(
        self, account_refs: Sequence[str]
    ) -> AsyncIterator[OrderUpdate]: ...


@runtime_checkable
class SupportsOptionChains(Protocol):
    """The optional part of the contract for brokers with option discovery
    (``capabilities.options.chain``/``expirations`` not ``unsupported``).

    Raises like any read (``Transient``, ``RateLimitExceeded``, ``UnknownSymbol`` for an
    underlying the broker does not list).
    """

    async def list_option_expirations(self, underlying: str) -> list[OptionExpiration]: ...

    async def get_option_chain(self, query: OptionChainQuery) -> list[OptionQuote]: ...


@runtime_checkable
class SupportsOrderPreview(Protocol):
    """The optional part of the contract for brokers with their own order preview
    (``capabilities.preview`` is ``native``). Places nothing; a broker refusal is returned in
    ``OrderPreview.rejections``, not raised, unless the request itself was refused.
    """

    async def preview_order(self, account_ref: str, order: OrderRequest) -> OrderPreview: ...


@runtime_checkable
class SupportsOrderCheck(Protocol):
    """The optional part of the contract for brokers whose capabilities depend on the account
    (SnapTrade: whether the linked brokerage trades options). Called, like ``check_symbol``,
    before the order row is written; raises ``UnsupportedOrder`` (or ``UnknownSymbol``) for
    an order this account cannot take, with reads only and no trading request.
    """

    async def check_order(self, account_ref: str, order: OrderRequest) -> None: ...


@runtime_checkable
class SupportsOptionExercise(Protocol):
    """The optional part of the contract for brokers that take exercise instructions from
    the account holder (``capabilities.options.exercise`` is ``native``; Alpaca). ``symbol``
    is a held contract's OCC symbol. Raises like an order call (``Rejected`` when there is
    no long position to exercise, ...)."""

    async def exercise_option(self, account_ref: str, symbol: str) -> None: ...

    async def do_not_exercise(self, account_ref: str, symbol: str) -> None: ...


@runtime_checkable
class MarketDataSession(Protocol):
    """One upstream market-data session (one broker connection or poller) for one
    credential, shared by every local subscriber entitled to it.

    ``update`` states the whole wanted set; the session diffs it against what it has and
    subscribes and unsubscribes in its broker's way (set-replacing or additive). Raises
    ``MarketDataLimit`` (a ``Rejected``) when the set exceeds the broker's caps, having
    changed nothing. ``events`` yields until ``close``; across an upstream reconnect it
    yields ``MarketGap`` then ``MarketResubscribed`` (after resubscribing everything),
    never a silent hole. Transport errors are retried inside with backoff.
    """

    async def update(self, wanted: MarketDataSubscription) -> None: ...

    def events(self) -> AsyncIterator[MarketEvent]: ...

    async def close(self) -> None: ...


@runtime_checkable
class SupportsMarketData(Protocol):
    """The optional part of the contract for brokers that stream market data (or are
    polled for it): ``capabilities.market_data`` says what and within which limits."""

    def market_data_session(self) -> MarketDataSession: ...


@runtime_checkable
class SupportsBarHistory(Protocol):
    """REST bars from the broker's history endpoint, oldest first, at most ``limit``, with
    ``start <= bar.start < end``. Raises ``NotSupported`` for an interval or range the
    broker cannot serve."""

    async def get_bars(
        self, symbol: str, interval: BarInterval, start: datetime, end: datetime, limit: int
    ) -> list[Bar]: ...


class RevokeOutcome(StrEnum):
    """What a broker-side revocation achieved."""

    revoked = "revoked"  # the broker invalidated the credential
    unsupported = "unsupported"  # the broker offers no revoke call for this kind of credential


@runtime_checkable
class SupportsRevoke(Protocol):
    """The optional part of the adapter contract: invalidate the credential at the broker.

    Adapters whose broker has a token-revocation endpoint (OAuth 2.0 token revocation,
    RFC 7009, and its broker variants) implement ``revoke``; it raises from
    ``app.brokers.errors`` like any call (``Transient``, ``AuthenticationFailed`` when the
    credential is already dead, ...). Adapters without one need not define it:
    ``revoke_credential`` answers ``unsupported`` for them.
    """

    async def revoke(self) -> RevokeOutcome: ...


async def revoke_credential(adapter: BrokerAdapter) -> RevokeOutcome:
    """Revoke ``adapter``'s credential at the broker where it can be; a no-op otherwise."""
    if isinstance(adapter, SupportsRevoke):
        return await adapter.revoke()
    return RevokeOutcome.unsupported
