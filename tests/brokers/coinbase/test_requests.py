"""Per adapter method: the exact request sent, its JWT, and the result from a documented answer.

The broker side is an ``httpx.MockTransport`` answering the payloads of ``payloads.py`` (the
transport is the HTTP pool's injection point; everything of ours runs). Each test pins the
method, path, query and JSON body Coinbase receives; every request's JWT is verified with the
key's public half, and its ``uri`` claim must name exactly that request.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

import httpx
import jwt
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
from app.brokers.coinbase.adapter import CoinbaseAdapter
from app.brokers.http import HttpPool
from app.brokers.rows import is_partial
from app.config import Settings
from app.security.credentials import Credentials
from tests.brokers.coinbase.payloads import (
    BEST_BID_ASK,
    BREAKDOWN,
    CANCEL_DOC,
    CREATE_FAILURE,
    CREATE_SUCCESS_DOC,
    EDIT_REFUSED,
    EDIT_SUCCESS,
    FILLS_DOC,
    PORTFOLIO,
    PRODUCTS,
    V2_TRANSACTIONS_DOC,
    order,
    product,
    wallet,
)
from tests.fakes.coinbase.server import new_key

BASE = "https://api.coinbase.com"
P = "/api/v3/brokerage"
KEY_NAME = "organizations/org-1/apiKeys/key-1"
PEM, PUBLIC = new_key("ES256")


@dataclass
class Sent:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: httpx.Headers
    body: Any
    claims: dict[str, Any]


@dataclass
class Broker:
    """Answers by (method, path); every request is kept with its verified JWT claims."""

    answers: dict[tuple[str, str], list[tuple[int, Any]]] = field(default_factory=dict)
    sent: list[Sent] = field(default_factory=list)

    def answer(self, method: str, path: str, body: Any, status: int = 200) -> None:
        self.answers.setdefault((method, path), []).append((status, body))

    def handler(self, request: httpx.Request) -> httpx.Response:
        token = request.headers["Authorization"].removeprefix("Bearer ")
        header = jwt.get_unverified_header(token)
        assert header["kid"] == KEY_NAME
        assert header["alg"] == "ES256"
        assert header["nonce"]
        claims = jwt.decode(token, PUBLIC, algorithms=["ES256"], issuer="cdp")
        assert claims["sub"] == KEY_NAME
        assert claims["exp"] - claims["nbf"] == 120
        assert claims["uri"] == f"{request.method} api.coinbase.com{request.url.path}"
        raw = request.content
        self.sent.append(
            Sent(
                method=request.method,
                path=request.url.path,
                query=parse_qsl(request.url.query.decode(), keep_blank_values=True),
                headers=request.headers,
                body=json.loads(raw) if raw else None,
                claims=claims,
            )
        )
        queue = self.answers.get((request.method, request.url.path))
        if not queue:
            return httpx.Response(
                404, json={"error": "NOT_FOUND", "error_details": "none", "message": "none"}
            )
        status, body = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    def calls(self) -> list[tuple[str, str, list[tuple[str, str]]]]:
        return [(s.method, s.path, s.query) for s in self.sent]


@pytest.fixture
def broker() -> Broker:
    return Broker()


@pytest.fixture
async def adapter(broker: Broker) -> AsyncIterator[CoinbaseAdapter]:
    pool = HttpPool(transport=httpx.MockTransport(broker.handler))
    settings = Settings(coinbase_base_url=BASE, coinbase_requests_per_second=1000)
    credentials = Credentials(api_key_name=KEY_NAME, private_key=PEM)
    yield CoinbaseAdapter(settings, credentials, pool)
    await pool.aclose()


def accounts(*items: dict[str, Any], cursor: str = "") -> dict[str, Any]:
    return {
        "accounts": list(items),
        "has_next": bool(cursor),
        "cursor": cursor,
        "size": len(items),
    }


USD = wallet("USD", "950.00", "50.00")
BTC = wallet("BTC", "0.01")
ETH = wallet("ETH", "0")
LIMIT = OrderRequest(
    "bgfeedface01",
    "BTC-USD",
    OrderSide.buy,
    Decimal("0.001"),
    OrderType.limit,
    TimeInForce.gtc,
    limit_price=Decimal("10000.00"),
)


async def test_headers_of_every_request(broker: Broker, adapter: CoinbaseAdapter) -> None:
    broker.answer("GET", f"{P}/accounts", accounts(USD))
    await adapter.list_accounts()
    [call] = broker.sent
    assert call.headers["Accept"] == "application/json"
    assert call.headers["User-Agent"] == "brokerage-gateway/0.1"
    assert call.claims["uri"] == "GET api.coinbase.com/api/v3/brokerage/accounts"


async def test_list_accounts_reads_every_page(broker: Broker, adapter: CoinbaseAdapter) -> None:
    broker.answer("GET", f"{P}/accounts", accounts(USD, cursor="789100"))
    broker.answer("GET", f"{P}/accounts", accounts(BTC, ETH))
    [account] = await adapter.list_accounts()
    assert broker.calls() == [
        ("GET", f"{P}/accounts", [("limit", "250")]),
        ("GET", f"{P}/accounts", [("limit", "250"), ("cursor", "789100")]),
    ]
    assert account.broker_account_id == PORTFOLIO
    assert (account.number_masked, account.name, account.currency) == (
        "****9aca",
        "Coinbase ****9aca",
        "USD",
    )


async def test_balances_value_holdings_at_the_mid(broker: Broker, adapter: CoinbaseAdapter) -> None:
    broker.answer("GET", f"{P}/accounts", accounts(USD, BTC, ETH))
    broker.answer("GET", f"{P}/best_bid_ask", BEST_BID_ASK)
    balances = await adapter.get_balances(PORTFOLIO)
    assert broker.calls()[1] == ("GET", f"{P}/best_bid_ask", [("product_ids", "BTC-USD")])
    assert (balances.cash, balances.buying_power, balances.equity, balances.currency) == (
        Decimal(1000),
        Decimal(950),
        Decimal(1650),
        "USD",
    )


async def test_cash_only_balances_ask_for_no_prices(
    broker: Broker, adapter: CoinbaseAdapter
) -> None:
    broker.answer("GET", f"{P}/accounts", accounts(USD, ETH))
    balances = await adapter.get_balances(PORTFOLIO)
    assert [c[1] for c in broker.calls()] == [f"{P}/accounts"]
    assert balances.equity == Decimal(1000)
    assert await adapter.get_positions(PORTFOLIO) == []


async def test_positions(broker: Broker, adapter: CoinbaseAdapter) -> None:
    broker.answer("GET", f"{P}/accounts", accounts(USD, BTC, ETH))
    broker.answer("GET", f"{P}/best_bid_ask", BEST_BID_ASK)
    broker.answer("GET", f"{P}/portfolios/{PORTFOLIO}", BREAKDOWN)
    [position] = await adapter.get_positions(PORTFOLIO)
    assert sorted(c[1] for c in broker.calls()) == [
        f"{P}/accounts",
        f"{P}/best_bid_ask",
        f"{P}/portfolios/{PORTFOLIO}",
    ]
    assert (position.symbol, position.quantity, position.avg_cost, position.current_price) == (
        "BTC-USD",
        Decimal("0.01"),
        Decimal(60000),
        Decimal(65000),
    )
    one = await adapter.get_position(PORTFOLIO, "BTC-USD")
    assert one is not None
    assert (one.symbol, one.quantity, one.avg_cost) == ("BTC-USD", Decimal("0.01"), Decimal(60000))
    assert await adapter.get_position(PORTFOLIO, "ETH-USD") is None


async def test_a_holding_without_a_usd_book_is_left_out(
    broker: Broker, adapter: CoinbaseAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    broker.answer("GET", f"{P}/accounts", accounts(USD, BTC, wallet("XYZ", "3")))
    broker.answer("GET", f"{P}/best_bid_ask", BEST_BID_ASK)
    broker.answer("GET", f"{P}/portfolios/{PORTFOLIO}", BREAKDOWN)
    positions = await adapter.get_positions(PORTFOLIO)
    assert [p.symbol for p in positions] == ["BTC-USD"]
    assert "without a USD book" in caplog.text


async def test_check_symbol(broker: Broker, adapter: CoinbaseAdapter) -> None:
    broker.answer("GET", f"{P}/products/BTC-USD", product())
    await adapter.check_symbol("BTC-USD")
    await adapter.check_symbol("BTC-USD")  # remembered
    assert broker.calls() == [("GET", f"{P}/products/BTC-USD", [])]
    with pytest.raises(errors.UnknownSymbol):
        await adapter.check_symbol("NOPE-USD")  # the transport's 404
    broker.answer("GET", f"{P}/products/OLD-USD", product(product_id="OLD-USD", status="delisted"))
    with pytest.raises(errors.UnsupportedOrder, match="not open for trading"):
        await adapter.check_symbol("OLD-USD")
    broker.answer("GET", f"{P}/products/VIEW-USD", product(product_id="VIEW-USD", view_only=True))
    with pytest.raises(errors.UnsupportedOrder):
        await adapter.check_symbol("VIEW-USD")
    before = len(broker.sent)
    with pytest.raises(errors.UnknownSymbol, match="crypto pairs"):
        await adapter.check_symbol("AAPL")
    assert len(broker.sent) == before  # refused without asking


async def test_place_order_then_read_it_back(broker: Broker, adapter: CoinbaseAdapter) -> None:
    broker.answer("POST", f"{P}/orders", CREATE_SUCCESS_DOC)
    broker.answer(
        "GET",
        f"{P}/orders/historical/11111-00000-000000",
        {"order": order(order_id="11111-00000-000000", client_order_id="bgfeedface01")},
    )
    placed = await adapter.place_order(PORTFOLIO, LIMIT)
    create, read = broker.sent
    assert (create.method, create.path, create.query) == ("POST", f"{P}/orders", [])
    assert create.headers["Content-Type"] == "application/json"
    assert create.body == {
        "client_order_id": "bgfeedface01",
        "product_id": "BTC-USD",
        "side": "BUY",
        "order_configuration": {
            "limit_limit_gtc": {"base_size": "0.001", "limit_price": "10000", "post_only": False}
        },
    }
    assert create.claims["uri"] == "POST api.coinbase.com/api/v3/brokerage/orders"
    assert (read.method, read.path) == ("GET", f"{P}/orders/historical/11111-00000-000000")
    assert (placed.broker_order_id, placed.status, placed.client_order_id) == (
        "11111-00000-000000",
        OrderStatus.accepted,
        "bgfeedface01",
    )


async def test_a_refused_order_is_not_read_back(broker: Broker, adapter: CoinbaseAdapter) -> None:
    broker.answer("POST", f"{P}/orders", CREATE_FAILURE)
    with pytest.raises(errors.InsufficientFunds, match="Insufficient balance"):
        await adapter.place_order(PORTFOLIO, LIMIT)
    assert [c[:2] for c in broker.calls()] == [("POST", f"{P}/orders")]


async def test_an_unsupported_combination_sends_nothing(
    broker: Broker, adapter: CoinbaseAdapter
) -> None:
    day = OrderRequest(
        "bg1", "BTC-USD", OrderSide.buy, Decimal(1), OrderType.market, TimeInForce.day
    )
    with pytest.raises(errors.NotSupported):
        await adapter.place_order(PORTFOLIO, day)
    assert broker.sent == []


async def test_a_placed_order_that_cannot_be_read_back_is_submitted(
    broker: Broker, adapter: CoinbaseAdapter
) -> None:
    broker.answer("POST", f"{P}/orders", CREATE_SUCCESS_DOC)
    broker.answer(
        "GET",
        f"{P}/orders/historical/11111-00000-000000",
        {"error": "INTERNAL", "error_details": "x", "message": "x"},
        status=500,
    )
    placed = await adapter.place_order(PORTFOLIO, LIMIT)
    assert (placed.broker_order_id, placed.status, placed.quantity) == (
        "11111-00000-000000",
        OrderStatus.submitted,
        Decimal("0.001"),
    )


async def test_get_order(broker: Broker, adapter: CoinbaseAdapter) -> None:
    broker.answer("GET", f"{P}/orders/historical/o-1", {"order": order(order_id="o-1")})
    got = await adapter.get_order(PORTFOLIO, "o-1")
    assert broker.calls() == [("GET", f"{P}/orders/historical/o-1", [])]
    assert got.broker_order_id == "o-1"
    with pytest.raises(errors.OrderNotFound):
        await adapter.get_order(PORTFOLIO, "missing")


async def test_cancel_order(broker: Broker, adapter: CoinbaseAdapter) -> None:
    results = copy.deepcopy(CANCEL_DOC)
    results["results"][0]["order_id"] = "o-1"
    broker.answer("POST", f"{P}/orders/batch_cancel", results)
    broker.answer(
        "GET", f"{P}/orders/historical/o-1", {"order": order(order_id="o-1", status="CANCELLED")}
    )
    canceled = await adapter.cancel_order(PORTFOLIO, "o-1")
    cancel = broker.sent[0]
    assert (cancel.method, cancel.path, cancel.body) == (
        "POST",
        f"{P}/orders/batch_cancel",
        {"order_ids": ["o-1"]},
    )
    assert canceled.status is OrderStatus.canceled


async def test_a_refused_cancel_is_explained_by_the_order(
    broker: Broker, adapter: CoinbaseAdapter
) -> None:
    refused = {
        "results": [{"success": False, "failure_reason": "UNKNOWN_CANCEL_ORDER", "order_id": "o-1"}]
    }
    broker.answer("POST", f"{P}/orders/batch_cancel", refused)
    broker.answer(
        "GET",
        f"{P}/orders/historical/o-1",
        {"order": order(order_id="o-1", status="FILLED", filled_size="0.001")},
    )
    with pytest.raises(errors.OrderNotModifiable, match="already filled"):
        await adapter.cancel_order(PORTFOLIO, "o-1")
    broker.answers[("GET", f"{P}/orders/historical/o-1")] = [
        (200, {"order": order(order_id="o-1")})
    ]
    with pytest.raises(errors.Rejected, match="refused the cancel"):
        await adapter.cancel_order(PORTFOLIO, "o-1")
    broker.answers[("GET", f"{P}/orders/historical/o-1")] = [
        (200, {"order": order(order_id="o-1", status="CANCEL_QUEUED")})
    ]
    assert (await adapter.cancel_order(PORTFOLIO, "o-1")).status is OrderStatus.pending_cancel


async def test_modify_edits_price_and_size_together(
    broker: Broker, adapter: CoinbaseAdapter
) -> None:
    path = f"{P}/orders/historical/o-1"
    broker.answer("GET", path, {"order": order(order_id="o-1")})
    broker.answer("POST", f"{P}/orders/edit", EDIT_SUCCESS)
    edited_config = {
        "limit_limit_gtc": {"base_size": "0.001", "limit_price": "19000.00", "post_only": False}
    }
    broker.answer("GET", path, {"order": order(order_id="o-1", order_configuration=edited_config)})
    changed = await adapter.modify_order(
        PORTFOLIO, "o-1", OrderChanges(limit_price=Decimal("19000.00"))
    )
    assert [c[:2] for c in broker.calls()] == [
        ("GET", path),
        ("POST", f"{P}/orders/edit"),
        ("GET", path),
    ]
    assert broker.sent[1].body == {"order_id": "o-1", "price": "19000", "size": "0.001"}
    assert (changed.broker_order_id, changed.limit_price) == ("o-1", Decimal(19000))


async def test_refused_edits(broker: Broker, adapter: CoinbaseAdapter) -> None:
    path = f"{P}/orders/historical/o-1"
    broker.answer("GET", path, {"order": order(order_id="o-1")})
    broker.answer("POST", f"{P}/orders/edit", EDIT_REFUSED)
    with pytest.raises(errors.OrderNotModifiable, match="ONLY_OPEN_ORDERS_CAN_BE_EDITED"):
        await adapter.modify_order(PORTFOLIO, "o-1", OrderChanges(quantity=Decimal("0.002")))
    assert broker.sent[-1].body == {"order_id": "o-1", "price": "10000", "size": "0.002"}
    missing = {"success": False, "errors": [{"edit_failure_reason": "ORDER_NOT_FOUND"}]}
    broker.answers[("POST", f"{P}/orders/edit")] = [(200, missing)]
    with pytest.raises(errors.OrderNotFound):
        await adapter.modify_order(PORTFOLIO, "o-1", OrderChanges(quantity=Decimal("0.002")))
    sent = len(broker.sent)
    with pytest.raises(errors.UnsupportedOrder, match="only the limit price and the size"):
        await adapter.modify_order(PORTFOLIO, "o-1", OrderChanges(stop_price=Decimal(1)))
    with pytest.raises(errors.UnsupportedOrder):
        await adapter.modify_order(PORTFOLIO, "o-1", OrderChanges(time_in_force=TimeInForce.ioc))
    assert len(broker.sent) == sent  # refused before asking
    ioc = {"sor_limit_ioc": {"base_size": "0.001", "limit_price": "10"}}
    broker.answers[("GET", path)] = [
        (200, {"order": order(order_id="o-1", order_configuration=ioc)})
    ]
    with pytest.raises(errors.UnsupportedOrder, match="good-till-cancelled limit orders only"):
        await adapter.modify_order(PORTFOLIO, "o-1", OrderChanges(limit_price=Decimal(11)))
    assert [c[1] for c in broker.calls()][-1] == path  # read, never edited


async def test_find_order_by_client_id_scans_pages(
    broker: Broker, adapter: CoinbaseAdapter
) -> None:
    first = {
        "orders": [order(order_id="o-1", client_order_id="other")],
        "sequence": "0",
        "has_next": True,
        "cursor": "250",
    }
    second = {
        "orders": [order(order_id="o-2", client_order_id="bg-wanted")],
        "sequence": "0",
        "has_next": False,
        "cursor": "",
    }
    broker.answer("GET", f"{P}/orders/historical/batch", first)
    broker.answer("GET", f"{P}/orders/historical/batch", second)
    found = await adapter.find_order_by_client_id(PORTFOLIO, "bg-wanted")
    assert found is not None
    assert found.broker_order_id == "o-2"
    assert broker.calls() == [
        ("GET", f"{P}/orders/historical/batch", [("limit", "250")]),
        ("GET", f"{P}/orders/historical/batch", [("limit", "250"), ("cursor", "250")]),
    ]
    broker.sent.clear()
    broker.answers[("GET", f"{P}/orders/historical/batch")] = [(200, second)]
    assert await adapter.find_order_by_client_id(PORTFOLIO, "bg-none") is None


async def test_list_orders_and_history(broker: Broker, adapter: CoinbaseAdapter) -> None:
    quoted = order(order_id="o-q", order_configuration={"market_market_ioc": {"quote_size": "10"}})
    gtd = order(
        order_id="o-gtd",
        order_configuration={
            "limit_limit_gtd": {"base_size": "1", "limit_price": "1", "end_time": "2026-01-01"}
        },
    )
    page = {
        "orders": [
            order(order_id="o-1"),
            quoted,
            gtd,
            order(order_id="o-2", status="CANCELLED"),
        ],
        "sequence": "0",
        "has_next": False,
        "cursor": "",
    }
    broker.answer("GET", f"{P}/orders/historical/batch", page)
    open_orders = await adapter.list_orders(PORTFOLIO, "open", 10)
    assert broker.calls()[-1][2] == [("order_status", "OPEN"), ("limit", "250")]
    # the fake answer's; a dollar-amount order is represented, a GTD one is left out
    assert [o.broker_order_id for o in open_orders] == ["o-1", "o-q", "o-2"]
    assert is_partial(open_orders)
    assert open_orders[1].notional == Decimal(10)
    closed = await adapter.list_orders(PORTFOLIO, "closed", 10)
    assert broker.calls()[-1][2] == [("limit", "250")]
    assert [o.broker_order_id for o in closed] == ["o-2"]
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    history = await adapter.order_history(PORTFOLIO, start, end, "BTC-USD")
    assert broker.calls()[-1][2] == [
        ("start_date", "2026-01-01T00:00:00Z"),
        ("end_date", "2026-02-01T00:00:00Z"),
        ("product_ids", "BTC-USD"),
        ("limit", "250"),
    ]
    assert len(history) == 3
    assert is_partial(history)


async def test_transactions_are_fills_and_cash_movements(
    broker: Broker, adapter: CoinbaseAdapter
) -> None:
    broker.answer("GET", f"{P}/orders/historical/fills", {**FILLS_DOC, "cursor": ""})
    broker.answer("GET", f"{P}/accounts", accounts(USD, BTC))
    usd_path = f"/v2/accounts/{USD['uuid']}/transactions"
    more = copy.deepcopy(V2_TRANSACTIONS_DOC)
    more["pagination"]["next_uri"] = f"{usd_path}?limit=100&starting_after=abc"
    broker.answer("GET", usd_path, more)
    broker.answer("GET", usd_path, V2_TRANSACTIONS_DOC)
    result = await adapter.get_transactions(PORTFOLIO, None, None, None)
    assert broker.calls() == [
        ("GET", f"{P}/orders/historical/fills", [("limit", "250")]),
        ("GET", f"{P}/accounts", [("limit", "250")]),
        ("GET", usd_path, [("limit", "100"), ("order", "desc")]),
        ("GET", usd_path, [("limit", "100"), ("starting_after", "abc")]),
    ]
    assert broker.sent[2].claims["uri"] == f"GET api.coinbase.com{usd_path}"
    assert [t.type for t in result] == ["buy", "deposit", "deposit"]
    broker.sent.clear()
    buys = await adapter.get_transactions(PORTFOLIO, None, None, "buy")
    assert [c[1] for c in broker.calls()] == [f"{P}/orders/historical/fills"]
    assert [t.amount for t in buys] == [Decimal("-11.25")]


async def test_quotes(broker: Broker, adapter: CoinbaseAdapter) -> None:
    broker.answer("GET", f"{P}/best_bid_ask", BEST_BID_ASK)
    broker.answer("GET", f"{P}/products", PRODUCTS)
    quotes = await adapter.get_quotes(["BTC-USD", "ETH/USD", "AAPL"])
    assert sorted(broker.calls()) == [
        ("GET", f"{P}/best_bid_ask", [("product_ids", "BTC-USD"), ("product_ids", "ETH-USD")]),
        ("GET", f"{P}/products", [("product_ids", "BTC-USD"), ("product_ids", "ETH-USD")]),
    ]
    assert set(quotes) == {"BTC-USD", "ETH/USD"}
    assert quotes["ETH/USD"].last == Decimal(3200)
    broker.sent.clear()
    assert await adapter.get_quotes(["AAPL"]) == {}
    assert broker.sent == []


async def test_a_401_is_an_authentication_failure(broker: Broker, adapter: CoinbaseAdapter) -> None:
    broker.answer("GET", f"{P}/accounts", "Unauthorized\n", status=401)
    with pytest.raises(errors.AuthenticationFailed, match="Unauthorized"):
        await adapter.list_accounts()


async def test_a_portfolio_the_key_no_longer_sees_is_refused(
    broker: Broker, adapter: CoinbaseAdapter
) -> None:
    broker.answer("GET", f"{P}/accounts", accounts(USD, BTC))
    with pytest.raises(errors.Rejected, match=r"no longer sees portfolio \*\*\*\*2b5c"):
        await adapter.get_balances("another-portfolio-2b5c")
