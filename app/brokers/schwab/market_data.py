"""Schwab market data: the Streamer's level-one and chart services, and price history.

Streamer (Trader API "Streamer",
https://developer.schwab.com/products/trader-api--individual/details/documentation/Market%20Data%20Production;
alexgolec/schwab-py ``schwab/streaming.py`` and ``tests/streaming_test.py``):

* ``GET /trader/v1/userPreference`` -> ``streamerInfo[0]`` (socket URL, customer id, correl
  id, channel, function id); the URL is ``wss://``: a plain ``ws://`` one is refused unless
  the REST base itself is plain ``http`` (a local fake), so the access token never crosses
  an unencrypted socket to Schwab;
* ``ADMIN``/``LOGIN`` with the access token (code 0 ok, 3 denied);
* per service ``SUBS`` (replaces the service's keys), ``ADD`` (appends), ``UNSUBS``
  (removes the named keys) with ``{"keys": "A,B", "fields": "0,1,.."}``; each request is
  answered in ``response[]`` with ``content.code`` (0 = ok);
* data ``{"data": [{"service", "timestamp", "command", "content": [{"key", "1": .., ..}]}]}``
  with numeric field keys; updates carry only the fields that changed, so the last-known
  state per (service, key) is kept and every event is a full snapshot; heartbeats
  ``{"notify": [{"heartbeat": ".."}]}`` keep a quiet connection from looking silent.

Services and fields used (schwab-py field enums):

* ``LEVELONE_EQUITIES``: 1 BID_PRICE, 2 ASK_PRICE, 3 LAST_PRICE, 4 BID_SIZE, 5 ASK_SIZE,
  9 LAST_SIZE, 34 QUOTE_TIME_MILLIS, 35 TRADE_TIME_MILLIS: quotes, and trades as the last
  trade each update shows (a new TRADE_TIME): trades between two updates are not seen, so
  trades are ``emulated``;
* ``LEVELONE_OPTIONS`` (keys: the padded OCC symbol ``AAPL  261218C00190000``): 2 BID,
  3 ASK, 4 LAST, 16/17/18 sizes, 38/39 quote/trade time, 10 VOLATILITY (percent, /100),
  28-32 DELTA GAMMA THETA VEGA RHO, 35 UNDERLYING_PRICE: quotes, last trades and greeks;
* ``CHART_EQUITY``: 2-5 OHLC, 6 VOLUME, 7 CHART_TIME_MILLIS (the minute's start): 1-minute
  bars. Whether Schwab sends a minute once complete or also while it forms is not
  documented, so a bar is delivered forming when it comes and final once a later minute of
  the same symbol arrives (never final too early).

History: ``GET /marketdata/v1/pricehistory`` (``symbol``, ``periodType``, ``frequencyType``
minute|daily, ``frequency`` 1|5|15 minutes, ``startDate``/``endDate`` epoch ms) answers
``{"candles": [{"open","high","low","close","volume","datetime"}], "symbol", "empty"}``;
1-hour bars are aggregated by the gateway from 15-minute ones.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from websockets.asyncio.client import ClientConnection

from app.brokers import errors
from app.brokers.base import (
    Bar,
    BarInterval,
    Greeks,
    GreeksUpdate,
    MarketDataCapabilities,
    MarketDataSource,
    MarketDataSubscription,
    MarketEvent,
    MarketQuote,
    MarketTrade,
    OptionContract,
    Support,
    is_option_symbol,
)
from app.brokers.http import BrokerClient
from app.brokers.market_data.bars import window_end
from app.brokers.market_data.subscription import SubscriptionDiff
from app.brokers.market_data.upstream import UpstreamMarketSession
from app.brokers.oauth import ACCESS_TOKEN, access_token_expires_at
from app.brokers.schwab import mapping
from app.brokers.upstream_stream import StreamRefused, frames_logger
from app.security.credentials import Credentials

log = logging.getLogger(__name__)

SLUG = mapping.SLUG
WIRE = mapping.WIRE
LOGIN_DENIED = 3
CLOSING_CODES = frozenset({12, 30})  # CLOSE_CONNECTION, STOP_STREAMING

EQUITIES = "LEVELONE_EQUITIES"
OPTIONS = "LEVELONE_OPTIONS"
CHART = "CHART_EQUITY"
SERVICES = (EQUITIES, OPTIONS, CHART)
FIELDS = {
    EQUITIES: "0,1,2,3,4,5,9,34,35",
    OPTIONS: "0,2,3,4,10,16,17,18,28,29,30,31,32,35,38,39",
    CHART: "0,1,2,3,4,5,6,7,8",
}
_HUNDRED = Decimal(100)

SCHWAB_MARKET_DATA = MarketDataCapabilities(
    quotes=Support.native,
    trades=Support.emulated,  # the last trade of each level-one update
    bars=Support.native,  # CHART_EQUITY, equities only
    greeks=Support.native,  # LEVELONE_OPTIONS
    bar_intervals=frozenset({BarInterval.m1}),
    history=Support.native,
    history_intervals=frozenset({BarInterval.m1, BarInterval.m5, BarInterval.m15, BarInterval.d1}),
    max_symbols=None,  # per-service caps are not published
    max_sessions=1,  # assumed: TDA allowed one streamer per user (code 12)
)


def wire_key(symbol: str) -> str:
    return OptionContract.parse(symbol).occ_padded if is_option_symbol(symbol) else symbol


def our_symbol(key: str) -> str:
    return OptionContract.parse(key).symbol if is_option_symbol(key) else key


def service_keys(wanted: MarketDataSubscription) -> dict[str, frozenset[str]]:
    """The streamer keys each service needs for ``wanted`` (``MarketDataLimit`` for what no
    service carries: option bars, equity greeks)."""
    equities: set[str] = set()
    options: set[str] = set()
    chart: set[str] = set()
    for symbol in wanted.quotes | wanted.trades:
        (options if is_option_symbol(symbol) else equities).add(wire_key(symbol))
    for symbol in wanted.greeks:
        if not is_option_symbol(symbol):
            raise errors.MarketDataLimit(
                f"greeks are for option contracts, not {symbol}", broker=SLUG
            )
        options.add(wire_key(symbol))
    for interval, symbol in wanted.bars:
        if is_option_symbol(symbol) or interval is not BarInterval.m1:
            raise errors.MarketDataLimit(
                "Schwab streams 1-minute bars of equities only (CHART_EQUITY)", broker=SLUG
            )
        chart.add(symbol)
    return {EQUITIES: frozenset(equities), OPTIONS: frozenset(options), CHART: frozenset(chart)}


def check_streamer_url(url: str, rest_base: str) -> str:
    if url.startswith("wss://") or (url.startswith("ws://") and rest_base.startswith("http://")):
        return url
    raise errors.UnknownBrokerValue("Schwab's streamerSocketUrl is not a wss:// URL", broker=SLUG)


def _millis(state: dict[str, Any], field: str, fallback: datetime) -> datetime:
    value = state.get(field)
    return fallback if value is None else WIRE.epoch_ms(value, f"field {field}")


def _dec(state: dict[str, Any], field: str) -> Decimal | None:
    return WIRE.opt_decimal(state.get(field), f"field {field}", text=False)


class MarketState:
    """Last-known fields per (service, key), and the events one delta makes."""

    def __init__(self) -> None:
        self.fields: dict[tuple[str, str], dict[str, Any]] = {}
        self.forming: dict[str, Bar] = {}  # CHART_EQUITY: the newest minute per symbol

    def reset(self) -> None:
        self.fields.clear()
        self.forming.clear()

    def apply(
        self, service: str, item: dict[str, Any], at: datetime, wanted: MarketDataSubscription
    ) -> list[MarketEvent]:
        key = item.get("key")
        if not isinstance(key, str) or not key:
            raise WIRE.unknown(f"{service} key", key)
        changed = {k for k in item if k.isdigit()}
        state = self.fields.setdefault((service, key), {})
        state.update({k: item[k] for k in changed})
        symbol = our_symbol(key)
        if service == CHART:
            return self._bar(symbol, state, wanted)
        out: list[MarketEvent] = []
        if service == EQUITIES:
            quote_fields, trade_fields, prices = {"1", "2", "4", "5", "34"}, {"35"}, ("1", "2")
            sizes, times, last = ("4", "5"), ("34", "35"), ("3", "9")
        else:
            quote_fields, trade_fields, prices = {"2", "3", "16", "17", "38"}, {"39"}, ("2", "3")
            sizes, times, last = ("16", "17"), ("38", "39"), ("4", "18")
        if symbol in wanted.quotes and changed & quote_fields:
            out.append(
                MarketQuote(
                    symbol=symbol,
                    bid=_dec(state, prices[0]),
                    ask=_dec(state, prices[1]),
                    bid_size=_dec(state, sizes[0]),
                    ask_size=_dec(state, sizes[1]),
                    ts=_millis(state, times[0], at),
                    source=MarketDataSource.stream,
                )
            )
        price, size = _dec(state, last[0]), _dec(state, last[1])
        if symbol in wanted.trades and changed & trade_fields and price and size:
            out.append(
                MarketTrade(
                    symbol=symbol,
                    price=price,
                    size=size,
                    ts=_millis(state, times[1], at),
                    source=MarketDataSource.stream,
                )
            )
        greek_fields = {"10", "28", "29", "30", "31", "32", "35"}
        if service == OPTIONS and symbol in wanted.greeks and changed & greek_fields:
            iv = _dec(state, "10")
            out.append(
                GreeksUpdate(
                    symbol=symbol,
                    greeks=Greeks(
                        delta=_dec(state, "28"),
                        gamma=_dec(state, "29"),
                        theta=_dec(state, "30"),
                        vega=_dec(state, "31"),
                        rho=_dec(state, "32"),
                        iv=None if iv is None else iv / _HUNDRED,  # percent on the wire
                    ),
                    underlying_price=_dec(state, "35"),
                    ts=at,
                    source=MarketDataSource.stream,
                )
            )
        return out

    def _bar(
        self, symbol: str, state: dict[str, Any], wanted: MarketDataSubscription
    ) -> list[MarketEvent]:
        if (BarInterval.m1, symbol) not in wanted.bars:
            return []

        def need(field: str) -> Decimal:
            return WIRE.decimal(state.get(field), f"CHART_EQUITY field {field}", text=False)

        bar = Bar(
            symbol=symbol,
            interval=BarInterval.m1,
            start=WIRE.epoch_ms(state.get("7"), "CHART_EQUITY field 7"),
            open=need("2"),
            high=need("3"),
            low=need("4"),
            close=need("5"),
            volume=need("6"),
            vwap=None,
            trade_count=None,
            final=False,
            source=MarketDataSource.stream,
        )
        out: list[MarketEvent] = []
        previous = self.forming.get(symbol)
        if previous is not None:
            if bar.start < previous.start:
                return []  # an older minute after a newer one: already final
            if bar.start > previous.start:
                out.append(_final(previous))
        self.forming[symbol] = bar
        out.append(bar)
        return out


def _final(bar: Bar) -> Bar:
    return replace(bar, final=True)


class SchwabMarketSession(UpstreamMarketSession):
    """One Schwab streamer connection for market data (a ``MarketDataSession``)."""

    broker = SLUG
    name = "schwab market streamer"
    frames = frames_logger(__name__)  # never DEBUG: the LOGIN request carries the token
    ping_interval = 20.0

    def __init__(
        self,
        streamer_info: Callable[[], Awaitable[dict[str, str]]],
        credentials: Credentials,
        rest_base: str,
        *,
        streamer_url_override: str | None = None,
        capabilities: MarketDataCapabilities = SCHWAB_MARKET_DATA,
        idle_timeout: float = 60.0,
        handshake_timeout: float = 10.0,
        max_backoff: float = 30.0,
    ) -> None:
        super().__init__(
            capabilities,
            idle_timeout=idle_timeout,
            handshake_timeout=handshake_timeout,
            max_backoff=max_backoff,
        )
        self._streamer_info = streamer_info
        self._credentials = credentials
        self._rest_base = rest_base
        self._streamer_url_override = streamer_url_override
        self._info: dict[str, str] = {}
        self._ids = itertools.count(1)
        self.state = MarketState()
        self.refused: list[tuple[str, str, int]] = []  # (service, command, code) not 0

    def __repr__(self) -> str:
        return "SchwabMarketSession()"

    async def update(self, wanted: MarketDataSubscription) -> None:
        service_keys(wanted)  # MarketDataLimit for what no service carries, nothing changed
        await super().update(wanted)

    async def _open(self) -> str:
        expires_at = access_token_expires_at(self._credentials)
        if expires_at is not None and expires_at <= datetime.now(UTC):
            # The token is fixed for this session (30 minutes at Schwab): a reconnect after
            # it expired needs a new session built with the refreshed token from the vault.
            raise errors.AuthenticationFailed(
                "the Schwab access token of this market-data session expired", broker=SLUG
            )
        self._info = await self._streamer_info()
        # ``schwab_streamer_url`` replaces the advertised socket (a local fake serves ws://
        # while advertising Schwab's wss:// URL), as for the account-activity stream.
        if self._streamer_url_override:
            return self._streamer_url_override
        return check_streamer_url(self._info["streamerSocketUrl"], self._rest_base)

    def _request(self, service: str, command: str, parameters: dict[str, str]) -> dict[str, Any]:
        info = self._info
        return {
            "service": service,
            "requestid": str(next(self._ids)),
            "command": command,
            "SchwabClientCustomerId": info["schwabClientCustomerId"],
            "SchwabClientCorrelId": info["schwabClientCorrelId"],
            "parameters": parameters,
        }

    async def _handshake(self, ws: ClientConnection) -> None:
        self.state.reset()
        login = self._request(
            "ADMIN",
            "LOGIN",
            {
                "Authorization": self._credentials[ACCESS_TOKEN],
                "SchwabClientChannel": self._info["schwabClientChannel"],
                "SchwabClientFunctionId": self._info["schwabClientFunctionId"],
            },
        )
        await ws.send(json.dumps({"requests": [login]}))
        while True:  # the LOGIN answer; anything before it is dropped (nothing subscribed)
            async with asyncio.timeout(self._handshake_timeout):
                message = _decode(await ws.recv())
            for response in message.get("response") or []:
                if isinstance(response, dict) and response.get("requestid") == login["requestid"]:
                    code = _code(response)
                    if code == LOGIN_DENIED:
                        raise errors.AuthenticationFailed(
                            "Schwab's streamer refused the access token", broker=SLUG
                        )
                    if code != 0:
                        raise StreamRefused(f"LOGIN answered {code}")
                    return

    async def _send_subscription(self, ws: ClientConnection, diff: SubscriptionDiff) -> None:
        before = service_keys((diff.wanted - diff.added) | diff.removed)
        after = service_keys(diff.wanted)
        requests: list[dict[str, Any]] = []
        for service in SERVICES:
            held, wanted = before[service], after[service]
            gone, new = held - wanted, wanted - held
            if gone:
                requests.append(self._request(service, "UNSUBS", {"keys": ",".join(sorted(gone))}))
                for key in gone:
                    self.state.fields.pop((service, key), None)
                    if service == CHART:
                        self.state.forming.pop(key, None)
            if new:
                # SUBS replaces the service's keys: the first keys; ADD appends the others.
                command = "ADD" if held - gone else "SUBS"
                keys = ",".join(sorted(new))
                requests.append(
                    self._request(service, command, {"keys": keys, "fields": FIELDS[service]})
                )
        if requests:
            await ws.send(json.dumps({"requests": requests}))

    async def _read(self, ws: ClientConnection) -> AsyncIterator[MarketEvent]:
        while (raw := await self._recv(ws)) is not None:
            message = _decode(raw)
            for response in message.get("response") or []:
                if not isinstance(response, dict):
                    continue
                code = _code(response)
                if code in CLOSING_CODES:
                    log.warning("schwab streamer closed the session", extra={"code": code})
                    return
                if code != 0:
                    self.refused.append(
                        (str(response.get("service")), str(response.get("command")), code)
                    )
                    log.warning(
                        "schwab streamer refused a request",
                        extra={"broker": SLUG, "code": code, "service": response.get("service")},
                    )
            for data in message.get("data") or []:
                if not isinstance(data, dict) or data.get("service") not in SERVICES:
                    continue
                at = _millis(data, "timestamp", datetime.now(UTC))
                for item in data.get("content") or []:
                    if not isinstance(item, dict):
                        continue
                    try:
                        events = self.state.apply(data["service"], item, at, self.wanted)
                    except errors.UnknownBrokerValue:
                        log.error("schwab market message skipped", exc_info=True)
                        continue
                    for event in events:
                        yield event


def _decode(frame: str | bytes) -> dict[str, Any]:
    message = mapping.loads(frame)
    if not isinstance(message, dict):
        raise WIRE.unknown("stream message", type(message).__name__)
    return message


def _code(response: dict[str, Any]) -> int:
    content = response.get("content")
    code = content.get("code") if isinstance(content, dict) else None
    if isinstance(code, bool) or not isinstance(code, int):
        raise WIRE.unknown("stream response code", code)
    return code


# --- history -----------------------------------------------------------------------------

_HISTORY = {
    BarInterval.m1: ("day", "minute", "1"),
    BarInterval.m5: ("day", "minute", "5"),
    BarInterval.m15: ("day", "minute", "15"),
    BarInterval.d1: ("year", "daily", "1"),
}


async def get_bars(
    client: BrokerClient,
    symbol: str,
    interval: BarInterval,
    start: datetime,
    end: datetime,
    limit: int,
) -> list[Bar]:
    """``GET /marketdata/v1/pricehistory``: bars with ``start <= bar.start < end``, oldest
    first, at most ``limit``; ``NotSupported`` for 1h (aggregated from 15m by the gateway)
    and for option contracts (price history serves equities and ETFs)."""
    shape = _HISTORY.get(interval)
    if shape is None or is_option_symbol(symbol):
        raise errors.NotSupported(
            f"Schwab price history has no {interval.value} bars of {symbol}", broker=SLUG
        )
    if start >= end or limit <= 0:
        return []
    period_type, frequency_type, frequency = shape
    params = {
        "symbol": symbol,
        "periodType": period_type,
        "frequencyType": frequency_type,
        "frequency": frequency,
        "startDate": str(int(start.timestamp() * 1000)),
        "endDate": str(int(end.timestamp() * 1000)),
        "needExtendedHoursData": "true",
    }
    body = WIRE.json_body(await client.request("GET", "/marketdata/v1/pricehistory", params=params))
    if not isinstance(body, dict) or not isinstance(body.get("candles", []), list):
        raise WIRE.unknown("pricehistory payload", type(body).__name__)
    bars: list[Bar] = []
    now = datetime.now(UTC)
    for candle in body.get("candles") or []:
        if not isinstance(candle, dict):
            raise WIRE.unknown("candle", type(candle).__name__)
        bar = Bar(
            symbol=symbol,
            interval=interval,
            start=WIRE.epoch_ms(candle.get("datetime"), "candle datetime"),
            open=WIRE.decimal(candle.get("open"), "candle open", text=False),
            high=WIRE.decimal(candle.get("high"), "candle high", text=False),
            low=WIRE.decimal(candle.get("low"), "candle low", text=False),
            close=WIRE.decimal(candle.get("close"), "candle close", text=False),
            volume=WIRE.decimal(candle.get("volume"), "candle volume", text=False),
            vwap=None,
            trade_count=None,
            final=True,
            source=MarketDataSource.history,
        )
        if window_end(bar.start, interval) > now:  # the window still under way: forming
            bar = replace(bar, final=False)
        if start <= bar.start < end:
            bars.append(bar)
    bars.sort(key=lambda b: b.start)
    return bars[:limit]
