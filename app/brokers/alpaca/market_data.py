"""Alpaca market data: the real-time stock and crypto streams, and history bars over REST.

Streams (https://docs.alpaca.markets/docs/streaming-market-data,
https://docs.alpaca.markets/docs/real-time-stock-pricing-data; alpaca-py
``alpaca/data/live/websocket.py``):

* one WebSocket per endpoint: stocks ``wss://stream.data.alpaca.markets/v2/{iex|sip}``,
  crypto ``.../v1beta3/crypto/us``. At most one connection per endpoint and key (error 406
  ``connection limit exceeded``), so one session holds one connection per endpoint it needs,
  opened when a symbol of that kind is first wanted;
* the server greets ``[{"T":"success","msg":"connected"}]``; the client authenticates within
  a few seconds with ``{"action":"auth","key","secret"}`` and gets ``[{"T":"success",
  "msg":"authenticated"}]`` or ``[{"T":"error","code":402,"msg":"auth failed"}]``;
* ``{"action":"subscribe","trades":[..],"quotes":[..],"bars":[..]}`` ADDS to the current
  subscription and ``unsubscribe`` subtracts; the server answers the full current set
  (``[{"T":"subscription","trades":..,"quotes":..,"bars":..}]``). So this session sends the
  diff: ``diff.added`` as a subscribe, ``diff.removed`` as an unsubscribe;
* data arrives in arrays, possibly batched: ``t`` trade (``p``, ``s``, ``t``), ``q`` quote
  (``bp``/``bs``/``ap``/``as``, a 0 price meaning no active side), ``b`` minute bar (``o``,
  ``h``, ``l``, ``c``, ``v``, ``n``, ``vw``; sent once the minute is over, so final);
  times are RFC 3339 with nanoseconds;
* errors: 400 invalid syntax, 401 not authenticated, 402 auth failed, 403 already
  authenticated, 404 auth timeout, 405 symbol limit exceeded (subscription unchanged), 406
  connection limit exceeded, 407 slow client (then disconnected), 408 v2 not enabled, 409
  insufficient subscription, 500 internal.

Symbols: crypto pairs are ``BTC/USD`` on the wire (``BTC-USD`` here). Option contracts
(unpadded OCC) stream on ``/v1beta1/{indicative|opra}`` in msgpack only ("Unlike the stock
and crypto stream, the option stream is only available in msgpack format",
https://docs.alpaca.markets/docs/real-time-option-data): the client asks for it with
``Content-Type: application/msgpack`` on the opening handshake and sends msgpack frames
(alpaca-py ``websocket.py``); times are msgpack Timestamp extensions and prices float64, read
through their shortest repr (the digits a JSON encoder would have written). The option feed
has trades and quotes only (alpaca-py ``live/option.py``): option bars are refused
(``MarketDataLimit``). Alpaca streams no greeks.

OAuth: the market-data stream takes API keys only ("due to licensing",
https://forum.alpaca.markets/t/market-data-real-time-websocket-oauth-support/10380); a
connection without an API key cannot stream, which ``market_data_session`` refuses at once.

Faults: a 405 (the plan's cap is below the configured one), 406, 407 or any drop ends the
connection; the reconnect loop (``UpstreamMarketSession``) reports ``MarketGap``, reconnects
with backoff, subscribes everything wanted and reports ``MarketResubscribed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any
from urllib.parse import quote

import msgpack
from websockets.asyncio.client import ClientConnection

from app.brokers import errors
from app.brokers.alpaca import auth, mapping
from app.brokers.base import (
    AssetClass,
    Bar,
    BarInterval,
    MarketDataCapabilities,
    MarketDataSource,
    MarketDataSubscription,
    MarketEvent,
    MarketGap,
    MarketQuote,
    MarketResubscribed,
    MarketTrade,
    OptionContract,
    Support,
    is_option_symbol,
)
from app.brokers.http import BrokerClient
from app.brokers.market_data.subscription import SubscriptionDiff, check_subscription
from app.brokers.market_data.upstream import UpstreamMarketSession
from app.brokers.symbols import asset_class_of
from app.brokers.upstream_stream import StreamRefused, frames_logger
from app.security.credentials import Credentials

log = logging.getLogger(__name__)

SLUG = mapping.SLUG
WIRE = mapping.WIRE

# Stream error codes (https://docs.alpaca.markets/docs/streaming-market-data#errors).
AUTH_FAILED = 402
SYMBOL_LIMIT = 405
CONNECTION_LIMIT = 406
SLOW_CLIENT = 407
INSUFFICIENT_SUBSCRIPTION = 409

# History (https://docs.alpaca.markets/reference/stockbars): ``timeframe`` per interval,
# ``limit`` at most 10000 per page (data spec), pages followed while ``next_page_token``.
TIMEFRAMES = {
    BarInterval.m1: "1Min",
    BarInterval.m5: "5Min",
    BarInterval.m15: "15Min",
    BarInterval.h1: "1Hour",
    BarInterval.d1: "1Day",
}
MAX_BARS_PAGE = 10000
MAX_BAR_PAGES = 20


def market_data_capabilities(max_symbols: int | None) -> MarketDataCapabilities:
    """Quotes, trades and 1-minute bars streamed; every interval of history native."""
    return MarketDataCapabilities(
        quotes=Support.native,
        trades=Support.native,
        bars=Support.native,
        greeks=Support.unsupported,
        bar_intervals=frozenset({BarInterval.m1}),
        history=Support.native,
        history_intervals=frozenset(TIMEFRAMES),
        max_symbols=max_symbols,
        max_sessions=1,  # one connection per endpoint and key (error 406)
    )


class Endpoint(StrEnum):
    stocks = "stocks"
    crypto = "crypto"
    options = "options"  # msgpack only


def endpoint_of(symbol: str) -> Endpoint:
    """Which stream serves ``symbol``."""
    kind = asset_class_of(symbol)
    if kind is AssetClass.crypto:
        return Endpoint.crypto
    if kind is AssetClass.option:
        return Endpoint.options
    return Endpoint.stocks


def stream_base(data_url: str, override: str | None) -> str:
    """``wss://stream.data.alpaca.markets`` from ``https://data.alpaca.markets`` (the sandbox
    likewise: ``stream.data.sandbox.alpaca.markets``,
    https://docs.alpaca.markets/docs/market-data-faq); a plain ``http`` host (a local fake)
    keeps its host with ``ws``."""
    if override:
        return override.rstrip("/")
    base = data_url.rstrip("/")
    if base.startswith("https://"):
        host = base[len("https://") :]
        if host.startswith("data.") and host.split("/")[0].endswith("alpaca.markets"):
            host = "stream." + host
        return "wss://" + host
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :]
    return base


def endpoint_url(
    base: str, endpoint: Endpoint, stock_feed: str, option_feed: str = "indicative"
) -> str:
    if endpoint is Endpoint.crypto:
        return f"{base}/v1beta3/crypto/us"
    if endpoint is Endpoint.options:
        return f"{base}/v1beta1/{option_feed}"
    return f"{base}/v2/{stock_feed}"


def split(wanted: MarketDataSubscription) -> dict[Endpoint, MarketDataSubscription]:
    """The wanted set per endpoint (``MarketDataLimit`` for bars of an option contract: the
    option feed has trades and quotes only)."""
    for _, symbol in wanted.bars:
        if endpoint_of(symbol) is Endpoint.options:
            raise errors.MarketDataLimit(
                "Alpaca's option stream has trades and quotes, no bars", broker=SLUG
            )
    parts: dict[Endpoint, MarketDataSubscription] = {}
    for symbol in wanted.symbols:
        parts.setdefault(endpoint_of(symbol), MarketDataSubscription())
    for endpoint in parts:
        mine = {s for s in wanted.symbols if endpoint_of(s) is endpoint}
        parts[endpoint] = MarketDataSubscription(
            quotes=wanted.quotes & mine,
            trades=wanted.trades & mine,
            bars=frozenset((i, s) for i, s in wanted.bars if s in mine),
            greeks=wanted.greeks & mine,
        )
    return parts


# --- the wire --------------------------------------------------------------------------


def _exact(value: Any) -> Any:
    """A msgpack value with every float as the ``Decimal`` of its shortest repr."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, list):
        return [_exact(v) for v in value]
    if isinstance(value, dict):
        return {k: _exact(v) for k, v in value.items()}
    return value


def decode(frame: str | bytes, *, binary: bool = False) -> list[dict[str, Any]]:
    """One frame: an array of messages, fractions as ``Decimal``; ``binary``: msgpack
    (times as aware datetimes)."""
    if binary:
        if not isinstance(frame, bytes):
            raise WIRE.unknown("option stream frame", "text")
        try:
            body = _exact(msgpack.unpackb(frame, timestamp=3))
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            raise WIRE.unknown("option stream frame", frame[:40]) from None
    else:
        text = frame.decode("utf-8") if isinstance(frame, bytes) else frame
        try:
            body = json.loads(text, parse_float=Decimal)
        except ValueError:
            raise WIRE.unknown("stream frame", text[:80]) from None
    if not isinstance(body, list) or not all(isinstance(m, dict) for m in body):
        raise WIRE.unknown("stream frame", type(body).__name__)
    return body


def encode(message: dict[str, Any], *, binary: bool = False) -> str | bytes:
    if binary:
        packed: bytes = msgpack.packb(message)
        return packed
    return json.dumps(message)


def _time(value: object, field: str) -> datetime:
    """RFC 3339 text (JSON feeds) or a msgpack Timestamp read as a datetime (options)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise WIRE.unknown(field, value)
        return value.astimezone(UTC)
    return WIRE.timestamp(value, field, naive_utc=False)


def _our_symbol(raw: str) -> str:
    if is_option_symbol(raw):
        return OptionContract.parse(raw).symbol
    return mapping.from_alpaca_symbol(raw)


def subscription_message(action: str, part: MarketDataSubscription) -> dict[str, Any]:
    """``subscribe``/``unsubscribe`` with the channels that name a symbol (1-minute bars
    only: the ``bars`` channel)."""
    message: dict[str, Any] = {"action": action}
    for channel, symbols in (
        ("trades", part.trades),
        ("quotes", part.quotes),
        ("bars", {s for i, s in part.bars if i is BarInterval.m1}),
    ):
        if symbols:
            message[channel] = sorted(mapping.wire_symbol(s) for s in symbols)
    return message


def _price(value: object, field: str) -> Decimal | None:
    """A quote side's price; 0 means "no active bid/ask" (data spec ``stock_quote``)."""
    price = WIRE.opt_decimal(value, field, text=False)
    return None if price is None or price == 0 else price


def event_from_wire(message: dict[str, Any]) -> MarketEvent | None:
    """A data message as an event; None for a kind this session does not subscribe."""
    kind = message.get("T")
    if kind not in ("t", "q", "b"):
        return None
    raw_symbol = message.get("S")
    if not isinstance(raw_symbol, str) or not raw_symbol:
        raise WIRE.unknown("stream symbol", raw_symbol)
    symbol = _our_symbol(raw_symbol)
    at = _time(message.get("t"), "stream t")
    if kind == "t":
        return MarketTrade(
            symbol=symbol,
            price=WIRE.decimal(message.get("p"), "trade p", text=False),
            size=WIRE.decimal(message.get("s"), "trade s", text=False),
            ts=at,
            source=MarketDataSource.stream,
        )
    if kind == "q":
        return MarketQuote(
            symbol=symbol,
            bid=_price(message.get("bp"), "quote bp"),
            ask=_price(message.get("ap"), "quote ap"),
            bid_size=WIRE.opt_decimal(message.get("bs"), "quote bs", text=False),
            ask_size=WIRE.opt_decimal(message.get("as"), "quote as", text=False),
            ts=at,
            source=MarketDataSource.stream,
        )
    return bar_from_wire(message, symbol, BarInterval.m1, MarketDataSource.stream)


def bar_from_wire(
    item: object, symbol: str, interval: BarInterval, source: MarketDataSource
) -> Bar:
    """A stream ``b`` message or a REST bar (same fields); final: Alpaca sends a bar once
    its window is over."""
    if not isinstance(item, dict):
        raise WIRE.unknown("bar", type(item).__name__)
    count = item.get("n")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
        raise WIRE.unknown("bar n", count)
    return Bar(
        symbol=symbol,
        interval=interval,
        start=_time(item.get("t"), "bar t"),
        open=WIRE.decimal(item.get("o"), "bar o", text=False),
        high=WIRE.decimal(item.get("h"), "bar h", text=False),
        low=WIRE.decimal(item.get("l"), "bar l", text=False),
        close=WIRE.decimal(item.get("c"), "bar c", text=False),
        volume=WIRE.decimal(item.get("v"), "bar v", text=False),
        vwap=WIRE.opt_decimal(item.get("vw"), "bar vw", text=False),
        trade_count=count,
        final=True,
        source=source,
    )


def _error(message: dict[str, Any]) -> tuple[object, str]:
    return message.get("code"), str(message.get("msg") or "")


# --- one endpoint ------------------------------------------------------------------------


class AlpacaEndpointSession(UpstreamMarketSession):
    """One Alpaca market-data WebSocket (stocks or crypto)."""

    broker = SLUG
    frames = frames_logger(__name__)  # never DEBUG: the auth frame carries key and secret

    def __init__(
        self,
        url: str,
        endpoint: Endpoint,
        credentials: Credentials,
        capabilities: MarketDataCapabilities,
        *,
        idle_timeout: float,
        handshake_timeout: float = 10.0,
        max_backoff: float = 30.0,
    ) -> None:
        super().__init__(
            capabilities,
            idle_timeout=idle_timeout,
            handshake_timeout=handshake_timeout,
            max_backoff=max_backoff,
        )
        self._url = url
        self.endpoint = endpoint
        self.binary = endpoint is Endpoint.options
        if self.binary:  # ask for msgpack, as alpaca-py does
            self.headers = {"Content-Type": "application/msgpack"}
        self.name = f"alpaca {endpoint.value} market stream"
        self._credentials = credentials
        self.answered: dict[str, list[str]] = {}  # the server's last ``subscription`` answer

    def __repr__(self) -> str:
        return f"AlpacaEndpointSession(url={self._url!r})"

    async def _open(self) -> str:
        return self._url

    async def _control(self, ws: ClientConnection) -> dict[str, Any]:
        async with asyncio.timeout(self._handshake_timeout):
            messages = decode(await ws.recv(), binary=self.binary)
        if len(messages) != 1:  # control messages come alone (docs, "Message format")
            raise WIRE.unknown("stream control message", messages[:2])
        return messages[0]

    def _refusal(self, message: dict[str, Any]) -> Exception:
        code, text = _error(message)
        if code == AUTH_FAILED:
            return errors.AuthenticationFailed(
                "Alpaca refused the market-data stream's API key", broker=SLUG
            )
        if code == INSUFFICIENT_SUBSCRIPTION:
            return errors.AuthenticationFailed(
                f"the Alpaca plan does not include this feed ({text})", broker=SLUG
            )
        return StreamRefused(f"alpaca {self.endpoint.value} stream error {code}: {text}")

    async def _handshake(self, ws: ClientConnection) -> None:
        hello = await self._control(ws)
        if hello.get("T") == "error":
            raise self._refusal(hello)
        if hello.get("T") != "success" or hello.get("msg") != "connected":
            raise WIRE.unknown("stream greeting", hello.get("msg"))
        await ws.send(encode(auth.auth_message(self._credentials), binary=self.binary))
        answer = await self._control(ws)
        if answer.get("T") == "error":
            raise self._refusal(answer)
        if answer.get("T") != "success" or answer.get("msg") != "authenticated":
            raise WIRE.unknown("stream auth answer", answer.get("msg"))

    async def _send_subscription(self, ws: ClientConnection, diff: SubscriptionDiff) -> None:
        # Additive on the wire: subscribe what was added, unsubscribe what was removed.
        for action, part in (("unsubscribe", diff.removed), ("subscribe", diff.added)):
            message = subscription_message(action, part)
            if len(message) > 1:
                await ws.send(encode(message, binary=self.binary))

    async def _read(self, ws: ClientConnection) -> AsyncIterator[MarketEvent]:
        while (raw := await self._recv(ws)) is not None:
            for message in decode(raw, binary=self.binary):
                kind = message.get("T")
                if kind == "subscription":
                    self.answered = {
                        k: list(message.get(k) or []) for k in ("trades", "quotes", "bars")
                    }
                    self._check_answer()
                    continue
                if kind == "error":
                    code, text = _error(message)
                    log.warning(
                        "alpaca market stream error",
                        extra={"broker": SLUG, "code": code, "detail": text},
                    )
                    raise self._refusal(message)
                if kind == "success":
                    continue
                try:
                    event = event_from_wire(message)
                except errors.UnknownBrokerValue:
                    log.error("alpaca market message skipped", exc_info=True)
                    continue
                if event is not None and self._is_wanted(event):
                    yield event

    def _check_answer(self) -> None:
        """The server's full set should hold what was subscribed; a symbol it left out (one
        it does not know) is logged: its subscribers will see no data for it."""
        held = subscription_message("subscribe", self.wanted)
        missing = {
            channel: sorted(set(held.get(channel, [])) - set(self.answered.get(channel, [])))
            for channel in ("trades", "quotes", "bars")
        }
        if any(missing.values()):
            log.warning(
                "alpaca market stream did not take every symbol",
                extra={"broker": SLUG, "missing": {k: v for k, v in missing.items() if v}},
            )

    def _is_wanted(self, event: MarketEvent) -> bool:
        """Messages of a symbol just unsubscribed may still be in flight: dropped."""
        wanted = self.wanted
        if isinstance(event, MarketTrade):
            return event.symbol in wanted.trades
        if isinstance(event, MarketQuote):
            return event.symbol in wanted.quotes
        if isinstance(event, Bar):
            return (BarInterval.m1, event.symbol) in wanted.bars
        return True


# --- the session the service holds --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException


class AlpacaMarketDataSession:
    """Every Alpaca market-data endpoint one credential needs, as one ``MarketDataSession``.

    Symbols go to their endpoint's connection (opened when first needed). A gap on any
    endpoint is one ``MarketGap``; ``MarketResubscribed`` follows once every interrupted
    endpoint is back, so a subscriber never takes one endpoint's recovery for another's.
    """

    def __init__(
        self,
        capabilities: MarketDataCapabilities,
        factory: Callable[[Endpoint], AlpacaEndpointSession],
        *,
        buffer: int = 10_000,
    ) -> None:
        self.capabilities = capabilities
        self._factory = factory
        self.endpoints: dict[Endpoint, AlpacaEndpointSession] = {}
        self._pumps: list[asyncio.Task[None]] = []
        self._queue: asyncio.Queue[tuple[Endpoint, MarketEvent] | _Failed | None] = asyncio.Queue(
            maxsize=buffer
        )
        self._lock = asyncio.Lock()
        self._interrupted: set[Endpoint] = set()
        self._closed = False

    async def update(self, wanted: MarketDataSubscription) -> None:
        """``MarketDataLimit`` beyond the caps or for an option contract, nothing changed;
        otherwise each endpoint gets its part (the diff goes on its wire)."""
        check_subscription(self.capabilities, wanted, broker=SLUG)
        parts = split(wanted)
        async with self._lock:
            for endpoint in Endpoint:
                part = parts.get(endpoint, MarketDataSubscription())
                session = self.endpoints.get(endpoint)
                if session is None:
                    if part.is_empty() or self._closed:
                        continue
                    session = self._factory(endpoint)
                    self.endpoints[endpoint] = session
                    self._pumps.append(asyncio.create_task(self._pump(endpoint, session)))
                await session.update(part)

    async def _pump(self, endpoint: Endpoint, session: AlpacaEndpointSession) -> None:
        try:
            async for event in session.events():
                await self._queue.put((endpoint, event))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # AuthenticationFailed and the like: the reader raises it
            await self._queue.put(_Failed(exc))

    async def events(self) -> AsyncIterator[MarketEvent]:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            if isinstance(item, _Failed):
                raise item.error
            endpoint, event = item
            if isinstance(event, MarketGap):
                first = not self._interrupted
                self._interrupted.add(endpoint)
                if first:
                    yield event
                continue
            if isinstance(event, MarketResubscribed):
                self._interrupted.discard(endpoint)
                if not self._interrupted:
                    yield event
                continue
            yield event

    async def close(self) -> None:
        self._closed = True
        for session in self.endpoints.values():
            await session.close()
        for task in self._pumps:
            task.cancel()
        for task in self._pumps:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)


def require_api_key(credentials: Credentials | None) -> Credentials:
    """The stream takes API keys only: an OAuth-linked connection cannot stream."""
    if credentials is None or not auth.CREDENTIAL_FIELDS <= set(credentials):
        raise errors.NotSupported(
            "Alpaca's market-data stream takes API keys only, not OAuth tokens "
            "(https://forum.alpaca.markets/t/market-data-real-time-websocket-oauth-support/10380)"
            ": connect Alpaca with an API key to stream",
            broker=SLUG,
        )
    return credentials


# --- history -----------------------------------------------------------------------------


def _bars_request(symbol: str, feed: str) -> tuple[str, dict[str, str], str | None]:
    """(path, fixed params, key of the symbol in a multi-symbol answer or None)."""
    wire = mapping.wire_symbol(symbol)
    kind = asset_class_of(symbol)
    if kind is AssetClass.crypto:
        return "/v1beta3/crypto/us/bars", {"symbols": wire}, wire
    if kind is AssetClass.option:
        return "/v1beta1/options/bars", {"symbols": wire}, wire
    return f"/v2/stocks/{quote(wire, safe='')}/bars", {"feed": feed, "adjustment": "raw"}, None


async def get_bars(
    client: BrokerClient,
    feed: str,
    symbol: str,
    interval: BarInterval,
    start: datetime,
    end: datetime,
    limit: int,
) -> list[Bar]:
    """Bars with ``start <= bar.start < end``, oldest first, at most ``limit``, following
    ``next_page_token`` (Alpaca's ``end`` is inclusive, so the last microsecond before
    ``end`` is asked for)."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("bars need timezone-aware datetimes")
    if limit <= 0 or start >= end:
        return []
    path, fixed, key = _bars_request(symbol, feed)
    params = {
        **fixed,
        "timeframe": TIMEFRAMES[interval],
        "start": mapping.iso(start),
        "end": mapping.iso(end - timedelta(microseconds=1)),
        "sort": "asc",
    }
    bars: list[Bar] = []
    token: str | None = None
    for _ in range(MAX_BAR_PAGES):
        query = {**params, "limit": str(min(MAX_BARS_PAGE, limit - len(bars)))}
        if token:
            query["page_token"] = token
        body = WIRE.json_body(await client.request("GET", path, params=query))
        if not isinstance(body, dict):
            raise WIRE.unknown("bars payload", type(body).__name__)
        items = body.get("bars")
        if key is not None:
            items = (items or {}).get(key) if isinstance(items, dict) else items
        if items is None:
            items = []
        if not isinstance(items, list):
            raise WIRE.unknown("bars", type(items).__name__)
        for item in items:
            bar = bar_from_wire(item, symbol, interval, MarketDataSource.history)
            if start <= bar.start < end:
                bars.append(bar)
        next_token = body.get("next_page_token")
        if next_token is not None and not isinstance(next_token, str):
            raise WIRE.unknown("next_page_token", next_token)
        token = next_token
        if not token or len(bars) >= limit:
            break
    return bars[:limit]
