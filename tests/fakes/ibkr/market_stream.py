"""The fake gateway's WebSocket (``/v1/api/ws``) for streaming market data, from the paper
market.

Sources: https://www.interactivebrokers.com/campus/ibkr-api-page/cpapi-v1/#websockets
(``smd+{conid}+{"fields": [...]}``, ``umd+{conid}+{}``, ``tic``, topics ``system``/``sts``,
updates carrying only the changed fields) and Voyz/ibind ``ibind/client/ibkr_ws_client.py``
(the cookie ``api={"session": <id from /tickle>}``, ``{"topic": "system", "hb": ms}``
heartbeats, ``{"topic": "sts", "args": {"authenticated": ...}}``, ``smd+`` messages with
``conid``, ``_updated`` and the field ids).

Chosen here (not documented): the ``tic`` answer's body, the first message of a
subscription carrying every asked field and later ones only changes, the tick
(``tick_seconds``), and that a subscription not re-issued within ``expiry_seconds`` (IBKR's
10 minutes by default) stops streaming. Fault switches: ``faults.silent`` (nothing is sent),
``drop()`` closes every socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from app.brokers import errors
from app.brokers.base import BarInterval
from app.paper.market_data import PaperMarketData
from app.paper.quotes import SeededQuoteSource
from tests.fakes.ibkr.options import OptionBook

WS_PATH = "/ws"
HISTORY_PATH = "/iserver/marketdata/history"
_BARS = {"1min": BarInterval.m1, "5min": BarInterval.m5, "15min": BarInterval.m15,
         "1h": BarInterval.h1, "1d": BarInterval.d1}  # fmt: skip
_UNITS = {"min": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
MAX_POINTS = 1000  # "Max of 1000 data points supported"


@dataclass
class MarketFaults:
    silent: bool = False


@dataclass(eq=False)
class _Socket:
    queue: asyncio.Queue[dict[str, Any] | None]
    fields: dict[int, list[str]] = field(default_factory=dict)
    issued: dict[int, float] = field(default_factory=dict)  # monotonic time of the last smd
    sent: dict[int, dict[str, Any]] = field(default_factory=dict)  # last values sent


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


class FakeIbkrMarket:
    def __init__(
        self,
        quotes: SeededQuoteSource,
        options: OptionBook,
        conids: dict[str, int],
        *,
        sessions: set[str],
        authenticated: Callable[[], bool],
        gate: Callable[[Request], Awaitable[Response | None]],
        clock: Callable[[], datetime],
        tick_seconds: float = 0.05,
        heartbeat_seconds: float = 1.0,
        expiry_seconds: float = 600.0,
    ) -> None:
        self.quotes = quotes
        self.options = options
        self.symbols = {c: s for s, c in conids.items()}
        self.sessions = sessions  # ids /tickle handed out
        self._authenticated = authenticated
        self._gate = gate
        self.data = PaperMarketData(quotes, options.market)
        self.clock = clock
        self.tick_seconds = tick_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.expiry_seconds = expiry_seconds
        self.faults = MarketFaults()
        self.received: list[str] = []  # every text message from clients
        self.connections_opened = 0
        self.refused = 0
        self.expired = 0
        self._sockets: set[_Socket] = set()

    def drop(self) -> None:
        for socket in self._sockets:
            socket.queue.put_nowait(None)

    def subscribed(self) -> dict[int, list[str]]:
        found: dict[int, list[str]] = {}
        for socket in self._sockets:
            found.update(socket.fields)
        return found

    def _session_of(self, websocket: WebSocket) -> str | None:
        for part in websocket.headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == "api":
                with contextlib.suppress(ValueError):
                    parsed = json.loads(value)
                    if isinstance(parsed, dict) and isinstance(parsed.get("session"), str):
                        return str(parsed["session"])
        return None

    async def serve(self, websocket: WebSocket) -> None:
        session = self._session_of(websocket)
        if session is None or session not in self.sessions:
            self.refused += 1
            await websocket.close(code=1008)
            return
        await websocket.accept()
        socket = _Socket(queue=asyncio.Queue())
        self._sockets.add(socket)
        self.connections_opened += 1
        socket.queue.put_nowait({"topic": "system", "success": "fakeuser"})
        socket.queue.put_nowait({"topic": "sts", "args": {"authenticated": self._authenticated()}})

        async def read() -> None:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                while True:
                    message = await websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        break
                    text = message.get("text") or (message.get("bytes") or b"").decode()
                    self.received.append(text)
                    self._on_text(socket, text)
            socket.queue.put_nowait(None)

        async def tick() -> None:
            beat = 0.0
            while True:
                await asyncio.sleep(self.tick_seconds)
                beat += self.tick_seconds
                if self.faults.silent:
                    continue
                if beat >= self.heartbeat_seconds:
                    beat = 0.0
                    socket.queue.put_nowait({"topic": "system", "hb": _ms(self.clock())})
                self._publish(socket)

        reader = asyncio.create_task(read())
        ticker = asyncio.create_task(tick())
        try:
            while True:
                item = await socket.queue.get()
                if item is None:
                    break
                if self.faults.silent:
                    continue
                await websocket.send_text(json.dumps(item))
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            self._sockets.discard(socket)
            reader.cancel()
            ticker.cancel()
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await websocket.close(code=1000)

    def _on_text(self, socket: _Socket, text: str) -> None:
        if text == "tic":
            socket.queue.put_nowait(
                {"topic": "tic", "alive": True, "lastAccessed": _ms(self.clock())}
            )
            return
        kind, _, rest = text.partition("+")
        raw_conid, _, args = rest.partition("+")
        if kind not in ("smd", "umd"):
            return
        try:
            conid = int(raw_conid)
        except ValueError:
            return
        if kind == "umd":
            socket.fields.pop(conid, None)
            socket.issued.pop(conid, None)
            socket.sent.pop(conid, None)
            return
        try:
            body = json.loads(args or "{}")
        except ValueError:
            return
        fields = body.get("fields") if isinstance(body, dict) else None
        if not isinstance(fields, list) or not self._known(conid):
            socket.queue.put_nowait({"topic": f"smd+{conid}", "error": "invalid conid"})
            return
        if socket.fields.get(conid) != fields:
            socket.sent.pop(conid, None)  # a new field set starts with every field
        socket.fields[conid] = [str(f) for f in fields]
        socket.issued[conid] = time.monotonic()

    def _known(self, conid: int) -> bool:
        return conid in self.symbols or self.options.contract(conid) is not None

    def _values(self, conid: int) -> dict[str, Any]:
        now = self.clock()
        option = self.options.contract(conid)
        if option is not None:
            values = self.options.snapshot_fields(option, now)
            values.update({"85": "10", "88": "12"})
            return values
        q = self.quotes.quote(self.symbols[conid], now)
        return {"31": str(q.last), "84": str(q.bid), "86": str(q.ask),
                "85": str(q.ask_size), "88": str(q.bid_size)}  # fmt: skip

    def _publish(self, socket: _Socket) -> None:
        now = time.monotonic()
        for conid, fields in list(socket.fields.items()):
            if now - socket.issued[conid] > self.expiry_seconds:
                self.expired += 1
                del socket.fields[conid]
                socket.sent.pop(conid, None)
                continue
            values = {k: v for k, v in self._values(conid).items() if k in fields}
            last = socket.sent.setdefault(conid, {})
            changed = {k: v for k, v in values.items() if last.get(k) != v}
            if not changed:
                continue
            last.update(changed)
            socket.queue.put_nowait(
                {"topic": f"smd+{conid}", "conid": conid, "_updated": _ms(self.clock()),
                 "server_id": "q0", **changed}
            )  # fmt: skip

    # --- REST history (``GET /iserver/marketdata/history``) ------------------------------

    async def history(self, request: Request) -> Response:
        """Bars of ``period`` back from ``startTime`` (direction -1), at most 1000, with
        ``t`` in epoch ms and ``volumeFactor`` 1 (chosen here: the paper market's volumes
        are whole)."""
        gated = await self._gate(request)
        if gated is not None:
            return gated
        params = request.query_params
        interval = _BARS.get(params.get("bar", ""))
        period = params.get("period", "")
        unit = next((u for u in ("min", "h", "d") if period.endswith(u)), None)
        try:
            conid = int(params["conid"])
            count = int(period.removesuffix(unit or ""))
            until = datetime.strptime(params["startTime"], "%Y%m%d-%H:%M:%S").replace(tzinfo=UTC)
        except (KeyError, ValueError):
            return JSONResponse({"error": "Bad Request: invalid parameters"}, status_code=400)
        symbol = self.symbols.get(conid)
        if interval is None or unit is None or symbol is None:
            return JSONResponse({"error": "Bad Request: invalid parameters"}, status_code=400)
        since = until - _UNITS[unit] * count
        try:
            bars = self.data.history(symbol, interval, since, until, 10_000, self.clock())
        except (errors.UnknownSymbol, errors.NotSupported):
            bars = []
        bars = bars[-MAX_POINTS:]
        rows = [{"o": float(b.open), "c": float(b.close), "h": float(b.high),
                 "l": float(b.low), "v": float(b.volume), "t": _ms(b.start)}
                for b in bars]  # fmt: skip
        return JSONResponse(
            {"serverId": "20477", "symbol": symbol, "text": symbol, "priceFactor": 100,
             "startTime": since.strftime("%Y%m%d-%H:%M:%S"), "timePeriod": period,
             "barLength": interval.seconds, "mdAvailability": "S", "outsideRth": True,
             "volumeFactor": 1, "direction": -1, "messageVersion": 2, "data": rows,
             "points": len(rows), "travelTime": 12}
        )  # fmt: skip
