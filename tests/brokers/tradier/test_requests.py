"""Request/response fixtures per adapter method: the exact request each method sends and the
normalized result a documented Tradier answer parses into.

The broker side is an httpx transport that records the request and answers with the
recorded documentation payload (tests/brokers/tradier/payloads.py); everything of ours (the
adapter, the shared HTTP layer, the rate buckets) runs unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import parse_qsl

import httpx

from app.brokers.base import (
    OrderChanges,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    TimeInForce,
)
from app.brokers.http import HttpPool
from app.brokers.tradier.adapter import TradierAdapter
from app.config import Settings
from app.security.credentials import Credentials
from tests.brokers.tradier.payloads import (
    BALANCES_MARGIN,
    EXPIRED_LIMIT,
    FILLED_MARKET,
    HISTORY,
    ORDER,
    ORDERS,
    PLACED,
    POSITIONS,
    PROFILE,
    QUOTES,
)

TOKEN = "doc-token-0000"
BASE = "https://api.tradier.com"


@dataclass
class Sent:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    headers: httpx.Headers


def _dumps(body: object) -> str:
    return json.dumps(body, default=lambda d: float(d) if isinstance(d, Decimal) else str(d))


@dataclass
class Broker:
    """Answers in order from ``replies`` (or by path) and records every request."""

    replies: dict[tuple[str, str], object]
    sent: list[Sent] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = request.content.decode()
        form = dict(parse_qsl(body)) if body else {}
        self.sent.append(
            Sent(request.method, request.url.path, dict(request.url.params), form, request.headers)
        )
        reply = self.replies[(request.method, request.url.path)]
        return httpx.Response(200, text=_dumps(reply), headers={"Content-Type": "application/json"})


def adapter_for(broker: Callable[[httpx.Request], httpx.Response]) -> TradierAdapter:
    pool = HttpPool(transport=httpx.MockTransport(broker))
    return TradierAdapter(Settings(tradier_base_url=BASE), Credentials(access_token=TOKEN), pool)


def only(broker: Broker) -> Sent:
    [sent] = broker.sent
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["Accept"] == "application/json"
    return sent


async def test_list_accounts_reads_the_profile() -> None:
    broker = Broker({("GET", "/v1/user/profile"): PROFILE})
    accounts = await adapter_for(broker).list_accounts()
    sent = only(broker)
    assert (sent.method, sent.path, sent.query, sent.form) == ("GET", "/v1/user/profile", {}, {})
    assert [a.broker_account_id for a in accounts] == ["VA000001", "VA000002", "VA000003"]
    assert accounts[1].number_masked == "****0002"
    assert accounts[1].name == "Tradier traditional ira ****0002"


async def test_get_balances() -> None:
    broker = Broker({("GET", "/v1/accounts/VA000001/balances"): BALANCES_MARGIN})
    balances = await adapter_for(broker).get_balances("VA000001")
    assert only(broker).path == "/v1/accounts/VA000001/balances"
    assert (balances.cash, balances.equity, balances.buying_power, balances.currency) == (
        Decimal("6363.86"),
        Decimal("17798.36"),
        Decimal("12727.72"),
        "USD",
    )


async def test_get_positions_prices_them_with_one_quotes_request() -> None:
    broker = Broker(
        {
            ("GET", "/v1/accounts/VA000001/positions"): POSITIONS,
            ("GET", "/v1/markets/quotes"): QUOTES,
        }
    )
    positions = await adapter_for(broker).get_positions("VA000001")
    positions_call, quotes_call = broker.sent
    assert positions_call.path == "/v1/accounts/VA000001/positions"
    assert quotes_call.query == {"symbols": "AAPL,AMZN", "greeks": "false"}
    assert [(p.symbol, p.quantity, p.current_price) for p in positions] == [
        ("AAPL", Decimal(1), Decimal("208.21")),
        ("AMZN", Decimal(1), Decimal("1870.70")),  # no quote in the doc answer: cost stands in
    ]


async def test_get_quotes() -> None:
    broker = Broker({("GET", "/v1/markets/quotes"): QUOTES})
    quotes = await adapter_for(broker).get_quotes(["AAPL"])
    sent = only(broker)
    assert (sent.method, sent.path, sent.query) == (
        "GET",
        "/v1/markets/quotes",
        {"symbols": "AAPL", "greeks": "false"},
    )
    assert quotes["AAPL"].ask == Decimal("208.21")


async def test_place_order_sends_a_form_and_reads_the_order_back() -> None:
    broker = Broker(
        {
            ("POST", "/v1/accounts/VA000001/orders"): PLACED,
            ("GET", "/v1/accounts/VA000001/orders/257459"): {
                "order": {**FILLED_MARKET, "id": 257459, "tag": "bg0123abc"}
            },
        }
    )
    order = await adapter_for(broker).place_order(
        "VA000001",
        OrderRequest(
            client_order_id="bg0123abc",
            symbol="AAPL",
            side=OrderSide.buy,
            quantity=Decimal(50),
            order_type=OrderType.limit,
            time_in_force=TimeInForce.day,
            limit_price=Decimal("187.93"),
        ),
    )
    post, read = broker.sent
    assert (post.method, post.path) == ("POST", "/v1/accounts/VA000001/orders")
    assert post.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert post.form == {
        "class": "equity",
        "symbol": "AAPL",
        "side": "buy",
        "quantity": "50",
        "type": "limit",
        "duration": "day",
        "price": "187.93",
        "tag": "bg0123abc",
    }
    assert (read.method, read.path, read.query) == (
        "GET",
        "/v1/accounts/VA000001/orders/257459",
        {"includeTags": "true"},
    )
    assert (order.broker_order_id, order.client_order_id, order.status) == (
        "257459",
        "bg0123abc",
        OrderStatus.filled,
    )


async def test_modify_order_puts_only_what_changes() -> None:
    broker = Broker(
        {
            ("PUT", "/v1/accounts/VA000001/orders/228175"): {
                "order": {"id": 228175, "status": "ok", "partner_id": "p"}
            },
            ("GET", "/v1/accounts/VA000001/orders/228175"): {
                "order": {**EXPIRED_LIMIT, "status": "open", "price": Decimal("21.5")}
            },
        }
    )
    order = await adapter_for(broker).modify_order(
        "VA000001", "228175", OrderChanges(limit_price=Decimal("21.50"))
    )
    put, _read = broker.sent
    assert (put.method, put.path, put.form) == (
        "PUT",
        "/v1/accounts/VA000001/orders/228175",
        {"price": "21.5"},
    )
    assert (order.broker_order_id, order.limit_price, order.status) == (
        "228175",
        Decimal("21.5"),
        OrderStatus.accepted,
    )


async def test_cancel_order_deletes_then_reads() -> None:
    broker = Broker(
        {
            ("DELETE", "/v1/accounts/VA000001/orders/228175"): {
                "order": {"id": 228175, "status": "ok"}
            },
            ("GET", "/v1/accounts/VA000001/orders/228175"): {
                "order": {**EXPIRED_LIMIT, "status": "canceled"}
            },
        }
    )
    order = await adapter_for(broker).cancel_order("VA000001", "228175")
    delete, _read = broker.sent
    assert (delete.method, delete.path, delete.form) == (
        "DELETE",
        "/v1/accounts/VA000001/orders/228175",
        {},
    )
    assert order.status is OrderStatus.canceled


async def test_get_order() -> None:
    broker = Broker({("GET", "/v1/accounts/VA000001/orders/228176"): ORDER})
    order = await adapter_for(broker).get_order("VA000001", "228176")
    assert only(broker).query == {"includeTags": "true"}
    assert (order.filled_quantity, order.avg_fill_price) == (Decimal(50), Decimal("187.93"))


async def test_list_orders_pages_with_tags_and_filters_locally() -> None:
    broker = Broker({("GET", "/v1/accounts/VA000001/orders"): ORDERS})
    closed = await adapter_for(broker).list_orders("VA000001", "closed", 10)
    assert only(broker).query == {"page": "1", "limit": "100", "includeTags": "true"}
    assert [o.broker_order_id for o in closed] == ["228749", "228175"]  # newest first
    broker.sent.clear()
    assert await adapter_for(broker).list_orders("VA000001", "open", 10) == []


async def test_order_history_asks_for_all_orders_between_dates() -> None:
    broker = Broker({("GET", "/v1/accounts/VA000001/orders"): ORDERS})
    history = await adapter_for(broker).order_history(
        "VA000001",
        datetime(2018, 6, 1, tzinfo=UTC),
        datetime(2018, 6, 30, 23, tzinfo=UTC),
        "AAPL",
    )
    assert only(broker).query == {
        "filter": "all",
        "start": "2018-06-01",
        "end": "2018-06-30",
        "page": "1",
        "limit": "100",
        "includeTags": "true",
    }
    assert [o.broker_order_id for o in history] == ["228175"]


async def test_find_order_by_client_id_searches_tags() -> None:
    tagged = {"orders": {"order": {**EXPIRED_LIMIT, "tag": "bgwanted"}}}
    broker = Broker({("GET", "/v1/accounts/VA000001/orders"): tagged})
    found = await adapter_for(broker).find_order_by_client_id("VA000001", "bgwanted")
    assert found is not None
    assert found.broker_order_id == "228175"
    assert await adapter_for(broker).find_order_by_client_id("VA000001", "bgother") is None


async def test_get_transactions_reads_history() -> None:
    broker = Broker({("GET", "/v1/accounts/VA000001/history"): HISTORY})
    found = await adapter_for(broker).get_transactions(
        "VA000001", datetime(2018, 1, 1, tzinfo=UTC), None, "buy"
    )
    assert only(broker).query == {"limit": "1000", "start": "2018-01-01"}
    assert [(t.type, t.amount) for t in found] == [("buy", Decimal("-13.05"))]


async def test_check_symbol_uses_quotes_and_remembers() -> None:
    broker = Broker({("GET", "/v1/markets/quotes"): QUOTES})
    adapter = adapter_for(broker)
    await adapter.check_symbol("AAPL")
    await adapter.check_symbol("AAPL")
    assert len(broker.sent) == 1


async def test_create_stream_session() -> None:
    broker = Broker(
        {
            ("POST", "/v1/accounts/events/session"): {
                "stream": {
                    "url": "wss://ws.tradier.com/v1/accounts/events",
                    "sessionid": "9D1C7018CFEB6F8ECF8CAA58B33",
                }
            }
        }
    )
    assert await adapter_for(broker).create_stream_session() == "9D1C7018CFEB6F8ECF8CAA58B33"
    assert only(broker).method == "POST"


def test_stream_urls_follow_the_host() -> None:
    from app.brokers.tradier.adapter import stream_url

    assert stream_url(Settings(tradier_base_url=BASE)) == "wss://ws.tradier.com/v1/accounts/events"
    sandbox = Settings(tradier_base_url="https://sandbox.tradier.com")
    assert stream_url(sandbox) == "wss://sandbox-ws.tradier.com/v1/accounts/events"
    local = Settings(tradier_base_url="http://127.0.0.1:9999")
    assert stream_url(local) == "ws://127.0.0.1:9999/v1/accounts/events"
    explicit = Settings(tradier_base_url=BASE, tradier_stream_url="wss://elsewhere/x")
    assert stream_url(explicit) == "wss://elsewhere/x"
