"""Live market data: one upstream session per credential, fanned out to local subscribers.

Who may see what (licensing)
    Market data is licensed to the credential that fetched it. An upstream session is
    keyed by ``upstream_key``: ``<broker>:<connection id>`` for a user's own connection
    (BYOB and paper), so only subscriptions made through that user's accounts of that
    connection ever join it; ``<broker>:platform`` for the platform's default connection,
    whose data every user of the deployment may see, so all of them share one session.
    The account a subscriber names is checked to be theirs (another user's answers exactly
    like a missing one: ``not_found``) before its connection is looked at; nothing a client
    sends can name an upstream key.

One upstream, many subscribers
    Each upstream keeps, per route (``quotes``/``trades``/``greeks`` x symbol, ``bars`` x
    interval x symbol), the set of local subscribers that want it: the set's size is the
    reference count. The upstream's wanted set is the union of the routes; a subscribe that
    adds routes, or an unsubscribe that empties one, hands the new union to
    ``MarketDataSession.update`` (the adapter diffs it in its broker's way). The last
    unsubscribe of a route releases it upstream; the last of all closes the session.
    Updates of one upstream are serialised; a refused update (``MarketDataLimit``,
    ``UnknownSymbol``, a transport failure) changes nothing for anybody.

Caps
    ``MarketDataCapabilities.max_symbols`` bounds the union per upstream: a subscribe that
    would exceed it gets ``too_many_symbols`` and the others keep everything they had. A
    deployment-wide per-connection cap (``market_max_symbols``) bounds one WebSocket.
    ``max_sessions`` (upstream connections per credential) is respected per instance by
    holding exactly one session per key; see the README on several instances.

Faults
    An upstream session that yields ``MarketGap``/``MarketResubscribed`` has them relayed
    to each of its subscribers, per account they subscribed through. A session whose event
    stream ends or fails is replaced here (gap, backoff, new session, the full union, then
    resubscribed): never a silent hole. A session refused with ``AuthenticationFailed``
    (an OAuth access token is fixed for a session's life, Schwab's for 30 minutes) is
    replaced through a new adapter built from the connection's current credential,
    refreshed first if due; a connection no longer usable ends its subscriptions as a
    revocation does (``connection_broken``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from prometheus_client import Counter, Gauge

from app import errors
from app.brokers import errors as broker_errors
from app.brokers.base import (
    Bar,
    BarInterval,
    GreeksUpdate,
    InvalidOptionSymbol,
    MarketChannel,
    MarketDataCapabilities,
    MarketDataSession,
    MarketDataSubscription,
    MarketEvent,
    MarketGap,
    MarketQuote,
    MarketResubscribed,
    MarketTrade,
    OptionContract,
    Support,
    SupportsBarHistory,
    SupportsMarketData,
)
from app.brokers.market_data.bars import BarSeam, aggregate, stitch, window_end, window_start
from app.brokers.symbols import asset_class_of
from app.db.models import Connection
from app.db.repositories.connections import AccountRepository, ConnectionRepository
from app.services.context import ServiceContext
from app.streaming.market import (
    MarketFeed,
    bar_frame,
    gap_frame,
    greeks_frame,
    quote_frame,
    resubscribed_frame,
    subscribed_frame,
    trade_frame,
)
from app.streaming.protocol import ErrorCode, error_message, format_timestamp

log = logging.getLogger(__name__)

UPSTREAM_SESSIONS = Gauge(
    "brokerage_market_upstream_sessions", "Open upstream market-data sessions", ["broker"]
)
SYMBOLS = Gauge(
    "brokerage_market_symbols_subscribed",
    "Symbols subscribed upstream (any channel), summed over sessions",
    ["broker"],
)
DELIVERIES = Counter(
    "brokerage_market_deliveries_total",
    "Market-data frames handed to subscriber queues (a slow reader's may later be dropped)",
    ["broker"],
)
CONFLATIONS = Counter(
    "brokerage_market_conflations_total",
    "Quotes replaced by a newer one before a slow subscriber read them",
    ["broker"],
)
DROPPED = Counter(
    "brokerage_market_dropped_total",
    "Trades/bars/greeks dropped for a slow subscriber (all announced by market.resync)",
    ["broker"],
)
RECONNECTS = Counter(
    "brokerage_market_reconnects_total",
    "Upstream market-data reconnects (each relayed as market.gap then market.resubscribed)",
    ["broker"],
)
SUBSCRIBE_ERRORS = Counter(
    "brokerage_market_subscribe_errors_total", "Refused market.subscribe requests", ["code"]
)

# Symbols: equities (BRK.B), crypto pairs (BTC-USD), OCC options (canonicalised).
_EQUITY = re.compile(r"^[A-Z][A-Z0-9.]{0,9}$")
_ROUTE = tuple[str, str, str]  # (channel, interval or "", symbol)
# Source bars read at most for one replay of an interval built from smaller history bars.
_MAX_REPLAY_SOURCE_BARS = 5000


class MarketDataError(Exception):
    """A refused subscribe/unsubscribe; ``code`` is the WebSocket ``error`` code."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def upstream_key(connection: Connection) -> str:
    """Whose licence the data is under: the platform's (shared by every user) or one
    connection's (its user's only)."""
    owner = "platform" if connection.ownership == "platform" else connection.id
    return f"{connection.broker_slug}:{owner}"


def canonical_symbol(raw: str, channel: MarketChannel) -> str:
    """The canonical symbol, or ``MarketDataError('invalid_symbol')``."""
    text = raw.strip().upper()
    if not text or len(text) > 32:
        raise MarketDataError("invalid_symbol", "a symbol is 1 to 32 characters")
    if channel is MarketChannel.greeks or (len(text) > 12 and text[-9] in "CP"):
        try:
            return OptionContract.parse(text).symbol
        except (InvalidOptionSymbol, ValueError):
            raise MarketDataError(
                "invalid_symbol",
                f"{text[:32]!r} is not an OCC option symbol"
                + (" (greeks are for options)" if channel is MarketChannel.greeks else ""),
            ) from None
    if asset_class_of(text).value == "crypto":
        return text.replace("/", "-")
    if not _EQUITY.match(text):
        raise MarketDataError("invalid_symbol", f"{text[:32]!r} is not a valid symbol")
    return text


def parse_request(
    quotes: Iterable[str],
    trades: Iterable[str],
    bars: dict[str, list[str]],
    greeks: Iterable[str],
) -> MarketDataSubscription:
    """A client message's channels as a canonical subscription (raises ``MarketDataError``)."""
    parsed_bars: set[tuple[BarInterval, str]] = set()
    for interval_text, symbols in bars.items():
        try:
            interval = BarInterval(interval_text)
        except ValueError:
            raise MarketDataError(
                "invalid_interval",
                f"bar intervals are {', '.join(i.value for i in BarInterval)}",
            ) from None
        parsed_bars.update((interval, canonical_symbol(s, MarketChannel.bars)) for s in symbols)
    return MarketDataSubscription(
        quotes=frozenset(canonical_symbol(s, MarketChannel.quotes) for s in quotes),
        trades=frozenset(canonical_symbol(s, MarketChannel.trades) for s in trades),
        bars=frozenset(parsed_bars),
        greeks=frozenset(canonical_symbol(s, MarketChannel.greeks) for s in greeks),
    )


def source_interval(wanted: BarInterval, available: frozenset[BarInterval]) -> BarInterval | None:
    """The largest interval in ``available`` below ``wanted`` that divides it, or None."""
    candidates = [
        i for i in available if i.seconds < wanted.seconds and wanted.seconds % i.seconds == 0
    ]
    return max(candidates, key=lambda i: i.seconds) if candidates else None


def _routes(wanted: MarketDataSubscription) -> set[_ROUTE]:
    routes: set[_ROUTE] = set()
    routes.update(("quotes", "", s) for s in wanted.quotes)
    routes.update(("trades", "", s) for s in wanted.trades)
    routes.update(("bars", i.value, s) for i, s in wanted.bars)
    routes.update(("greeks", "", s) for s in wanted.greeks)
    return routes


def _subscription(routes: Iterable[_ROUTE]) -> MarketDataSubscription:
    quotes: set[str] = set()
    trades: set[str] = set()
    bars: set[tuple[BarInterval, str]] = set()
    greeks: set[str] = set()
    for channel, interval, symbol in routes:
        if channel == "quotes":
            quotes.add(symbol)
        elif channel == "trades":
            trades.add(symbol)
        elif channel == "bars":
            bars.add((BarInterval(interval), symbol))
        else:
            greeks.add(symbol)
    return MarketDataSubscription(
        frozenset(quotes), frozenset(trades), frozenset(bars), frozenset(greeks)
    )


@dataclass(slots=True, eq=False)
class _SeamHold:
    """One subscriber's seam on one bars route, from its subscribe until the first live
    final bar after its replay: live bars are held while the replay is fetched (``held``;
    ``None`` once released), then everything goes through ``seam`` so a bar the replay
    already gave (final) is never delivered again and none goes backwards."""

    held: list[tuple[Bar, str]] | None = field(default_factory=list)
    seam: BarSeam = field(default_factory=BarSeam)


class MarketClient:
    """One WebSocket connection's market data: its feed and what it wants per account."""

    __slots__ = ("accounts", "connections", "feed", "seams", "user_id")

    def __init__(self, user_id: str, max_queue: int) -> None:
        self.user_id = user_id
        self.feed = MarketFeed(max_queue)
        # account id -> (upstream key, what this connection wants through that account)
        self.accounts: dict[str, tuple[str, MarketDataSubscription]] = {}
        # account id -> the gateway connection (credential) it was subscribed through
        self.connections: dict[str, str] = {}
        # (upstream key, bars route) -> its seam while a replay is stitched to live bars
        self.seams: dict[tuple[str, _ROUTE], _SeamHold] = {}

    def wanted(self, account_id: str) -> MarketDataSubscription:
        found = self.accounts.get(account_id)
        return found[1] if found is not None else MarketDataSubscription()

    def symbol_count(self) -> int:
        return len(frozenset().union(*(w.symbols for _, w in self.accounts.values())))


@dataclass(eq=False)
class _Upstream:
    key: str
    broker: str
    adapter: SupportsMarketData
    caps: MarketDataCapabilities
    session: MarketDataSession
    # The gateway connection whose credential the session uses (a new adapter is built
    # from its refreshed credential when the session's access token expired).
    connection_id: str = ""
    connection_user: str = ""
    routes: dict[_ROUTE, set[MarketClient]] = field(default_factory=dict)
    # subscriber -> the accounts it subscribed through (gap/resubscribed are per account)
    members: dict[MarketClient, set[str]] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pump: asyncio.Task[None] | None = None
    closed: bool = False
    symbol_count: int = 0
    # Bars of an interval the broker does not stream, built here from a smaller one:
    # (source interval, symbol) -> the target intervals, and each target's current window.
    derived: dict[tuple[BarInterval, str], set[BarInterval]] = field(default_factory=dict)
    windows: dict[tuple[BarInterval, str], list[Bar]] = field(default_factory=dict)
    # The window that was already under way when a target was subscribed (or after a gap):
    # its earlier part was never seen, so its bar is sent as forming, never as final.
    partial: dict[tuple[BarInterval, str], datetime] = field(default_factory=dict)
    # This broker's counters, looked up once (the dispatch path runs per event).
    deliveries: Any = None
    conflations: Any = None
    dropped: Any = None

    def __post_init__(self) -> None:
        self.deliveries = DELIVERIES.labels(self.broker)
        self.conflations = CONFLATIONS.labels(self.broker)
        self.dropped = DROPPED.labels(self.broker)

    def union(self) -> MarketDataSubscription:
        """What local subscribers want (bars at the intervals they asked for)."""
        return _subscription(self.routes)

    def upstream_wanted(self, routes: Iterable[_ROUTE]) -> MarketDataSubscription:
        """What to ask the broker for: bars it does not stream at their source interval."""
        wanted = _subscription(routes)
        if not wanted.bars:
            return wanted
        bars = set()
        for interval, symbol in wanted.bars:
            bars.add((self.bar_source(interval), symbol))
        return replace(wanted, bars=frozenset(bars))

    def bar_source(self, interval: BarInterval) -> BarInterval:
        native = self.caps.bar_intervals
        if interval in native or not native:
            return interval
        source = source_interval(interval, native)
        if source is None:
            raise MarketDataError(
                "market_data_unsupported",
                f"{self.broker} streams {', '.join(sorted(i.value for i in native))} bars,"
                f" from which {interval.value} cannot be built",
            )
        return source

    def rebuild_derived(self) -> None:
        derived: dict[tuple[BarInterval, str], set[BarInterval]] = {}
        for channel, interval_text, symbol in self.routes:
            if channel != "bars":
                continue
            interval = BarInterval(interval_text)
            source = self.bar_source(interval)
            if source is not interval:
                derived.setdefault((source, symbol), set()).add(interval)
        self.derived = derived
        wanted = {(t, s) for (_, s), targets in derived.items() for t in targets}
        for key in list(self.windows):
            if key not in wanted:
                del self.windows[key]
        for key in list(self.partial):
            if key not in wanted:
                del self.partial[key]


class MarketDataService:
    """This instance's upstream market-data sessions and their local subscribers."""

    def __init__(
        self,
        ctx: ServiceContext,
        *,
        max_symbols_per_connection: int = 1000,
        queue_size: int = 1024,
        bar_replay: int = 10,
        restart_min_seconds: float = 0.5,
        restart_max_seconds: float = 30.0,
    ) -> None:
        self._ctx = ctx
        self._max_symbols = max_symbols_per_connection
        self._queue_size = queue_size
        self._bar_replay = bar_replay
        self._restart_min = restart_min_seconds
        self._restart_max = restart_max_seconds
        self._upstreams: dict[str, _Upstream] = {}
        self._create_lock = asyncio.Lock()
        self._stopping: set[asyncio.Task[int]] = set()

    # --- introspection (metrics, tests, the bench) ------------------------------------

    def upstream_keys(self) -> frozenset[str]:
        return frozenset(self._upstreams)

    def upstream_wanted(self, key: str) -> MarketDataSubscription | None:
        up = self._upstreams.get(key)
        return None if up is None else up.union()

    def upstream_session(self, key: str) -> MarketDataSession | None:
        up = self._upstreams.get(key)
        return None if up is None else up.session

    def subscribers_of(self, key: str) -> int:
        up = self._upstreams.get(key)
        return 0 if up is None else len(up.members)

    def new_client(self, user_id: str) -> MarketClient:
        return MarketClient(user_id, self._queue_size)

    # --- subscribe / unsubscribe -------------------------------------------------------

    async def subscribe(
        self, client: MarketClient, account_id: str, request: MarketDataSubscription
    ) -> MarketDataSubscription:
        """Add ``request`` to what ``client`` gets through ``account_id``; returns the full
        set for the account. Raises ``MarketDataError``, having changed nothing."""
        try:
            return await self._subscribe(client, account_id, request)
        except MarketDataError as exc:
            SUBSCRIBE_ERRORS.labels(exc.code).inc()
            raise
        except errors.AppError as exc:
            # Building the upstream (the connection's credential, the broker) failed.
            code = {"not_found": "not_found", "connection_broken": "connection_broken"}.get(
                exc.code, "market_data_unavailable"
            )
            SUBSCRIBE_ERRORS.labels(code).inc()
            raise MarketDataError(code, exc.detail) from None
        except broker_errors.BrokerError as exc:
            SUBSCRIBE_ERRORS.labels("market_data_unavailable").inc()
            raise MarketDataError("market_data_unavailable", exc.reason) from None

    async def _subscribe(
        self, client: MarketClient, account_id: str, request: MarketDataSubscription
    ) -> MarketDataSubscription:
        connection = await self._connection(client.user_id, account_id)
        key = upstream_key(connection)
        current = client.accounts.get(account_id)
        if current is not None and current[0] != key:
            # The account moved to another credential (reconnected): start it afresh.
            await self.unsubscribe(client, account_id, current[1])
        caps = self._ctx.spec_for(connection).capabilities.market_data
        _check_channels(caps, request)
        before = client.wanted(account_id)
        after = before | request
        if after == before:
            return after
        total = client.symbol_count() + len(after.symbols - before.symbols)
        if total > self._max_symbols:
            raise MarketDataError(
                "too_many_symbols",
                f"at most {self._max_symbols} symbols per connection to the gateway",
            )
        while True:
            up = await self._upstream(key, connection, caps)
            async with up.lock:
                if up.closed:
                    continue  # released while we waited: make a fresh one
                try:
                    await self._apply(up, client, account_id, after)
                    client.connections[account_id] = connection.id
                except BaseException:
                    if not up.routes:
                        await self._release(up)
                    raise
                return after

    async def backfill(
        self, client: MarketClient, account_id: str, request: MarketDataSubscription
    ) -> int:
        """Replay recent final bars to ``client`` for each bars route in ``request`` that it
        did not have (call after ``subscribe``, once ``market.subscribed`` is queued), the
        same for every interval, streamed by the broker or built here.

        The live stream already runs: this subscriber's live bars of the route are held
        (``_SeamHold``) while the broker's history is read, then it gets, through one
        ``BarSeam``: the last ``bar_replay`` final bars before the running window (source
        ``history``, or ``aggregated`` for an interval the broker's history lacks), the
        live bars held meanwhile, and for an interval built here from smaller bars the
        running window's bar so far (forming; its window is completed from the history's
        final smaller bars, ``stitch``: each start once, final over forming, so the bar
        can be final when the window ends). The seam stays until a live final bar passes
        it: a bar the replay already gave, arriving late from the stream, is not
        delivered twice. Only final history bars are replayed; a forming bar is never
        marked final. A broker without history, or a failing history call, replays
        nothing (and leaves a built window partial, never final). Returns how many bars
        were replayed (forming ones included).
        """
        found = client.accounts.get(account_id)
        if found is None or not request.bars:
            return 0
        up = self._upstreams.get(found[0])
        if up is None or up.closed or not isinstance(up.adapter, SupportsBarHistory):
            return 0
        holds: list[tuple[BarInterval, str, _SeamHold]] = []
        for interval, symbol in sorted(request.bars, key=lambda b: (b[1], b[0].seconds)):
            seam_key = (up.key, ("bars", interval.value, symbol))
            existing = client.seams.get(seam_key)
            if existing is not None and existing.held is not None:
                continue  # already being replayed
            hold = _SeamHold()
            client.seams[seam_key] = hold
            holds.append((interval, symbol, hold))
        replayed = 0
        try:
            for interval, symbol, hold in holds:
                replayed += await self._replay(up, client, interval, symbol, hold)
        finally:
            # Whatever happened, no live bar stays held.
            for interval, symbol, hold in holds:
                self._release_hold(up, client, ("bars", interval.value, symbol), hold, [])
        return replayed

    async def _replay(
        self,
        up: _Upstream,
        client: MarketClient,
        interval: BarInterval,
        symbol: str,
        hold: _SeamHold,
    ) -> int:
        """One route's replay (see ``backfill``); releases ``hold`` with it."""
        adapter = up.adapter
        assert isinstance(adapter, SupportsBarHistory)
        now = self._ctx.clock()
        start = window_start(now, interval)
        recent: list[Bar] = []
        if self._bar_replay and up.caps.history is not Support.unsupported:
            try:
                recent = await self._recent_final_bars(up, adapter, interval, symbol, start)
            except Exception:
                log.warning("replaying recent bars failed", exc_info=True)
        forming: list[Bar] = []
        source = up.bar_source(interval)
        key = (interval, symbol)
        if source is not interval and not (key in up.windows and up.partial.get(key) != start):
            # A built interval whose running window began before anyone listened:
            # complete it from the history's final smaller bars.
            try:
                history = await adapter.get_bars(
                    symbol, source, start, now, interval.seconds // source.seconds
                )
            except Exception:
                log.warning("backfilling a bar window failed", exc_info=True)
                history = None
            # No await from here on: the live bars held meanwhile cannot change under us.
            held = up.windows.get(key) or []
            if (
                history is not None
                and not up.closed
                and ("bars", interval.value, symbol) in up.routes
                and not (held and window_start(held[0].start, interval) != start)
            ):
                parts = stitch([b for b in history if b.final and b.start >= start], held)
                if parts:
                    up.windows[key] = parts
                    up.partial.pop(key, None)
                    built = aggregate(parts, interval)
                    if built and not built[-1].final:
                        forming.append(built[-1])
        route: _ROUTE = ("bars", interval.value, symbol)
        return self._release_hold(up, client, route, hold, recent, forming)

    async def _recent_final_bars(
        self,
        up: _Upstream,
        adapter: SupportsBarHistory,
        interval: BarInterval,
        symbol: str,
        before: datetime,
    ) -> list[Bar]:
        """The last ``bar_replay`` final bars of ``interval`` starting before ``before``
        (the running window's start), oldest first: the broker's own at that interval, or
        built from the largest smaller interval its history serves (at most
        ``_MAX_REPLAY_SOURCE_BARS`` of those)."""
        count = self._bar_replay
        served = up.caps.history_intervals
        if interval in served or not served:
            start = before - count * timedelta(seconds=interval.seconds)
            bars = await adapter.get_bars(symbol, interval, start, before, count)
            return [b for b in bars if b.final and start <= b.start < before]
        base = source_interval(interval, served)
        if base is None:
            return []
        ratio = interval.seconds // base.seconds
        count = max(1, min(count, _MAX_REPLAY_SOURCE_BARS // ratio))
        start = before - count * timedelta(seconds=interval.seconds)
        parts = await adapter.get_bars(symbol, base, start, before, count * ratio)
        built = aggregate(parts, interval, complete_until=before)
        return [b for b in built if b.final and start <= b.start < before]

    def _release_hold(
        self,
        up: _Upstream,
        client: MarketClient,
        route: _ROUTE,
        hold: _SeamHold,
        recent: list[Bar],
        forming: list[Bar] | None = None,
    ) -> int:
        """Deliver ``recent`` (oldest first), the live bars held, then ``forming``, through
        the route's seam, and stop holding. Returns how many of ``recent`` and ``forming``
        were delivered. Nothing if already released."""
        held = hold.held
        if held is None:
            return 0
        hold.held = None
        received_at = format_timestamp(datetime.now(UTC))
        ordered = sorted(recent, key=lambda b: b.start)
        items: list[tuple[Bar, str, bool]] = [(b, received_at, True) for b in ordered]
        items += [(b, at, False) for b, at in held]
        items += [(b, received_at, True) for b in forming or ()]
        replayed = 0
        for bar, at, ours in items:
            if not hold.seam.offer(bar):
                continue
            lost = client.feed.offer(bar_frame(bar, at), at)
            if lost:
                up.dropped.inc(lost)
            else:
                up.deliveries.inc()
            if ours:
                replayed += 1
            elif bar.final:
                # A live final bar passed the seam: nothing older can follow.
                client.seams.pop((up.key, route), None)
        return replayed

    async def unsubscribe(
        self, client: MarketClient, account_id: str, request: MarketDataSubscription
    ) -> MarketDataSubscription:
        """Remove ``request`` from the account's set (never fails for what was not there)."""
        current = client.accounts.get(account_id)
        if current is None:
            # Still an ownership check: another user's account is not_found, not "empty".
            await self._connection(client.user_id, account_id)
            return MarketDataSubscription()
        key, before = current
        after = before - request
        up = self._upstreams.get(key)
        if up is None:
            client.accounts.pop(account_id, None)
            return MarketDataSubscription()
        async with up.lock:
            if not up.closed:
                await self._apply(up, client, account_id, after)
        return after

    async def remove_client(self, client: MarketClient) -> None:
        """The connection is gone: release everything it held."""
        for account_id, (key, _) in list(client.accounts.items()):
            up = self._upstreams.get(key)
            if up is None:
                continue
            async with up.lock:
                if not up.closed:
                    with contextlib.suppress(Exception):
                        await self._apply(up, client, account_id, MarketDataSubscription())
        client.accounts.clear()
        client.seams.clear()

    async def stop_connection(self, connection_id: str) -> int:
        """The connection was disconnected (revoked): every subscription made through it on
        this instance ends now, each subscriber told (``error`` ``connection_broken`` and an
        empty ``market.subscribed`` for the account); an upstream nobody else uses closes.
        Returns how many subscriptions ended."""
        ended = 0
        for up in list(self._upstreams.values()):
            async with up.lock:
                if up.closed:
                    continue
                for client in list(up.members):
                    for account_id in sorted(up.members.get(client, ())):
                        if client.connections.get(account_id) != connection_id:
                            continue
                        with contextlib.suppress(Exception):
                            await self._apply(up, client, account_id, MarketDataSubscription())
                        client.connections.pop(account_id, None)
                        client.feed.control(
                            error_message(
                                ErrorCode.connection_broken,
                                f"the connection of account {account_id} was disconnected;"
                                " its market data ended",
                            )
                        )
                        client.feed.control(subscribed_frame(account_id, MarketDataSubscription()))
                        ended += 1
                    if up.closed:
                        break
        return ended

    # --- connections ended on any instance (the hub's ConnectionWatcher) ---------------

    def watching(self) -> bool:
        """The outbox tail is read for us while any upstream is open here."""
        return bool(self._upstreams)

    def connection_ended(self, connection_id: str) -> None:
        """A ``connection.revoked``/``connection.broken`` committed by any instance: end
        this instance's subscriptions through it (``stop_connection``), in the background
        (the hub's tail reader must not wait on upstream sessions)."""
        if not any(
            connection_id in client.connections.values()
            for up in self._upstreams.values()
            for client in up.members
        ):
            return
        task = asyncio.create_task(
            self.stop_connection(connection_id), name="market-stop-connection"
        )
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def close(self) -> None:
        for task in list(self._stopping):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        for up in list(self._upstreams.values()):
            await self._release(up)

    # --- internals ---------------------------------------------------------------------

    async def _connection(self, user_id: str, account_id: str) -> Connection:
        async with self._ctx.sessionmaker() as session:
            found = await AccountRepository.for_user(session, user_id).get_with_connection(
                account_id
            )
        if found is None:
            raise MarketDataError("not_found", f"no such account: {account_id[:64]}")
        _, connection = found
        if connection.status not in ("active", "expiring"):
            raise MarketDataError(
                "connection_broken", f"the account's connection is {connection.status}"
            )
        return connection

    async def _upstream(
        self, key: str, connection: Connection, caps: MarketDataCapabilities
    ) -> _Upstream:
        up = self._upstreams.get(key)
        if up is not None and not up.closed:
            return up
        async with self._create_lock:
            up = self._upstreams.get(key)
            if up is not None and not up.closed:
                return up
            async with self._ctx.sessionmaker() as session:
                adapter = await self._ctx.adapter_for(session, connection, for_order=False)
            if not isinstance(adapter, SupportsMarketData):
                raise MarketDataError(
                    "market_data_unsupported",
                    f"{connection.broker_slug} offers no market data through the gateway",
                )
            up = _Upstream(
                key=key,
                broker=connection.broker_slug,
                adapter=adapter,
                caps=caps,
                session=adapter.market_data_session(),
                connection_id=connection.id,
                connection_user=connection.user_id,
            )
            self._upstreams[key] = up
            UPSTREAM_SESSIONS.labels(up.broker).inc()
            up.pump = asyncio.create_task(self._pump(up), name=f"market-upstream:{up.broker}")
            return up

    async def _apply(
        self,
        up: _Upstream,
        client: MarketClient,
        account_id: str,
        after: MarketDataSubscription,
    ) -> None:
        """Make ``client`` want ``after`` through ``account_id`` on ``up`` (lock held)."""
        old_accounts = dict(client.accounts)
        old_mine = self._client_routes(client, up.key)
        client_after = dict(old_accounts)
        if after.is_empty():
            client_after.pop(account_id, None)
        else:
            client_after[account_id] = (up.key, after)
        new_mine: set[_ROUTE] = set()
        for key, wanted in client_after.values():
            if key == up.key:
                new_mine |= _routes(wanted)
        added = new_mine - old_mine
        removed = old_mine - new_mine
        new_union_routes = (set(up.routes) | added) - {
            r for r in removed if up.routes.get(r, set()) <= {client}
        }
        if new_union_routes != set(up.routes):
            wanted = up.upstream_wanted(new_union_routes)
            if up.caps.max_symbols is not None and len(wanted.symbols) > up.caps.max_symbols:
                if added:
                    raise MarketDataError(
                        "too_many_symbols",
                        f"{up.broker} allows {up.caps.max_symbols} symbols per session on "
                        "this plan; others on this credential already use some",
                    )
            try:
                if new_union_routes:
                    await up.session.update(wanted)
            except broker_errors.MarketDataLimit as exc:
                raise MarketDataError("too_many_symbols", exc.reason) from None
            except broker_errors.UnknownSymbol as exc:
                raise MarketDataError("unknown_symbol", exc.reason) from None
            except broker_errors.NotSupported as exc:
                raise MarketDataError("market_data_unsupported", exc.reason) from None
            except broker_errors.Rejected as exc:
                raise MarketDataError("market_data_rejected", exc.reason) from None
            except broker_errors.BrokerError:
                if added:
                    raise MarketDataError(
                        "market_data_unavailable", "the broker's market data is unavailable"
                    ) from None
                log.warning("releasing market data upstream failed", exc_info=True)
        # Committed: routes, membership, the client's own record.
        for route in added:
            up.routes.setdefault(route, set()).add(client)
        for route in removed:
            client.seams.pop((up.key, route), None)
            subs = up.routes.get(route)
            if subs is not None:
                subs.discard(client)
                if not subs:
                    del up.routes[route]
        up.rebuild_derived()
        client.accounts = client_after
        mine = {a for a, (k, _) in client_after.items() if k == up.key}
        if mine:
            up.members[client] = mine
        else:
            up.members.pop(client, None)
        self._count_symbols(up)
        if not up.routes:
            await self._release(up)

    @staticmethod
    def _client_routes(client: MarketClient, key: str) -> set[_ROUTE]:
        mine: set[_ROUTE] = set()
        for k, wanted in client.accounts.values():
            if k == key:
                mine |= _routes(wanted)
        return mine

    def _count_symbols(self, up: _Upstream) -> None:
        count = len(up.union().symbols) if not up.closed else 0
        SYMBOLS.labels(up.broker).inc(count - up.symbol_count)
        up.symbol_count = count

    async def _release(self, up: _Upstream) -> None:
        if up.closed:
            return
        up.closed = True
        if self._upstreams.get(up.key) is up:
            del self._upstreams[up.key]
        UPSTREAM_SESSIONS.labels(up.broker).dec()
        SYMBOLS.labels(up.broker).dec(up.symbol_count)
        up.symbol_count = 0
        if up.pump is not None and up.pump is not asyncio.current_task():
            up.pump.cancel()
            with contextlib.suppress(BaseException):
                await up.pump
        with contextlib.suppress(Exception):
            await up.session.close()
        close = getattr(up.adapter, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()

    # --- the pump: upstream events to subscriber feeds --------------------------------

    async def _pump(self, up: _Upstream) -> None:
        delay = self._restart_min
        while not up.closed:
            session = up.session
            renew = False
            try:
                async for event in session.events():
                    self._dispatch(up, event)
                    delay = self._restart_min
                    # Let the writers just woken send before the next event is read: an
                    # upstream burst (a paper step, a broker frame of many quotes) is then
                    # delivered symbol by symbol, and the first symbol's subscribers do
                    # not wait for the whole burst to be dispatched.
                    await asyncio.sleep(0)
                reason = "the upstream market-data session ended"
            except asyncio.CancelledError:
                raise
            except broker_errors.AuthenticationFailed:
                # An OAuth session's access token is fixed for its life (Schwab: 30 min);
                # the refresher keeps the vault's fresh, so a new adapter takes it up.
                reason = "the upstream market-data session's credential was refused"
                renew = True
            except Exception as exc:
                log.warning("an upstream market-data session failed", exc_info=True)
                reason = f"the upstream market-data session failed ({type(exc).__name__})"
            if up.closed:
                return
            # Replace the session: gap now, resubscribed once the union is back.
            self._dispatch(up, MarketGap(reason=reason, since=datetime.now(UTC)))
            with contextlib.suppress(Exception):
                await session.close()
            while not up.closed:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._restart_max)
                try:
                    if renew:
                        await self._renew_adapter(up)
                        renew = False
                    async with up.lock:
                        replacement = up.adapter.market_data_session()
                        wanted = up.upstream_wanted(up.routes)
                        if not wanted.is_empty():
                            await replacement.update(wanted)
                        up.session = replacement
                except MarketDataError:
                    # The connection is no longer usable: its subscribers are told, as
                    # for a revocation, and the upstream closes.
                    await self.stop_connection(up.connection_id)
                    return
                except broker_errors.AuthenticationFailed:
                    renew = True
                    continue
                except Exception:
                    log.warning("resubscribing upstream market data failed", exc_info=True)
                    continue
                self._dispatch(up, MarketResubscribed(at=datetime.now(UTC)))
                break

    async def _renew_adapter(self, up: _Upstream) -> None:
        """A new adapter for ``up`` from its connection's current credential (refreshed
        first if its access token is due); ``MarketDataError`` if the connection is gone."""

        async def build() -> SupportsMarketData:
            async with self._ctx.sessionmaker() as session:
                connection = await ConnectionRepository.for_user(session, up.connection_user).get(
                    up.connection_id
                )
                if connection is None or connection.status not in ("active", "expiring"):
                    raise MarketDataError(
                        "connection_broken", "the connection of this market data is not usable"
                    )
                adapter = await self._ctx.adapter_for(session, connection, for_order=False)
            if not isinstance(adapter, SupportsMarketData):  # pragma: no cover - was before
                raise MarketDataError("market_data_unsupported", "no market data")
            return adapter

        adapter = await self._ctx.with_fresh_tokens(build)
        old, up.adapter = up.adapter, adapter
        close = getattr(old, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()

    def _dispatch(self, up: _Upstream, event: MarketEvent) -> None:
        received_at = format_timestamp(datetime.now(UTC))
        if isinstance(event, MarketQuote):
            subs = up.routes.get(("quotes", "", event.symbol))
            if subs:
                frame = quote_frame(event, received_at)
                key = (up.key, event.symbol)
                conflated = 0
                for client in subs:
                    conflated += client.feed.offer_quote(key, frame)
                up.deliveries.inc(len(subs))
                if conflated:
                    up.conflations.inc(conflated)
            return
        if isinstance(event, MarketTrade):
            route: _ROUTE = ("trades", "", event.symbol)
            render = trade_frame
        elif isinstance(event, Bar):
            # The bar itself first, then what is built from it (a larger bar never
            # precedes its last part).
            self._deliver(up, ("bars", event.interval.value, event.symbol), event)
            targets = up.derived.get((event.interval, event.symbol))
            if targets:
                for built in _build_bars(up, event, targets):
                    self._deliver(up, ("bars", built.interval.value, built.symbol), built)
            return
        elif isinstance(event, GreeksUpdate):
            route = ("greeks", "", event.symbol)
            render = greeks_frame  # type: ignore[assignment]
        elif isinstance(event, MarketGap):
            RECONNECTS.labels(up.broker).inc()
            # A window with a hole in it is never final: the next bar starts afresh.
            up.windows.clear()
            up.partial.clear()
            for client, accounts in up.members.items():
                for account_id in sorted(accounts):
                    client.feed.control(gap_frame(account_id, event.reason, event.since))
            return
        elif isinstance(event, MarketResubscribed):
            for client, accounts in up.members.items():
                for account_id in sorted(accounts):
                    client.feed.control(resubscribed_frame(account_id, event.at))
            return
        else:  # pragma: no cover - the MarketEvent union is closed
            return
        self._deliver(up, route, event, render, received_at)

    def _deliver(
        self,
        up: _Upstream,
        route: _ROUTE,
        event: MarketTrade | Bar | GreeksUpdate,
        render: Callable[[Any, str], str] = bar_frame,
        received_at: str | None = None,
    ) -> None:
        subs = up.routes.get(route)
        if not subs:
            return
        if received_at is None:
            received_at = format_timestamp(datetime.now(UTC))
        frame = render(event, received_at)
        dropped = queued = 0
        for client in subs:
            if client.seams and isinstance(event, Bar):
                hold = client.seams.get((up.key, route))
                if hold is not None:
                    if hold.held is not None:
                        hold.held.append((event, received_at))  # its replay is on the way
                        continue
                    if not hold.seam.offer(event):
                        continue  # the replay gave it already, or it is older
                    if event.final:
                        del client.seams[(up.key, route)]
            lost = client.feed.offer(frame, received_at)
            if lost:
                dropped += lost
            else:
                queued += 1
        if queued:
            up.deliveries.inc(queued)
        if dropped:
            up.dropped.inc(dropped)


def _build_bars(up: _Upstream, bar: Bar, targets: set[BarInterval]) -> list[Bar]:
    """Each target interval's bar after ``bar`` (a smaller one) arrived: forming until its
    window is covered, then final once; a window left incomplete when the next one starts
    is closed as it is (the source had nothing for the missing minutes)."""
    out: list[Bar] = []
    for target in sorted(targets, key=lambda i: i.seconds):
        key = (target, bar.symbol)
        start = window_start(bar.start, target)
        held = up.windows.get(key)
        if held is None and key not in up.partial:
            # The first bar of this target: unless it opens its window, the window began
            # before we were listening.
            up.partial[key] = start if bar.start != start else start - timedelta(days=1)
        if held:
            held_start = window_start(held[0].start, target)
            if held_start > start:
                continue  # a late bar of a window already closed: never reopened
            if held_start < start:
                if up.partial.get(key) != held_start:
                    out.extend(aggregate(held, target, complete_until=start))
                held = None
        parts = [*(held or []), bar]
        complete = window_end(bar.start, bar.interval) if bar.final else None
        built = aggregate(parts, target, complete_until=complete)
        if up.partial.get(key) == start:
            built = [replace(b, final=False) for b in built]
        out.extend(built)
        if built and built[-1].final:
            up.windows.pop(key, None)
        else:
            up.windows[key] = parts
    return out


class _ConnectionStreams(Protocol):
    async def stop_connection(self, connection_id: str) -> int: ...


class StopStreams:
    """Revocation stops a connection's order streams and its market data alike."""

    def __init__(self, *streams: _ConnectionStreams) -> None:
        self._streams = streams

    async def stop_connection(self, connection_id: str) -> int:
        stopped = 0
        for streams in self._streams:
            stopped += await streams.stop_connection(connection_id)
        return stopped


def _check_channels(caps: MarketDataCapabilities, request: MarketDataSubscription) -> None:
    for channel, symbols in (
        (MarketChannel.quotes, request.quotes),
        (MarketChannel.trades, request.trades),
        (MarketChannel.bars, request.bars),
        (MarketChannel.greeks, request.greeks),
    ):
        if symbols and not caps.supports(channel):
            raise MarketDataError(
                "market_data_unsupported",
                f"this account's broker does not stream {channel.value}",
            )
    if caps.max_symbols is not None and len(request.symbols) > caps.max_symbols:
        raise MarketDataError(
            "too_many_symbols", f"this broker allows {caps.max_symbols} symbols per session"
        )
