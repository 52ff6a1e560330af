"""The fake Schwab's market data: streamer services and price history.

The real protocol (schwab-py ``schwab/streaming.py`` and ``tests/streaming_test.py``, whose
messages were recorded from Schwab): on the streamer socket that ``server.py`` serves,
``LEVELONE_EQUITIES``, ``LEVELONE_OPTIONS`` (padded OCC keys) and ``CHART_EQUITY`` take
``SUBS`` (replace the service's keys), ``ADD`` (append) and ``UNSUBS`` (remove), each
answered in ``response[]`` with code 0; data arrive as ``{"data": [{"service", "timestamp",
"command", "content": [{"key", "<field index>": value, ...}]}]}``. Level-one updates carry
the fields that changed since the last message of that key on that connection (the first
one all of them: a snapshot right after ``SUBS``/``ADD``); ``CHART_EQUITY`` sends each
minute once it is over. Option volatility is in percent. ``GET /marketdata/v1/pricehistory``
answers ``{"candles": [{"open", "high", "low", "close", "volume", "datetime"}], "symbol",
"empty"}``.

Data come from the paper market (``PaperMarketData`` over the fake's quote source and
option market); ``publish(steps)`` moves this market on from its cursor (the fake's clock at
first) and sends every subscriber what changed. Faults are the fake's own: ``stream_silent``,
``heartbeat_seconds``, ``drop_streams()``; and ``buffer``: a connection with more frames
queued than that is a slow reader, and is closed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from app.brokers.base import BarInterval, OptionContract, is_option_symbol
from app.brokers.errors import NotSupported, UnknownSymbol
from app.brokers.market_data.bars import window_start
from app.paper.market_data import PaperMarketData

if TYPE_CHECKING:
    from tests.fakes.schwab.server import FakeSchwab

Queue = asyncio.Queue[str | None]
EQUITIES, OPTIONS, CHART = "LEVELONE_EQUITIES", "LEVELONE_OPTIONS", "CHART_EQUITY"
SERVICES = (EQUITIES, OPTIONS, CHART)
FREQUENCIES = {
    ("minute", "1"): BarInterval.m1,
    ("minute", "5"): BarInterval.m5,
    ("minute", "15"): BarInterval.m15,
    ("daily", "1"): BarInterval.d1,
}


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _num(value: Decimal) -> Any:
    return int(value) if value == value.to_integral_value() else float(value)


class SchwabMarketStream:
    def __init__(self, fake: FakeSchwab) -> None:
        self.fake = fake
        self.data = PaperMarketData(fake.quotes, fake.options)
        self.subs: dict[Queue, dict[str, set[str]]] = {}
        self._sent: dict[tuple[Queue, str, str], dict[str, Any]] = {}
        self.cursor: int | None = None
        self.requests: list[tuple[str, str, str]] = []  # (service, command, keys)
        self.buffer = 100_000  # frames queued per connection before it counts as slow

    def routes(self) -> list[BaseRoute]:
        return [Route("/marketdata/v1/pricehistory", self.price_history)]

    def handles(self, service: object) -> bool:
        return service in SERVICES

    def subscribed(self, service: str) -> set[str]:
        """The keys of ``service`` over every live connection."""
        return {k for s in self.subs.values() for k in s.get(service, set())}

    # --- requests on the streamer socket --------------------------------------------------

    def request(
        self,
        queue: Queue,
        request: dict[str, Any],
        respond: Callable[[dict[str, Any], int, str], str],
    ) -> None:
        service, command = str(request.get("service")), str(request.get("command"))
        keys_text = str((request.get("parameters") or {}).get("keys") or "")
        keys = {k for k in keys_text.split(",") if k}
        self.requests.append((service, command, keys_text))
        held = self.subs.setdefault(queue, {s: set() for s in SERVICES})
        if command not in ("SUBS", "ADD", "UNSUBS"):
            queue.put_nowait(respond(request, 21, "Bad command format"))
            return
        if command == "UNSUBS":
            held[service] -= keys
            for key in keys:
                self._sent.pop((queue, service, key), None)
        else:
            if command == "SUBS":
                for key in held[service] - keys:
                    self._sent.pop((queue, service, key), None)
                held[service] = set(keys)
            else:
                held[service] |= keys
        queue.put_nowait(respond(request, 0, f"{command} command succeeded"))
        if command != "UNSUBS" and service != CHART:
            step = self._cursor()
            content = [self._delta(queue, service, key, step) for key in sorted(keys)]
            self._put(queue, service, command, [c for c in content if c is not None])

    def forget(self, queue: Queue) -> None:
        self.subs.pop(queue, None)
        for key in [k for k in self._sent if k[0] is queue]:
            del self._sent[key]

    # --- the market --------------------------------------------------------------------------

    def _cursor(self) -> int:
        if self.cursor is None:
            self.cursor = self.data.step_at(self.fake.now())
        return self.cursor

    async def run(self, seconds: float = 0.25) -> None:
        """Follow the fake's clock (scripts/fake-brokers): every ``seconds``, publish the
        steps it passed (at most a minute's worth at once)."""
        while True:
            await asyncio.sleep(seconds)
            if self.cursor is None:
                self.cursor = self.data.step_at(self.fake.now())
            behind = self.data.step_at(self.fake.now()) - self.cursor
            if behind > 0:
                self.publish(min(behind, 60))

    def publish(self, steps: int = 1) -> None:
        for _ in range(steps):
            self.cursor = self._cursor() + 1
            step = self.cursor
            for queue, held in list(self.subs.items()):
                for service in (EQUITIES, OPTIONS):
                    content = [self._delta(queue, service, k, step) for k in sorted(held[service])]
                    self._put(queue, service, "SUBS", [c for c in content if c is not None])
                if held[CHART]:
                    minute = window_start(self.data.time_of(step), BarInterval.m1)
                    previous = window_start(self.data.time_of(step - 1), BarInterval.m1)
                    if minute != previous:
                        bars = [self._chart(k, previous, step) for k in sorted(held[CHART])]
                        self._put(queue, CHART, "SUBS", [b for b in bars if b is not None])

    def _put(self, queue: Queue, service: str, command: str, content: list[dict[str, Any]]) -> None:
        if not content:
            return
        frame = {
            "data": [
                {
                    "service": service,
                    "timestamp": _ms(self.data.time_of(self._cursor())),
                    "command": command,
                    "content": content,
                }
            ]
        }
        if queue.qsize() >= self.buffer:
            # A reader too slow for its buffer: Schwab does not document what it does, so the
            # fake does the harshest plausible thing and closes the socket.
            queue.put_nowait(None)
            return
        queue.put_nowait(json.dumps(frame))

    def _fields(self, service: str, key: str, step: int) -> dict[str, Any] | None:
        at = self.data.time_of(step)
        try:
            if service == EQUITIES:
                q = self.data.quote(key, step)
                t = self.data.trade(key, step)
                return {
                    "1": _num(q.bid or Decimal(0)),
                    "2": _num(q.ask or Decimal(0)),
                    "3": _num(t.price),
                    "4": _num(q.bid_size or Decimal(0)),
                    "5": _num(q.ask_size or Decimal(0)),
                    "9": _num(t.size),
                    "34": _ms(q.ts),
                    "35": _ms(t.ts),
                }
            contract = OptionContract.parse(key)
            o = self.data.options.quote(contract, at)
            size = self.data.trade_size(contract.symbol, self.data.minute_index(step))
            g = o.greeks
            fields: dict[str, Any] = {
                "2": _num(o.bid),
                "3": _num(o.ask),
                "4": _num(o.last),
                "16": 10,
                "17": 10,
                "18": _num(size),
                "35": _num(o.underlying_price),
                "38": _ms(at),
                "39": _ms(at),
            }
            for field, value in (
                ("10", None if g.iv is None else g.iv * 100),  # percent on the wire
                ("28", g.delta),
                ("29", g.gamma),
                ("30", g.theta),
                ("31", g.vega),
                ("32", g.rho),
            ):
                if value is not None:
                    fields[field] = _num(value)
            return fields
        except UnknownSymbol:
            return None

    def _delta(self, queue: Queue, service: str, key: str, step: int) -> dict[str, Any] | None:
        fields = self._fields(service, key, step)
        if fields is None:
            return None
        sent = self._sent.setdefault((queue, service, key), {})
        changed = {k: v for k, v in fields.items() if sent.get(k) != v}
        if not changed:
            return None
        sent.update(changed)
        item: dict[str, Any] = {"key": key, "delayed": False}
        if service == OPTIONS:
            item["assetMainType"] = "OPTION"
        else:
            item["assetMainType"] = "EQUITY"
        return {**item, **changed}

    def _chart(self, key: str, minute: datetime, step: int) -> dict[str, Any] | None:
        try:
            bar = self.data.minute_bar(key, minute)
        except UnknownSymbol:
            return None
        if bar is None:
            return None
        return {
            "seq": step,
            "key": key,
            "1": step,
            "2": _num(bar.open),
            "3": _num(bar.high),
            "4": _num(bar.low),
            "5": _num(bar.close),
            "6": _num(bar.volume),
            "7": _ms(bar.start),
            "8": (bar.start - datetime(1970, 1, 1, tzinfo=bar.start.tzinfo)).days,
        }

    # --- history -----------------------------------------------------------------------------

    async def price_history(self, request: Request) -> Response:
        login = await self.fake._gate(request)
        if isinstance(login, Response):
            return login
        params = request.query_params
        symbol = params.get("symbol") or ""
        interval = FREQUENCIES.get(
            (params.get("frequencyType") or "", params.get("frequency") or "")
        )
        if interval is None or is_option_symbol(symbol):
            return JSONResponse({"message": "Bad request", "errors": ["invalid parameters"]}, 400)
        now = self.fake.now()
        try:
            end = datetime.fromtimestamp(int(params.get("endDate") or _ms(now)) / 1000, now.tzinfo)
            start = datetime.fromtimestamp(
                int(params.get("startDate") or _ms(end - timedelta(days=1))) / 1000, now.tzinfo
            )
        except ValueError:
            return JSONResponse({"message": "Bad request", "errors": ["invalid dates"]}, 400)
        try:
            bars = self.data.history(symbol, interval, start, end, 10_000, now)
        except UnknownSymbol:
            return JSONResponse({"candles": [], "symbol": symbol, "empty": True})
        except NotSupported as exc:
            return JSONResponse({"message": "Bad request", "errors": [exc.reason]}, 400)
        candles = [
            {
                "open": _num(b.open),
                "high": _num(b.high),
                "low": _num(b.low),
                "close": _num(b.close),
                "volume": int(b.volume),
                "datetime": _ms(b.start),
            }
            for b in bars
        ]
        return JSONResponse({"candles": candles, "symbol": symbol, "empty": not candles})
