"""Request/response fixtures per adapter method: the exact signed request each method sends
and the normalized result an SDK-shaped Webull answer parses into.

The broker side is an httpx transport that verifies each request's HMAC-SHA256 signature
(recomputed here from the SDK's scheme), records it and answers with a payload from
tests/brokers/webull/payloads.py; everything of ours runs unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import quote

import httpx
import pytest

from app.brokers import errors
from app.brokers.base import OrderChanges, OrderRequest, OrderSide, OrderType, TimeInForce
from app.brokers.http import HttpPool
from app.brokers.webull import auth
from app.brokers.webull.adapter import WebullAdapter
from app.config import Settings
from tests.brokers.webull.payloads import (
    ACCOUNTS,
    BALANCE,
    INSTRUMENTS,
    ORDER,
    PLACED,
    POSITIONS,
    SNAPSHOT,
    TOKEN_PENDING,
)
from tests.brokers.webull.support import TEST_QUERIES_PER_SECOND

BASE = "https://api.webull.com"
KEY, SECRET = "app-key-1", "app-secret-1"
WIRE_ID = PLACED["client_order_id"]


@dataclass
class Sent:
    method: str
    path: str
    query: dict[str, str]
    body: object
    headers: httpx.Headers


def verify(request: httpx.Request) -> None:
    """The SDK's composer, recomputed: raises AssertionError on a bad signature."""
    names = (
        "x-app-key",
        "x-timestamp",
        "x-signature-version",
        "x-signature-algorithm",
        "x-signature-nonce",
    )
    params = {name: request.headers[name] for name in names}
    params["host"] = request.headers["host"]
    params.update(dict(request.url.params.multi_items()))
    text = request.url.path + "&" + "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    if request.content:
        text += "&" + hashlib.sha256(request.content).hexdigest().upper()
    mac = hmac.new(f"{SECRET}&".encode(), quote(text, safe="").encode(), hashlib.sha256)
    assert request.headers["x-signature"] == base64.b64encode(mac.digest()).decode()
    assert request.headers["x-signature-algorithm"] == "HMAC-SHA256"
    # v3 everywhere but the two order lists' legacy pagination protocol.
    legacy = request.url.path.startswith(("/trading/orders/open-orders/", "/trading/orders/hist"))
    assert request.headers["x-version"] == ("v2" if legacy else "v3")


@dataclass
class Broker:
    replies: dict[tuple[str, str], tuple[int, object]]
    sent: list[Sent] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        verify(request)
        body = json.loads(request.content) if request.content else None
        self.sent.append(
            Sent(
                request.method,
                request.url.path,
                dict(request.url.params),
                body,
                request.headers,
            )
        )
        status, reply = self.replies[(request.method, request.url.path)]
        return httpx.Response(status, json=reply)


def adapter_for(
    broker: Callable[[httpx.Request], httpx.Response], status: str = "NORMAL"
) -> WebullAdapter:
    pool = HttpPool(transport=httpx.MockTransport(broker))
    credentials = auth.with_token(
        auth.check_credentials({"app_key": KEY, "app_secret": SECRET}), "tok-1", status, "1"
    )
    # The query pace as the fake-backed tests set it (tests/brokers/webull/support.py).
    settings = Settings(webull_base_url=BASE, webull_queries_per_second=TEST_QUERIES_PER_SECOND)
    return WebullAdapter(settings, credentials, pool)


ORDER_REQUEST = OrderRequest(
    client_order_id="bg" + WIRE_ID,
    symbol="AAPL",
    side=OrderSide.buy,
    quantity=Decimal(10),
    order_type=OrderType.limit,
    time_in_force=TimeInForce.day,
    limit_price=Decimal("188.00"),
)


async def test_token_calls_carry_the_token_in_the_body_not_the_header() -> None:
    broker = Broker(
        {
            ("POST", "/auth/tokens/create"): (200, TOKEN_PENDING),
            ("POST", "/auth/tokens/check"): (200, TOKEN_PENDING),
        }
    )
    adapter = adapter_for(broker)
    created = await adapter.create_token()
    assert (created["access_token"], created["token_status"]) == (
        TOKEN_PENDING["token"],
        "PENDING",
    )
    await adapter.check_token()
    [create, check] = broker.sent
    assert (create.body, check.body) == ({}, {"token": "tok-1"})
    assert "x-access-token" not in create.headers
    assert "x-access-token" not in check.headers


async def test_reads_send_the_account_id_and_the_access_token() -> None:
    broker = Broker(
        {
            ("GET", "/trading/accounts/list"): (200, ACCOUNTS),
            ("GET", "/trading/assets/balances/get"): (200, BALANCE),
            ("GET", "/trading/assets/positions/list"): (200, POSITIONS),
            ("GET", "/openapi/instrument/stock/list"): (200, INSTRUMENTS),
            ("GET", "/market-data/stocks/snapshots/list"): (200, SNAPSHOT),
        }
    )
    adapter = adapter_for(broker)
    [account] = await adapter.list_accounts()
    assert (account.broker_account_id, account.number_masked) == (
        "HBGQE8NM0CQG4Q34ABOM83HD09",
        "****2345",
    )
    ref = account.broker_account_id
    assert (await adapter.get_balances(ref)).buying_power == Decimal("20001.00")
    assert (await adapter.get_position(ref, "AAPL")) is not None
    await adapter.check_symbol("AAPL")
    quotes = await adapter.get_quotes(["AAPL"])
    assert quotes["AAPL"].ask == Decimal("190.02")
    assert [s.query for s in broker.sent] == [
        {},
        {"account_id": ref},
        {"account_id": ref},
        {"symbols": "AAPL", "category": "US_STOCK"},
        {"symbols": "AAPL", "category": "US_STOCK"},
    ]
    assert all(s.headers["x-access-token"] == "tok-1" for s in broker.sent)


async def test_place_sends_one_new_order_and_reads_it_back() -> None:
    broker = Broker(
        {
            ("POST", "/trading/orders/place"): (200, PLACED),
            ("GET", "/trading/orders/get"): (200, ORDER),
        }
    )
    placed = await adapter_for(broker).place_order("ACC1", ORDER_REQUEST)
    place, detail = broker.sent
    assert place.body == {
        "account_id": "ACC1",
        "new_orders": [
            {
                "client_order_id": WIRE_ID,
                "combo_type": "NORMAL",
                "symbol": "AAPL",
                "instrument_type": "EQUITY",
                "market": "US",
                "side": "BUY",
                "order_type": "LIMIT",
                "quantity": "10",
                "support_trading_session": "CORE",
                "entrust_type": "QTY",
                "time_in_force": "DAY",
                "limit_price": "188.00",
            }
        ],
    }
    assert detail.query == {"account_id": "ACC1", "client_order_id": WIRE_ID}
    assert (placed.broker_order_id, placed.client_order_id) == (WIRE_ID, "bg" + WIRE_ID)


async def test_an_unconfirmed_token_refuses_orders_before_sending_anything() -> None:
    broker = Broker({})
    adapter = adapter_for(broker, status="PENDING")
    with pytest.raises(errors.AuthenticationFailed, match="confirm"):
        await adapter.place_order("ACC1", ORDER_REQUEST)
    with pytest.raises(errors.AuthenticationFailed):
        await adapter.modify_order("ACC1", WIRE_ID, OrderChanges(limit_price=Decimal(1)))
    assert broker.sent == []


async def test_replace_and_cancel_name_the_order_by_client_order_id() -> None:
    broker = Broker(
        {
            ("POST", "/trading/orders/replace"): (200, PLACED),
            ("POST", "/trading/orders/cancel"): (200, PLACED),
            ("GET", "/trading/orders/get"): (200, ORDER),
        }
    )
    adapter = adapter_for(broker)
    changed = await adapter.modify_order("ACC1", WIRE_ID, OrderChanges(quantity=Decimal(12)))
    assert changed.broker_order_id == WIRE_ID  # in place
    canceled = await adapter.cancel_order("ACC1", WIRE_ID)
    assert canceled.status.value == "pending_cancel"  # still working when read back
    # A new quantity reads the order first: an option order's legs are replaced by leg id.
    read, replace, _, cancel, _ = broker.sent
    assert (read.method, read.path) == ("GET", "/trading/orders/get")
    assert replace.body == {
        "account_id": "ACC1",
        "modify_orders": [{"client_order_id": WIRE_ID, "quantity": "12"}],
    }
    assert cancel.body == {"account_id": "ACC1", "client_order_id": WIRE_ID}


async def test_open_orders_page_by_the_last_client_order_id() -> None:
    page = [ORDER] * 100
    calls: list[dict[str, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        verify(request)
        calls.append(dict(request.url.params))
        return httpx.Response(200, json=page if len(calls) == 1 else [ORDER])

    found = await adapter_for(answer).list_orders("ACC1", "open", 150)
    assert len(found) == 101
    assert calls == [
        {"account_id": "ACC1", "page_size": "100"},
        {"account_id": "ACC1", "page_size": "100", "last_client_order_id": WIRE_ID},
    ]
