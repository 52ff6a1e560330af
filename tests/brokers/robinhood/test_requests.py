"""Request/response fixtures per adapter method: the exact signed request each method sends
and the normalized result a documented Robinhood answer parses into.

The broker side is an httpx transport that checks every request's Ed25519 signature with the
docs' example public key, records the request and answers with a documentation-shaped payload
(tests/brokers/robinhood/payloads.py); everything of ours (the adapter, the signer, the shared
HTTP layer, the rate bucket) runs unchanged.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

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
from app.brokers.robinhood.adapter import RobinhoodAdapter
from app.config import Settings
from app.security.credentials import Credentials
from tests.brokers.robinhood.payloads import (
    ACCOUNT,
    BEST_BID_ASK,
    CANCEL_TEXT,
    HOLDINGS,
    LIMIT_ORDER,
    MARKET_ORDER,
    ORDERS_LAST_PAGE,
    ORDERS_PAGE,
    STOP_LIMIT_ORDER,
    TRADING_PAIRS,
    VALIDATION_ERROR,
)
from tests.brokers.robinhood.payloads import SIGNATURE_EXAMPLE as DOC

BASE = "https://trading.robinhood.com"
V1 = "/api/v1/crypto"
PUBLIC = Ed25519PublicKey.from_public_bytes(base64.b64decode(DOC["public_key"]))


@dataclass
class Sent:
    method: str
    target: str  # path and query, as signed
    body: bytes


def _dumps(body: object) -> str:
    return json.dumps(body, default=lambda d: float(d) if isinstance(d, Decimal) else str(d))


@dataclass
class Broker:
    """Verifies each signature, records the request, answers from ``replies`` by target."""

    replies: dict[tuple[str, str], tuple[int, object]]
    sent: list[Sent] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        target = request.url.raw_path.decode()
        message = (
            f"{request.headers['x-api-key']}{request.headers['x-timestamp']}{target}"
            f"{request.method}"
        ).encode() + request.content
        PUBLIC.verify(base64.b64decode(request.headers["x-signature"]), message)
        assert request.headers["x-api-key"] == DOC["api_key"]
        self.sent.append(Sent(request.method, target, request.content))
        status, reply = self.replies[(request.method, target)]
        if isinstance(reply, str):
            return httpx.Response(status, text=reply, headers={"Content-Type": "text/plain"})
        return httpx.Response(
            status, text=_dumps(reply), headers={"Content-Type": "application/json"}
        )


def adapter_for(broker: Callable[[httpx.Request], httpx.Response]) -> RobinhoodAdapter:
    pool = HttpPool(transport=httpx.MockTransport(broker))
    credentials = Credentials(api_key=DOC["api_key"], private_key=DOC["private_key"])
    return RobinhoodAdapter(Settings(robinhood_base_url=BASE), credentials, pool)


ORDER_REQUEST = OrderRequest(
    client_order_id="bg131de9035a9c4260abc128d562a5dcf0",
    symbol="BTC-USD",
    side=OrderSide.buy,
    quantity=Decimal("0.25"),
    order_type=OrderType.limit,
    time_in_force=TimeInForce.gtc,
    limit_price=Decimal("60000.00"),
)


async def test_accounts_and_balances() -> None:
    broker = Broker(
        {
            ("GET", f"{V1}/trading/accounts/"): (200, ACCOUNT),
            ("GET", f"{V1}/trading/holdings/?limit=100"): (200, HOLDINGS),
            ("GET", f"{V1}/marketdata/best_bid_ask/?symbol=BTC-USD"): (200, BEST_BID_ASK),
        }
    )
    adapter = adapter_for(broker)
    [account] = await adapter.list_accounts()
    assert (account.broker_account_id, account.number_masked) == ("5RH00001234", "****1234")
    balances = await adapter.get_balances("5RH00001234")
    assert balances.cash == Decimal("2500.75")
    assert balances.equity == Decimal("2500.75") + Decimal("0.5") * Decimal("65000.5")
    assert [s.target for s in broker.sent] == [
        f"{V1}/trading/accounts/",
        f"{V1}/trading/accounts/",
        f"{V1}/trading/holdings/?limit=100",
        f"{V1}/marketdata/best_bid_ask/?symbol=BTC-USD",
    ]
    assert all(s.body == b"" for s in broker.sent)


async def test_place_sends_the_signed_documented_body() -> None:
    broker = Broker({("POST", f"{V1}/trading/orders/"): (201, LIMIT_ORDER)})
    placed = await adapter_for(broker).place_order("5RH00001234", ORDER_REQUEST)
    [sent] = broker.sent
    assert json.loads(sent.body) == {
        "client_order_id": "131de903-5a9c-4260-abc1-28d562a5dcf0",
        "side": "buy",
        "type": "limit",
        "symbol": "BTC-USD",
        "limit_order_config": {
            "asset_quantity": "0.25",
            "limit_price": "60000.00",
            "time_in_force": "gtc",
        },
    }
    assert placed.broker_order_id == LIMIT_ORDER["id"]
    assert placed.status is OrderStatus.partially_filled


async def test_a_refused_client_order_id_is_looked_up_and_adopted_when_its_order_exists() -> None:
    mine = {**MARKET_ORDER, "client_order_id": "131de903-5a9c-4260-abc1-28d562a5dcf0"}
    pages = {"next": None, "previous": None, "results": [LIMIT_ORDER, mine]}
    broker = Broker(
        {
            ("POST", f"{V1}/trading/orders/"): (400, VALIDATION_ERROR),
        }
    )

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            assert request.url.params["created_at_start"].endswith("Z")
            return httpx.Response(200, text=_dumps(pages))
        return broker(request)

    found = await adapter_for(answer).place_order("5RH00001234", ORDER_REQUEST)
    assert found.broker_order_id == MARKET_ORDER["id"]
    broker.replies[("POST", f"{V1}/trading/orders/")] = (400, VALIDATION_ERROR)

    def nothing(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, text=_dumps({"next": None, "results": []}))
        return broker(request)

    with pytest.raises(errors.Rejected, match="Must be a valid UUID"):
        await adapter_for(nothing).place_order("5RH00001234", ORDER_REQUEST)


async def test_get_cancel_and_the_pending_cancel_read_back() -> None:
    order_id = LIMIT_ORDER["id"]
    still_open = {**LIMIT_ORDER, "state": "open", "filled_asset_quantity": Decimal(0)}
    broker = Broker(
        {
            ("POST", f"{V1}/trading/orders/{order_id}/cancel/"): (200, CANCEL_TEXT),
            ("GET", f"{V1}/trading/orders/{order_id}/"): (200, still_open),
        }
    )
    adapter = adapter_for(broker)
    canceled = await adapter.cancel_order("5RH00001234", order_id)
    assert canceled.status is OrderStatus.pending_cancel
    assert [(s.method, s.body) for s in broker.sent] == [("POST", b""), ("GET", b"")]
    broker.replies[("GET", f"{V1}/trading/orders/{order_id}/")] = (200, STOP_LIMIT_ORDER)
    assert (await adapter.cancel_order("5RH00001234", order_id)).status is OrderStatus.canceled


async def test_modify_is_not_supported_and_sends_nothing() -> None:
    broker = Broker({})
    with pytest.raises(errors.NotSupported):
        await adapter_for(broker).modify_order("a", "b", OrderChanges(limit_price=Decimal(1)))
    assert broker.sent == []


async def test_lists_follow_next_pages_on_the_same_host_only() -> None:
    broker = Broker(
        {
            ("GET", f"{V1}/trading/orders/?limit=100"): (200, ORDERS_PAGE),
            ("GET", f"{V1}/trading/orders/?cursor=cD0y"): (200, ORDERS_LAST_PAGE),
        }
    )
    adapter = adapter_for(broker)
    closed = await adapter.list_orders("5RH00001234", "closed", 10)
    assert [o.broker_order_id for o in closed] == [STOP_LIMIT_ORDER["id"]]
    found = await adapter.order_history("5RH00001234", None, None, None)
    assert len(found) == 3
    elsewhere = {**ORDERS_PAGE, "next": "https://evil.example/api/v1/crypto/trading/orders/"}
    broker.replies[("GET", f"{V1}/trading/orders/?limit=100")] = (200, elsewhere)
    with pytest.raises(errors.UnknownBrokerValue, match="host"):
        await adapter.order_history("5RH00001234", None, None, None)


async def test_open_orders_query_each_open_state() -> None:
    broker = Broker(
        {
            ("GET", f"{V1}/trading/orders/?state=open&limit=100"): (
                200,
                {"next": None, "results": [MARKET_ORDER]},
            ),
            ("GET", f"{V1}/trading/orders/?state=partially_filled&limit=100"): (
                200,
                {"next": None, "results": [LIMIT_ORDER]},
            ),
        }
    )
    found = await adapter_for(broker).list_orders("5RH00001234", "open", 5)
    assert {o.status for o in found} == {OrderStatus.accepted, OrderStatus.partially_filled}


async def test_symbols_quotes_and_positions() -> None:
    broker = Broker(
        {
            ("GET", f"{V1}/trading/trading_pairs/?symbol=BTC-USD"): (200, TRADING_PAIRS),
            ("GET", f"{V1}/trading/trading_pairs/?symbol=DOGE-USD"): (
                200,
                {"next": None, "results": []},
            ),
            ("GET", f"{V1}/trading/holdings/?asset_code=BTC&limit=100"): (200, HOLDINGS),
            ("GET", f"{V1}/marketdata/best_bid_ask/?symbol=BTC-USD"): (200, BEST_BID_ASK),
            ("GET", f"{V1}/trading/orders/?limit=100"): (
                200,
                {"next": None, "results": [{**LIMIT_ORDER, "state": "filled"}]},
            ),
        }
    )
    adapter = adapter_for(broker)
    await adapter.check_symbol("BTC-USD")
    await adapter.check_symbol("BTC-USD")  # remembered: no second request
    assert [s.target for s in broker.sent].count(f"{V1}/trading/trading_pairs/?symbol=BTC-USD") == 1
    with pytest.raises(errors.UnknownSymbol):
        await adapter.check_symbol("DOGE-USD")
    position = await adapter.get_position("5RH00001234", "BTC-USD")
    assert position is not None
    # Fills explain 0.1 of the 0.5 held: the cost basis is not knowable, shown at market.
    assert (position.quantity, position.avg_cost, position.unrealized_pl) == (
        Decimal("0.5"),
        Decimal("65000.5"),
        Decimal(0),
    )
