"""Request/response fixtures per adapter method: the exact requests each method sends to the
gateway (session checks first, the reply chain, the pacing-sensitive lists) and what the
recorded answers (tests/brokers/ibkr/payloads.py) parse into.

The gateway side is an httpx transport that answers from scripted replies and records every
request; everything of ours (adapter, pacing buckets, shared HTTP layer) runs unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

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
from app.brokers.ibkr.adapter import IbkrAdapter
from app.brokers.ibkr.auth import check_credentials
from app.config import Settings
from tests.brokers.ibkr.payloads import (
    ACCOUNT,
    ACK,
    AUTH_STATUS,
    CANCELED,
    ISERVER_ACCOUNTS,
    LIVE_ORDER,
    ORDER_STATUS,
    QUESTION,
    SEARCH,
    SNAPSHOT,
    SNAPSHOT_PRIMING,
    SUMMARY,
    TICKLE,
)

GATEWAY = "https://localhost:5000/v1/api"
REPLY = f"/v1/api/iserver/reply/{QUESTION[0]['id']}"


@dataclass
class Gateway:
    """Scripted answers per (method, path), used in order; the last one repeats."""

    script: dict[tuple[str, str], list[tuple[int, Any]]]
    sent: list[tuple[str, str, Any]] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.sent.append((request.method, request.url.path, body))
        answers = self.script[(request.method, request.url.path)]
        status, reply = answers.pop(0) if len(answers) > 1 else answers[0]
        return httpx.Response(status, text=json.dumps(reply, default=str))

    def paths(self) -> list[tuple[str, str]]:
        return [(m, p.removeprefix("/v1/api")) for m, p, _ in self.sent]


def session() -> dict[tuple[str, str], list[tuple[int, Any]]]:
    return {
        ("GET", "/v1/api/iserver/auth/status"): [(200, AUTH_STATUS)],
        ("GET", "/v1/api/iserver/accounts"): [(200, ISERVER_ACCOUNTS)],
        ("POST", "/v1/api/tickle"): [(200, TICKLE)],
        ("GET", "/v1/api/iserver/secdef/search"): [(200, SEARCH)],
        ("GET", f"/v1/api/iserver/account/order/status/{ACK[0]['order_id']}"): [
            (200, ORDER_STATUS)
        ],
    }


def adapter_for(gateway: Callable[[httpx.Request], httpx.Response], **settings: Any) -> IbkrAdapter:
    pool = HttpPool(transport=httpx.MockTransport(gateway))
    values: dict[str, Any] = {"ibkr_slow_endpoint_seconds": 0.01, "ibkr_requests_per_second": 500}
    values.update(settings)
    return IbkrAdapter(Settings(**values), check_credentials({"base_url": GATEWAY}), pool)


ORDER = OrderRequest(
    client_order_id="bg" + "c" * 32,
    symbol="SPY",
    side=OrderSide.buy,
    quantity=Decimal(1),
    order_type=OrderType.limit,
    time_in_force=TimeInForce.gtc,
    limit_price=Decimal("457.00"),
)
PLACE = ("POST", f"/v1/api/iserver/account/{ACCOUNT}/orders")


async def test_the_session_is_checked_and_pre_flighted_once_before_anything_else() -> None:
    gateway = Gateway(session())
    adapter = adapter_for(gateway)
    [account] = await adapter.list_accounts()
    assert (account.broker_account_id, account.name) == (ACCOUNT, "IBKR ****D123 (paper)")
    await adapter.check_symbol("SPY")
    await adapter.check_symbol("SPY")  # the conid is remembered
    assert gateway.paths() == [
        ("GET", "/iserver/auth/status"),
        ("GET", "/iserver/accounts"),
        ("GET", "/iserver/secdef/search"),
    ]
    assert gateway.sent[2][2] is None


async def test_a_gateway_without_a_brokerage_session_is_refused() -> None:
    script = session()
    script[("GET", "/v1/api/iserver/auth/status")] = [
        (200, {**AUTH_STATUS, "authenticated": False})
    ]
    with pytest.raises(errors.AuthenticationFailed, match="log in at the gateway"):
        await adapter_for(Gateway(script)).list_accounts()
    script[("GET", "/v1/api/iserver/auth/status")] = [(200, {**AUTH_STATUS, "competing": True})]
    with pytest.raises(errors.AuthenticationFailed, match="competes"):
        await adapter_for(Gateway(script)).list_accounts()


async def test_a_question_is_declined_and_the_order_rejected_by_default() -> None:
    script = session()
    script[PLACE] = [(200, QUESTION)]
    script[("POST", REPLY)] = [(200, {"msg": "The order was not submitted."})]
    gateway = Gateway(script)
    with pytest.raises(errors.Rejected, match="IBKR asked: The following order") as caught:
        await adapter_for(gateway).place_order(ACCOUNT, ORDER)
    assert not isinstance(caught.value, errors.OutcomeUnknown)
    place, reply = gateway.sent[-2:]
    assert place[2] == {
        "orders": [
            {
                "acctId": ACCOUNT,
                "conid": 756733,
                "secType": "756733:STK",
                "cOID": ORDER.client_order_id,
                "orderType": "LMT",
                "side": "BUY",
                "quantity": 1,
                "tif": "GTC",
                "outsideRTH": False,
                "price": 457.0,
            }
        ]
    }
    assert reply[2] == {"confirmed": False}


async def test_configured_questions_are_confirmed_through_the_chain() -> None:
    second = [{**QUESTION[0], "id": "second-reply", "messageIds": ["o354"], "message": ["No data"]}]
    script = session()
    script[PLACE] = [(200, QUESTION)]
    script[("POST", REPLY)] = [(200, second)]
    script[("POST", "/v1/api/iserver/reply/second-reply")] = [(200, ACK)]
    gateway = Gateway(script)
    adapter = adapter_for(gateway, ibkr_auto_confirm=["o163", "o354"])
    placed = await adapter.place_order(ACCOUNT, ORDER)
    assert (placed.broker_order_id, placed.client_order_id) == (
        "1210386759",
        ORDER.client_order_id,
    )
    replies = [body for method, path, body in gateway.sent if "/reply/" in path]
    assert replies == [{"confirmed": True}, {"confirmed": True}]
    # Only some of a question's ids allowed: declined.
    script[PLACE] = [(200, QUESTION)]
    script[("POST", REPLY)] = [(200, second)]
    script[("POST", "/v1/api/iserver/reply/second-reply")] = [(200, {"msg": "not submitted"})]
    only = adapter_for(Gateway(script), ibkr_auto_confirm=["o163"])
    with pytest.raises(errors.Rejected, match="No data"):
        await only.place_order(ACCOUNT, ORDER)


async def test_an_error_answer_is_a_refusal_and_a_duplicate_cOID_is_adopted() -> None:
    script = session()
    script[PLACE] = [(200, {"error": "Order rejected: insufficient buying power."})]
    with pytest.raises(errors.InsufficientFunds):
        await adapter_for(Gateway(script)).place_order(ACCOUNT, ORDER)
    mine = {**LIVE_ORDER, "order_ref": ORDER.client_order_id}
    script[PLACE] = [
        (
            200,
            {
                "error": f"Order couldn't be submitted: Local order ID={ORDER.client_order_id} "
                "is already registered."
            },
        )
    ]
    script[("GET", "/v1/api/iserver/account/orders")] = [
        (200, {"orders": [], "snapshot": False}),
        (200, {"orders": [mine], "snapshot": True}),
    ]
    gateway = Gateway(script)
    found = await adapter_for(gateway).place_order(ACCOUNT, ORDER)
    assert found.broker_order_id == "1210386759"
    # The empty subscription answer was asked again.
    assert gateway.paths().count(("GET", "/iserver/account/orders")) == 2


async def test_modify_sends_the_whole_order_and_cancel_reads_back() -> None:
    script = session()
    order_path = f"/v1/api/iserver/account/{ACCOUNT}/order/1210386759"
    script[("POST", order_path)] = [(200, ACK)]
    script[("DELETE", order_path)] = [(200, CANCELED)]
    gateway = Gateway(script)
    adapter = adapter_for(gateway)
    await adapter.modify_order(ACCOUNT, "1210386759", OrderChanges(limit_price=Decimal("456")))
    modify = next(
        body for method, path, body in gateway.sent if method == "POST" and path == order_path
    )
    assert modify == {
        "acctId": ACCOUNT,
        "conid": 756733,
        "orderType": "LMT",
        "side": "BUY",
        "quantity": 1,
        "tif": "GTC",
        "price": 456,
    }
    canceled = await adapter.cancel_order(ACCOUNT, "1210386759")
    assert canceled.status is OrderStatus.pending_cancel  # still working when read back


async def test_balances_need_the_portfolio_pre_flight_and_quotes_their_subscription() -> None:
    script = session()
    script[("GET", "/v1/api/portfolio/accounts")] = [(200, [{"accountId": ACCOUNT}])]
    script[("GET", f"/v1/api/portfolio/{ACCOUNT}/summary")] = [(200, SUMMARY)]
    script[("GET", "/v1/api/iserver/marketdata/snapshot")] = [
        (200, SNAPSHOT_PRIMING),
        (200, SNAPSHOT),
    ]
    gateway = Gateway(script)
    adapter = adapter_for(gateway)
    assert (await adapter.get_balances(ACCOUNT)).cash == Decimal("985376.94")
    await adapter.get_balances(ACCOUNT)
    assert gateway.paths().count(("GET", "/portfolio/accounts")) == 1
    quotes = await adapter.get_quotes(["SPY"])
    assert quotes["SPY"].bid == Decimal("454.43")
    snapshots = [p for p in gateway.sent if p[1].endswith("/snapshot")]
    assert len(snapshots) == 2


async def test_a_due_tickle_keeps_the_session_and_a_dead_one_is_reported() -> None:
    script = session()
    gateway = Gateway(script)
    pool = HttpPool(transport=httpx.MockTransport(gateway))
    settings = Settings(ibkr_slow_endpoint_seconds=0.01, ibkr_requests_per_second=500)
    adapter = IbkrAdapter(settings, check_credentials({"base_url": GATEWAY}), pool)
    await adapter.list_accounts()
    pool.remember(("ibkr-tickle", GATEWAY), None, 0)  # a minute has passed
    await adapter.list_accounts()
    assert ("POST", "/tickle") in gateway.paths()
    dead = {**TICKLE, "iserver": {"authStatus": {**AUTH_STATUS, "authenticated": False}}}
    script[("POST", "/v1/api/tickle")] = [(200, dead)]
    pool.remember(("ibkr-tickle", GATEWAY), None, 0)
    with pytest.raises(errors.AuthenticationFailed, match="session ended"):
        await adapter.list_accounts()
