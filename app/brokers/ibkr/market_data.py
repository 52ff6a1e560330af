"""IBKR market data: the Client Portal gateway's WebSocket (``smd`` streaming market data:
quotes and option greeks).

Protocol (https://www.interactivebrokers.com/campus/ibkr-api-page/cpapi-v1/#websockets;
confirmed with Voyz/ibind ``ibind/client/ibkr_ws_client.py``):

1. ``POST /tickle`` answers ``{"session": <id>, ...}``; the WebSocket ``wss://{gateway}/
   v1/api/ws`` is opened with the cookie ``api={"session": "<id>"}`` (ibind
   ``_get_cookie``). Every (re)connection tickles for a fresh id.
2. The gateway says ``{"topic": "system", "success": <user>}`` and ``{"topic": "sts",
   "args": {"authenticated": true | false}}``; unauthenticated ends the session
   (``AuthenticationFailed``: the user must log in at the gateway), and so does a later
   ``sts`` saying so.
3. ``smd+{conid}+{"fields": [...]}`` subscribes one conid, ``umd+{conid}+{}`` unsubscribes
   it: ADDITIVE per conid (``diff.added``/``removed``); a conid whose field set changes is
   subscribed again with the new set.
4. Messages ``{"topic": "smd+{conid}", "conid", "_updated": <epoch ms>, "31": ..., "84":
   ...}`` carry only the fields that changed ("API will only return fields that were
   updated", ibind ``_preprocess_market_data_message``): they are merged into the conid's
   last-known state, and events are built from that state. Fields: 31 last, 84 bid, 85 ask
   size, 86 ask, 88 bid size, 7308 delta, 7309 gamma, 7310 theta, 7311 vega, 7633 implied
   volatility in percent (``"24.5%"``, a fraction here).
5. Keepalive: ``tic`` is sent every ``tic_seconds`` (ibind keeps the gateway's ``tic``
   answer); the gateway sends ``{"topic": "system", "hb": <epoch ms>}`` heartbeats, so a
   connection silent past ``idle_timeout`` is restarted. ``smd`` subscriptions are
   re-issued every ``renew_seconds`` (9 minutes): "smd subscriptions terminate after 10
   minutes" since 2026-04-14
   (https://www.interactivebrokers.com/campus/ibkr-api-page/web-api-changelog/).
6. The ``/tickle`` session id is reused while the last tickle is fresh (the adapter's
   ``_ws_session``): the gateway allows one tickle a second, and reconnecting faster
   than that would put the gateway in IBKR's penalty box.

TLS: the WebSocket uses the REST client's own TLS context (``app.brokers.http.tls_context``
of ``ibkr_gateway_ca_bundle``, else ``ibkr_gateway_verify_tls``), so a gateway with a
self-signed certificate is verified against the CA bundle the deployment gives for it; a
certificate that does not verify is a ``MarketGap`` saying so and naming the setting.

Symbols become conids through the adapter's resolution (stocks: secdef search; options:
the secdef walk) before anything changes: an unknown symbol is refused by ``update``.
IBKR's stream has no trades or bars here (``smh`` is not used): those channels are
unsupported. History bars come from REST (``get_bars`` below).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
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
    Support,
    is_option_symbol,
)
from app.brokers.ibkr import mapping
from app.brokers.ibkr.options import _field
from app.brokers.market_data.subscription import SubscriptionDiff
from app.brokers.market_data.upstream import UpstreamMarketSession
from app.brokers.upstream_stream import StreamRefused, decode_object, frames_logger

log = logging.getLogger(__name__)

SLUG = mapping.SLUG
QUOTE_FIELDS = ("31", "84", "85", "86", "88")
GREEK_FIELDS = ("7308", "7309", "7310", "7311", "7633")

IBKR_MARKET_DATA = MarketDataCapabilities(
    quotes=Support.native,
    greeks=Support.native,  # 7308-7311 and 7633 on option conids
    history=Support.native,  # GET /iserver/marketdata/history
    history_intervals=frozenset(
        {BarInterval.m1, BarInterval.m5, BarInterval.m15, BarInterval.h1, BarInterval.d1}
    ),
    max_symbols=100,  # IBKR's default market-data lines (more with quote booster packs)
    max_sessions=1,  # one WebSocket per gateway session
)

Tickle = Callable[[], Awaitable[str]]
ConidOf = Callable[[str], Awaitable[int]]


def fields_for(symbol: str, wanted: MarketDataSubscription) -> tuple[str, ...]:
    fields: list[str] = []
    if symbol in wanted.quotes:
        fields.extend(QUOTE_FIELDS)
    if symbol in wanted.greeks and is_option_symbol(symbol):
        fields.extend(GREEK_FIELDS)
    return tuple(fields)


class IbkrMarketSession(UpstreamMarketSession):
    """One gateway WebSocket for market data (a ``MarketDataSession``)."""

    broker = SLUG
    name = "IBKR market stream"
    tls_hint = "; give the gateway's CA bundle in BROKERAGE_IBKR_GATEWAY_CA_BUNDLE"
    frames = frames_logger(__name__)

    def __init__(
        self,
        url: str,
        tickle: Tickle,
        conid_of: ConidOf,
        *,
        capabilities: MarketDataCapabilities = IBKR_MARKET_DATA,
        idle_timeout: float = 30.0,
        tic_seconds: float = 50.0,
        renew_seconds: float = 540.0,
        handshake_timeout: float = 10.0,
        max_backoff: float = 30.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(
            capabilities,
            idle_timeout=idle_timeout,
            handshake_timeout=handshake_timeout,
            max_backoff=max_backoff,
            tls=tls,
        )
        self._url = url
        self._tickle = tickle
        self._conid_of = conid_of
        self.tic_seconds = tic_seconds
        self.renew_seconds = renew_seconds
        self._conids: dict[str, int] = {}
        self._symbols: dict[int, str] = {}
        self._fields: dict[int, tuple[str, ...]] = {}  # what each conid is subscribed with
        self._issued: dict[int, float] = {}  # monotonic time of each conid's last smd
        self._state: dict[int, dict[str, Any]] = {}  # last-known fields per conid
        self.renewals = 0

    def __repr__(self) -> str:
        return "IbkrMarketSession(gateway=<sealed>)"

    async def update(self, wanted: MarketDataSubscription) -> None:
        """Conids first (``UnknownSymbol`` changes nothing), then the shared checks."""
        for symbol in sorted(wanted.symbols - self._conids.keys()):
            conid = await self._conid_of(symbol)
            self._conids[symbol] = conid
            self._symbols[conid] = symbol
        await super().update(wanted)

    async def _open(self) -> str:
        session = await self._tickle()
        self.headers = {"Cookie": "api=" + json.dumps({"session": session})}
        return self._url

    async def _handshake(self, ws: ClientConnection) -> None:
        """Until the gateway's ``sts`` says authenticated; state starts afresh."""
        self._fields.clear()
        self._issued.clear()
        self._state.clear()
        async with asyncio.timeout(self._handshake_timeout):
            while True:
                message = decode_object(await ws.recv(), "gateway message", SLUG)
                if message.get("topic") != "sts":
                    continue
                args = message.get("args")
                if isinstance(args, dict) and "authenticated" in args:
                    if args["authenticated"] is not True:
                        raise errors.AuthenticationFailed(
                            "the IBKR gateway has no brokerage session; log in at the gateway",
                            broker=SLUG,
                        )
                    return

    async def _smd(self, ws: ClientConnection, conid: int, fields: tuple[str, ...]) -> None:
        await ws.send(f"smd+{conid}+" + json.dumps({"fields": list(fields)}))
        self._fields[conid] = fields
        self._issued[conid] = time.monotonic()

    async def _umd(self, ws: ClientConnection, conid: int) -> None:
        await ws.send(f"umd+{conid}+{{}}")
        self._fields.pop(conid, None)
        self._issued.pop(conid, None)
        self._state.pop(conid, None)

    async def _send_subscription(self, ws: ClientConnection, diff: SubscriptionDiff) -> None:
        wanted = diff.wanted
        for symbol in sorted(diff.added.symbols | diff.removed.symbols):
            conid = self._conids[symbol]
            fields = fields_for(symbol, wanted)
            held = self._fields.get(conid, ())
            if fields == held:
                continue
            if held:
                await self._umd(ws, conid)
            if fields:
                await self._smd(ws, conid, fields)

    async def _read(self, ws: ClientConnection) -> AsyncIterator[MarketEvent]:
        keeper = asyncio.create_task(self._keep(ws))
        try:
            while True:
                raw = await self._recv(ws)
                if raw is None:
                    return
                for event in self._events(decode_object(raw, "gateway message", SLUG)):
                    yield event
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await keeper

    async def _keep(self, ws: ClientConnection) -> None:
        """``tic`` every ``tic_seconds``; each ``smd`` again once ``renew_seconds`` old."""
        last_tic = time.monotonic()
        step = min(self.tic_seconds, self.renew_seconds) / 4
        while True:
            await asyncio.sleep(step)
            now = time.monotonic()
            async with self._lock:
                if now - last_tic >= self.tic_seconds:
                    await ws.send("tic")
                    last_tic = now
                for conid, issued in list(self._issued.items()):
                    if now - issued >= self.renew_seconds:
                        await self._smd(ws, conid, self._fields[conid])
                        self.renewals += 1

    def _events(self, message: dict[str, Any]) -> list[MarketEvent]:
        topic = message.get("topic")
        if topic == "sts":
            args = message.get("args")
            if isinstance(args, dict) and args.get("authenticated") is False:
                raise errors.AuthenticationFailed(
                    "the IBKR gateway's session ended; log in at the gateway", broker=SLUG
                )
            return []
        if "error" in message and not isinstance(topic, str):
            raise StreamRefused(str(message.get("error")))
        if not isinstance(topic, str) or not topic.startswith("smd+"):
            return []  # system heartbeats, tic answers, account and bulletin messages
        conid_raw = message.get("conid", topic.removeprefix("smd+"))
        try:
            conid = int(str(conid_raw))
        except ValueError:
            raise mapping.unknown("smd conid", conid_raw) from None
        symbol = self._symbols.get(conid)
        if symbol is None or conid not in self._fields:
            return []  # an unsubscribed conid's last message
        state = self._state.setdefault(conid, {})
        changed = {k for k in message if k in QUOTE_FIELDS or k in GREEK_FIELDS}
        state.update({k: message[k] for k in changed})
        updated = message.get("_updated")
        if updated is not None:
            state["_updated"] = updated
        stamp = state.get("_updated")
        at = self._clock() if stamp is None else mapping.WIRE.epoch_ms(stamp, "_updated")
        wanted = self._wanted
        out: list[MarketEvent] = []
        if symbol in wanted.quotes and changed & set(QUOTE_FIELDS):
            out.append(
                MarketQuote(
                    symbol=symbol,
                    bid=_field(state, "84"),
                    ask=_field(state, "86"),
                    bid_size=_size(state, "88"),
                    ask_size=_size(state, "85"),
                    ts=at,
                    source=MarketDataSource.stream,
                )
            )
        if symbol in wanted.greeks and changed & set(GREEK_FIELDS):
            iv = _field(state, "7633")
            out.append(
                GreeksUpdate(
                    symbol=symbol,
                    greeks=Greeks(
                        delta=_field(state, "7308"),
                        gamma=_field(state, "7309"),
                        theta=_field(state, "7310"),
                        vega=_field(state, "7311"),
                        rho=None,  # IBKR has no rho field
                        iv=None if iv is None else iv / 100,  # a percent on the wire
                    ),
                    underlying_price=None,
                    ts=at,
                    source=MarketDataSource.stream,
                )
            )
        return out


def _size(state: dict[str, Any], key: str) -> Decimal | None:
    """Sizes may carry thousands separators and a ``K``/``M`` suffix (ibind definitions)."""
    raw = state.get(key)
    if raw is None or raw == "":
        return None
    text = str(raw).replace(",", "").strip()
    scale = Decimal(1)
    if text[-1:] in ("K", "M"):
        scale = Decimal(1000) if text[-1] == "K" else Decimal(1_000_000)
        text = text[:-1]
    try:
        value = Decimal(text) * scale
    except ArithmeticError:
        raise mapping.unknown(f"smd field {key}", raw) from None
    if not value.is_finite():
        raise mapping.unknown(f"smd field {key}", raw)
    return value


def session_of(body: object) -> str:
    """The WebSocket session id from a ``/tickle`` answer (authenticated only)."""
    if not isinstance(body, dict):
        raise mapping.unknown("tickle payload", type(body).__name__)
    status = (body.get("iserver") or {}).get("authStatus")
    if not isinstance(status, dict) or status.get("authenticated") is not True:
        raise errors.AuthenticationFailed(
            "the IBKR gateway has no brokerage session; log in at the gateway", broker=SLUG
        )
    session = body.get("session")
    if not isinstance(session, str) or not session:
        raise mapping.unknown("tickle session", type(session).__name__)
    return session


def ws_url(base_url: str) -> str:
    """``https://host:5000/v1/api`` -> ``wss://host:5000/v1/api/ws``."""
    scheme, rest = base_url.split("://", 1)
    return ("wss" if scheme == "https" else "ws") + "://" + rest.rstrip("/") + "/ws"


# --- history -------------------------------------------------------------------------------
# GET /iserver/marketdata/history?conid&bar&period&startTime&outsideRth
# (https://www.interactivebrokers.com/campus/ibkr-api-page/cpapi-v1/#hmds-history): "Max of
# 1000 data points"; ``direction`` -1: the period extends BACK from ``startTime``
# (YYYYMMDD-HH:mm:ss, UTC); ``data`` rows ``{"o", "h", "l", "c", "v", "t"}`` with ``t`` in
# epoch ms and volume reported divided by ``volumeFactor``; 5 concurrent requests at most
# (the adapter's pacer sends them one at a time).

HISTORY_BARS = {
    BarInterval.m1: ("1min", "8h", timedelta(hours=8)),
    BarInterval.m5: ("5min", "3d", timedelta(days=3)),
    BarInterval.m15: ("15min", "10d", timedelta(days=10)),
    BarInterval.h1: ("1h", "41d", timedelta(days=41)),
    BarInterval.d1: ("1d", "1000d", timedelta(days=1000)),
}
HISTORY_PAGES = 20  # requests one get_bars call may make

Request = Callable[[str, dict[str, str]], Awaitable[Any]]


def _history_rows(body: object) -> tuple[list[dict[str, Any]], Decimal]:
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise mapping.unknown("history payload", type(body).__name__)
    factor = body.get("volumeFactor", 1)
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise mapping.unknown("volumeFactor", factor)
    rows = [r for r in body["data"] if isinstance(r, dict)]
    if len(rows) != len(body["data"]):
        raise mapping.unknown("history bar", "not an object")
    return rows, Decimal(factor)


async def get_bars(
    request: Request,
    conid: int,
    symbol: str,
    interval: BarInterval,
    start: datetime,
    end: datetime,
    limit: int,
    now: datetime,
) -> list[Bar]:
    """Final bars with ``start <= bar.start < end`` whose window ended by ``now``, oldest
    first, at most ``limit``: pages walk forward from ``start``, each asking one period back
    from its ``startTime``."""
    shape = HISTORY_BARS.get(interval)
    if shape is None:
        raise errors.NotSupported(f"IBKR has no {interval.value} history bars", broker=SLUG)
    bar, period, span = shape
    step = timedelta(seconds=interval.seconds)
    found: dict[datetime, Bar] = {}
    last = min(end, now)
    until = min(start + span, last)
    for _ in range(HISTORY_PAGES):
        body = await request(
            "/iserver/marketdata/history",
            {
                "conid": str(conid),
                "bar": bar,
                "period": period,
                "startTime": until.astimezone(UTC).strftime("%Y%m%d-%H:%M:%S"),
                "outsideRth": "true",
            },
        )
        rows, factor = _history_rows(body)
        for row in rows:
            at = mapping.WIRE.epoch_ms(row.get("t"), "t")
            prices = [mapping.WIRE.decimal(row.get(k), k, text=False) for k in "ohlc"]
            found[at] = Bar(
                symbol=symbol,
                interval=interval,
                start=at,
                open=prices[0],
                high=prices[1],
                low=prices[2],
                close=prices[3],
                volume=mapping.WIRE.decimal(row.get("v"), "v", text=False) * factor,
                vwap=None,
                trade_count=None,
                final=True,
                source=MarketDataSource.history,
            )
        wanted = [b for b in found.values() if start <= b.start < end and b.start + step <= now]
        if len(wanted) >= limit or until >= last:
            break
        until = min(until + span, last)
    bars = sorted(
        (b for b in found.values() if start <= b.start < end and b.start + step <= now),
        key=lambda b: b.start,
    )
    return bars[: max(limit, 0)]
