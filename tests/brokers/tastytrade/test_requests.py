"""Per adapter method: the exact request sent, and the result from a recorded answer.

The broker side is an ``httpx.MockTransport`` answering the recorded/documented payloads of
``payloads.py`` (the transport is the HTTP pool's injection point; everything of ours runs).
Each test pins the method, path, query, JSON body and headers tastytrade receives.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from app.brokers import errors
from app.brokers.base import (
    OrderChanges,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    TimeInForce,
)
from app.brokers.http import HttpPool
from app.brokers.tastytrade.adapter import TastytradeAdapter
from app.config import Settings
from app.security.credentials import Credentials
from tests.brokers.tastytrade.payloads import (
    ACCOUNTS,
    BALANCES,
    EQUITY,
    ERRORS,
    FILLED_NOTIFICATION,
    MARKET_DATA,
    POSITIONS,
    SUBMIT_ANSWER,
    TOKEN_ANSWER,
    TRANSACTIONS,
    order,
)
from tests.brokers.tastytrade.test_mapping import documented_live_orders

BASE = "https://api.cert.tastyworks.com"
ACCOUNT = "5WX06827"
TOKEN = TOKEN_ANSWER["access_token"]


@dataclass
class Sent:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: httpx.Headers
    body: Any
    raw_path: str = ""  # as sent, percent escapes kept


@dataclass
class Broker:
    """Recorded answers by (method, path); every request is kept."""

    answers: dict[tuple[str, str], list[tuple[int, Any]]] = field(default_factory=dict)
    sent: list[Sent] = field(default_factory=list)

    def answer(self, method: str, path: str, body: Any, status: int = 200) -> None:
        self.answers.setdefault((method, path), []).append((status, body))

    def handler(self, request: httpx.Request) -> httpx.Response:
        raw = request.content
        self.sent.append(
            Sent(
                method=request.method,
                path=request.url.path,
                query=parse_qsl(request.url.query.decode(), keep_blank_values=True),
                headers=request.headers,
                body=json.loads(raw) if raw else None,
                raw_path=request.url.raw_path.decode().split("?")[0],
            )
        )
        queue = self.answers.get((request.method, request.url.path))
        if not queue:
            return httpx.Response(404, json={"error": {"code": "not_found", "message": "none"}})
        status, body = queue.pop(0) if len(queue) > 1 else queue[0]
        return httpx.Response(status, json=body)

    def api_calls(self) -> list[Sent]:
        return [s for s in self.sent if s.path != "/oauth/token"]


@pytest.fixture
def broker() -> Broker:
    broker = Broker()
    broker.answer("POST", "/oauth/token", TOKEN_ANSWER)
    return broker


@pytest.fixture
async def adapter(broker: Broker) -> Iterator[TastytradeAdapter]:
    pool = HttpPool(transport=httpx.MockTransport(broker.handler))
    settings = Settings(tastytrade_base_url=BASE, tastytrade_requests_per_minute=6000)
    credentials = Credentials(client_secret="client-secret-1", refresh_token="refresh-token-1")
    yield TastytradeAdapter(settings, credentials, pool)
    await pool.aclose()


def only_call(broker: Broker) -> Sent:
    [call] = broker.api_calls()
    assert call.headers["Authorization"] == f"Bearer {TOKEN}"
    assert call.headers["User-Agent"] == "brokerage-gateway/0.1"
    assert call.headers["Accept"] == "application/json"
    assert "Accept-Version" not in call.headers
    return call


async def test_the_token_exchange(broker: Broker, adapter: TastytradeAdapter) -> None:
    broker.answer("GET", "/customers/me/accounts", ACCOUNTS)
    await adapter.list_accounts()
    await adapter.list_accounts()
    [exchange] = [s for s in broker.sent if s.path == "/oauth/token"]  # minted once, reused
    assert exchange.method == "POST"
    assert exchange.body == {
        "grant_type": "refresh_token",
        "refresh_token": "refresh-token-1",
        "client_secret": "client-secret-1",
    }
    assert "Authorization" not in exchange.headers
    assert exchange.headers["User-Agent"] == "brokerage-gateway/0.1"
    assert exchange.headers["Content-Type"] == "application/json"


async def test_list_accounts(broker: Broker, adapter: TastytradeAdapter) -> None:
    broker.answer("GET", "/customers/me/accounts", ACCOUNTS)
    [account] = await adapter.list_accounts()  # the closed IRA is left out
    call = only_call(broker)
    assert (call.method, call.path, call.query) == ("GET", "/customers/me/accounts", [])
    assert account.broker_account_id == "5WX06827"
    assert account.number_masked == "****6827"
    assert account.name == "tastytrade Individual ****6827"


async def test_get_balances(broker: Broker, adapter: TastytradeAdapter) -> None:
    broker.answer("GET", f"/accounts/{ACCOUNT}/balances", BALANCES)
    balances = await adapter.get_balances(ACCOUNT)
    call = only_call(broker)
    assert (call.method, call.path) == ("GET", f"/accounts/{ACCOUNT}/balances")
    assert (balances.cash, balances.currency) == (Decimal("0.0"), "USD")


async def test_positions(broker: Broker, adapter: TastytradeAdapter) -> None:
    broker.answer("GET", f"/accounts/{ACCOUNT}/positions", POSITIONS)
    [position] = await adapter.get_positions(ACCOUNT)
    call = only_call(broker)
    assert (call.path, call.query) == (
        f"/accounts/{ACCOUNT}/positions",
        [("include-marks", "true")],
    )
    assert (position.symbol, position.quantity) == ("AAPL", Decimal(100))
    broker.sent.clear()
    assert (await adapter.get_position(ACCOUNT, "AAPL")) == position
    assert only_call(broker).query == [("include-marks", "true"), ("symbol", "AAPL")]
    assert await adapter.get_position(ACCOUNT, "MSFT") is None


async def test_check_symbol(broker: Broker, adapter: TastytradeAdapter) -> None:
    broker.answer("GET", "/instruments/equities/AAPL", EQUITY)
    await adapter.check_symbol("AAPL")
    call = only_call(broker)
    assert (call.method, call.path) == ("GET", "/instruments/equities/AAPL")
    with pytest.raises(errors.UnknownSymbol):
        await adapter.check_symbol("NOPE")  # the transport's 404
    broker.answer("GET", "/instruments/equities/OLD", {**EQUITY, "data": {"active": False}})
    with pytest.raises(errors.UnsupportedOrder, match="not open for trading"):
        await adapter.check_symbol("OLD")
    broker.sent.clear()
    broker.answer("GET", "/instruments/cryptocurrencies/BTC/USD", EQUITY)
    await adapter.check_symbol("BTC-USD")  # crypto: its own instruments path, slash escaped
    call = only_call(broker)
    assert (call.method, call.raw_path) == ("GET", "/instruments/cryptocurrencies/BTC%2FUSD")


async def test_place_order(broker: Broker, adapter: TastytradeAdapter) -> None:
    broker.answer("POST", f"/accounts/{ACCOUNT}/orders", SUBMIT_ANSWER, status=201)
    placed = await adapter.place_order(
        ACCOUNT,
        OrderRequest(
            "bgfeedface", "AAPL", OrderSide.buy, Decimal(1), OrderType.market, TimeInForce.day
        ),
    )
    call = only_call(broker)
    assert (call.method, call.path) == ("POST", f"/accounts/{ACCOUNT}/orders")
    assert call.headers["Content-Type"] == "application/json"
    assert call.body == {
        "time-in-force": "Day",
        "order-type": "Market",
        "external-identifier": "bgfeedface",
        "source": "brokerage-gateway",
        "legs": [
            {
                "instrument-type": "Equity",
                "symbol": "AAPL",
                "quantity": "1",
                "action": "Buy to Open",
            }
        ],
    }
    assert (placed.broker_order_id, placed.status) == ("270561", OrderStatus.submitted)


async def test_get_order(broker: Broker, adapter: TastytradeAdapter) -> None:
    broker.answer(
        "GET", f"/accounts/{ACCOUNT}/orders/270602", {"data": FILLED_NOTIFICATION["data"]}
    )
    got = await adapter.get_order(ACCOUNT, "270602")
    call = only_call(broker)
    assert (call.method, call.path) == ("GET", f"/accounts/{ACCOUNT}/orders/270602")
    assert (got.status, got.filled_quantity) == (OrderStatus.filled, Decimal(1))


async def test_modify_is_a_put_of_the_new_terms(broker: Broker, adapter: TastytradeAdapter) -> None:
    live = order(
        **{"order-type": "Limit", "price": "150", "price-effect": "Debit", "status": "Live"}
    )
    broker.answer("GET", f"/accounts/{ACCOUNT}/orders/270561", {"data": live})
    replacement = order(
        **{
            "id": 270562,
            "order-type": "Limit",
            "price": "151",
            "price-effect": "Debit",
            "status": "Contingent",
            "replaces-order-id": 270561,
            "external-identifier": "bgr-270561",
        }
    )
    broker.answer("PUT", f"/accounts/{ACCOUNT}/orders/270561", {"data": replacement})
    new = await adapter.modify_order(ACCOUNT, "270561", OrderChanges(limit_price=Decimal(151)))
    read, put = broker.api_calls()
    assert (read.method, put.method, put.path) == (
        "GET",
        "PUT",
        f"/accounts/{ACCOUNT}/orders/270561",
    )
    assert put.body == {
        "order-type": "Limit",
        "time-in-force": "Day",
        "price": "151",
        "price-effect": "Debit",
        "external-identifier": "bgr-270561",
        "source": "brokerage-gateway",
    }
    assert (new.broker_order_id, new.replaces, new.limit_price) == (
        "270562",
        "270561",
        Decimal(151),
    )
    assert new.client_order_id == "bgr-270561"


async def test_a_quantity_change_is_refused_before_anything_is_sent(
    broker: Broker, adapter: TastytradeAdapter
) -> None:
    with pytest.raises(errors.UnsupportedOrder, match="quantity"):
        await adapter.modify_order(ACCOUNT, "270561", OrderChanges(quantity=Decimal(3)))
    assert broker.sent == []


async def test_cancel_order(broker: Broker, adapter: TastytradeAdapter) -> None:
    requested = order(**{"status": "Cancel Requested"})
    broker.answer("DELETE", f"/accounts/{ACCOUNT}/orders/270561", {"data": requested})
    canceled = await adapter.cancel_order(ACCOUNT, "270561")
    call = only_call(broker)
    assert (call.method, call.path, call.body) == (
        "DELETE",
        f"/accounts/{ACCOUNT}/orders/270561",
        None,
    )
    assert canceled.status is OrderStatus.pending_cancel


async def test_a_cancel_answered_without_the_order_reads_it(
    broker: Broker, adapter: TastytradeAdapter
) -> None:
    path = f"/accounts/{ACCOUNT}/orders/270561"
    broker.answer("DELETE", path, {"context": path})
    broker.answer("GET", path, {"data": order(**{"status": "Cancelled"})})
    assert (await adapter.cancel_order(ACCOUNT, "270561")).status is OrderStatus.canceled
    assert [s.method for s in broker.api_calls()] == ["DELETE", "GET"]


async def test_a_cancel_whose_result_cannot_be_read_is_outcome_unknown(
    broker: Broker, adapter: TastytradeAdapter
) -> None:
    path = f"/accounts/{ACCOUNT}/orders/270561"
    broker.answer("DELETE", path, {"context": path})
    broker.answer("GET", path, {"error": {"code": "internal_error", "message": "x"}}, status=500)
    with pytest.raises(errors.OutcomeUnknown, match="cancel was accepted"):
        await adapter.cancel_order(ACCOUNT, "270561")


async def test_list_open_orders_reads_the_live_orders(
    broker: Broker, adapter: TastytradeAdapter
) -> None:
    mine = order(**{"status": "Live", "external-identifier": "bgmine"})
    done = order(**{"id": 270500, "status": "Filled"}, legs={"remaining-quantity": 0})
    future = order(**{"id": 270499}, legs={"instrument-type": "Future", "symbol": "/ESZ6"})
    # + the docs' two option orders (a working single leg, a cancelled spread) and a future
    items = [mine, done, *documented_live_orders(), future]
    broker.answer("GET", f"/accounts/{ACCOUNT}/orders/live", {"data": {"items": items}})
    working = await adapter.list_orders(ACCOUNT, "open", 10)
    call = only_call(broker)
    assert (call.path, call.query) == (f"/accounts/{ACCOUNT}/orders/live", [])
    assert [(o.client_order_id, o.symbol) for o in working] == [
        ("bgmine", "AAPL"),
        (None, "QQQ191115C00187000"),
    ]


async def test_closed_orders_are_searched_by_status(
    broker: Broker, adapter: TastytradeAdapter
) -> None:
    broker.answer(
        "GET", f"/accounts/{ACCOUNT}/orders", {"data": {"items": [FILLED_NOTIFICATION["data"]]}}
    )
    [closed] = await adapter.list_orders(ACCOUNT, "closed", 5)
    call = only_call(broker)
    assert call.query == [
        ("status[]", "Filled"),
        ("status[]", "Cancelled"),
        ("status[]", "Expired"),
        ("status[]", "Rejected"),
        ("status[]", "Removed"),
        ("status[]", "Partially Removed"),
        ("sort", "Desc"),
        ("per-page", "5"),
        ("page-offset", "0"),
    ]
    assert closed.status is OrderStatus.filled


async def test_history_follows_the_pages(broker: Broker, adapter: TastytradeAdapter) -> None:
    path = f"/accounts/{ACCOUNT}/orders"
    page = {"page-offset": 0, "total-pages": 2}
    broker.answer("GET", path, {"data": {"items": [order()]}, "pagination": page})
    broker.answer(
        "GET",
        path,
        {"data": {"items": [order(id=270400)]}, "pagination": {**page, "page-offset": 1}},
    )
    history = await adapter.order_history(
        ACCOUNT, datetime(2025, 5, 1, tzinfo=UTC), datetime(2025, 6, 1, tzinfo=UTC), "AAPL"
    )
    first, second = broker.api_calls()
    assert first.query == [
        ("start-at", "2025-05-01T00:00:00Z"),
        ("end-at", "2025-06-01T00:00:00Z"),
        ("underlying-symbol", "AAPL"),
        ("sort", "Desc"),
        ("per-page", "200"),
        ("page-offset", "0"),
    ]
    assert ("page-offset", "1") in second.query
    assert [o.broker_order_id for o in history] == ["270561", "270400"]


async def test_find_order_by_client_id(broker: Broker, adapter: TastytradeAdapter) -> None:
    mine = order(**{"status": "Live", "external-identifier": "bgmine"})
    broker.answer("GET", f"/accounts/{ACCOUNT}/orders/live", {"data": {"items": [mine]}})
    broker.answer("GET", f"/accounts/{ACCOUNT}/orders", {"data": {"items": []}})
    found = await adapter.find_order_by_client_id(ACCOUNT, "bgmine")
    assert found is not None
    assert found.broker_order_id == "270561"
    assert len(broker.api_calls()) == 1
    broker.sent.clear()
    assert await adapter.find_order_by_client_id(ACCOUNT, "bgother") is None
    live, search = broker.api_calls()
    assert (live.path, search.path) == (
        f"/accounts/{ACCOUNT}/orders/live",
        f"/accounts/{ACCOUNT}/orders",
    )
    assert search.query == [("sort", "Desc"), ("per-page", "200"), ("page-offset", "0")]


async def test_transactions(broker: Broker, adapter: TastytradeAdapter) -> None:
    broker.answer("GET", f"/accounts/{ACCOUNT}/transactions", TRANSACTIONS)
    deposits = await adapter.get_transactions(
        ACCOUNT, datetime(2025, 5, 1, tzinfo=UTC), None, "deposit"
    )
    call = only_call(broker)
    assert call.query == [
        ("sort", "Desc"),
        ("per-page", "250"),
        ("start-at", "2025-05-01T00:00:00Z"),
        ("page-offset", "0"),
    ]
    assert [t.amount for t in deposits] == [Decimal("2500.0")]


async def test_quotes(broker: Broker, adapter: TastytradeAdapter) -> None:
    broker.answer("GET", "/market-data/by-type", MARKET_DATA)
    quotes = await adapter.get_quotes(["AAPL", "HALT"])
    call = only_call(broker)
    assert call.query == [("equity", "AAPL"), ("equity", "HALT")]
    assert set(quotes) == {"AAPL"}
    assert await adapter.get_quotes([]) == {}


async def test_an_expired_token_is_replaced_and_the_request_sent_once_more(
    broker: Broker, adapter: TastytradeAdapter
) -> None:
    expired = {"error": {"code": "unauthorized", "message": "Token is invalid or expired"}}
    path = f"/accounts/{ACCOUNT}/balances"
    broker.answer("GET", path, expired, status=401)
    broker.answer("GET", path, BALANCES)
    assert (await adapter.get_balances(ACCOUNT)).currency == "USD"
    assert [s.path for s in broker.sent] == ["/oauth/token", path, "/oauth/token", path]


async def test_a_refused_refresh_token_is_authentication_failed(
    broker: Broker, adapter: TastytradeAdapter
) -> None:
    broker.answers["POST", "/oauth/token"] = [
        (401, {"error": {"code": "invalid_grant", "message": "Invalid refresh token"}})
    ]
    with pytest.raises(errors.AuthenticationFailed, match="Invalid refresh token"):
        await adapter.place_order(
            ACCOUNT,
            OrderRequest(
                "bg1", "AAPL", OrderSide.buy, Decimal(1), OrderType.market, TimeInForce.day
            ),
        )
    assert broker.api_calls() == []  # nothing reached the order endpoint


async def test_a_rejection_keeps_the_brokers_words(
    broker: Broker, adapter: TastytradeAdapter
) -> None:
    broker.answer("POST", f"/accounts/{ACCOUNT}/orders", ERRORS["gtc_market"], status=422)
    with pytest.raises(errors.Rejected, match="GTC/GTD Market orders are not supported"):
        await adapter.place_order(
            ACCOUNT,
            OrderRequest(
                "bg1", "AAPL", OrderSide.buy, Decimal(1), OrderType.market, TimeInForce.gtc
            ),
        )


async def test_the_api_version_header_when_configured(broker: Broker) -> None:
    pool = HttpPool(transport=httpx.MockTransport(broker.handler))
    settings = Settings(tastytrade_base_url=BASE, tastytrade_api_version="20251101")
    credentials = Credentials(client_secret="c", refresh_token="r")
    broker.answer("GET", "/customers/me/accounts", ACCOUNTS)
    try:
        await TastytradeAdapter(settings, credentials, pool).list_accounts()
    finally:
        await pool.aclose()
    assert {s.headers["Accept-Version"] for s in broker.sent} == {"20251101"}
