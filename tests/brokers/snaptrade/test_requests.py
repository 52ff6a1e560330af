"""Per adapter method: the exact request SnapTrade receives, signature included, and the
result made of a documented answer.

The broker side is an ``httpx.MockTransport`` answering the spec's example payloads
(``payloads.py``); the transport is the HTTP pool's injection point, everything of ours runs.
The clock is fixed, so each request, ``timestamp`` and ``Signature`` included, is pinned.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from app.brokers import errors
from app.brokers.base import (
    OrderChanges,
    OrderFingerprint,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    TimeInForce,
)
from app.brokers.http import HttpPool
from app.brokers.snaptrade.adapter import SnaptradeAdapter
from app.config import Settings
from app.security.credentials import Credentials
from tests.brokers.snaptrade.payloads import (
    ACCOUNT,
    ACTIVITIES,
    AUTHORIZATION,
    BALANCES,
    CANCELED,
    FEATURE_OFF,
    IMPACT,
    LOGIN,
    NOT_FOUND,
    ORDER,
    POSITIONS,
    QUOTES,
    REGISTERED,
    THROTTLED,
    UNIVERSAL_SYMBOL,
    variant,
)

BASE = "https://api.snaptrade.com"
CLIENT_ID = "WEALTHLY"
CONSUMER_KEY = "consumer-key-for-tests"
NOW = 1722380000  # the fixed clock: every request's ``timestamp``
USER = REGISTERED["userId"]
SECRET = REGISTERED["userSecret"]
ACCOUNT_ID = ACCOUNT["id"]
USER_QUERY = f"userId={USER}&userSecret={SECRET}"
PARTNER_QUERY = f"clientId={CLIENT_ID}&timestamp={NOW}"


@dataclass
class Sent:
    method: str
    path: str
    query: str
    headers: httpx.Headers
    body: Any


@dataclass
class Broker:
    """Recorded answers by (method, path); every request is kept."""

    answers: dict[tuple[str, str], list[tuple[int, Any, dict[str, str]]]] = field(
        default_factory=dict
    )
    sent: list[Sent] = field(default_factory=list)

    def answer(self, method: str, path: str, body: Any, status: int = 200, **headers: str) -> None:
        self.answers.setdefault((method, path), []).append((status, body, headers))

    def handler(self, request: httpx.Request) -> httpx.Response:
        raw = request.content
        self.sent.append(
            Sent(
                method=request.method,
                path=request.url.raw_path.decode().split("?")[0],
                query=request.url.query.decode(),
                headers=request.headers,
                body=json.loads(raw) if raw else None,
            )
        )
        queue = self.answers.get((request.method, request.url.path))
        if not queue:
            return httpx.Response(404, json=NOT_FOUND)
        status, body, headers = queue.pop(0) if len(queue) > 1 else queue[0]
        return httpx.Response(status, json=body, headers=headers)


def expected_signature(sent: Sent) -> str:
    """The docs' recipe (docs/request-signatures.md), computed here independently."""
    content = None if sent.body in (None, {}) else sent.body
    message = json.dumps(
        {"content": content, "path": sent.path, "query": sent.query},
        separators=(",", ":"),
        sort_keys=True,
    )
    digest = hmac.new(CONSUMER_KEY.encode(), message.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def check(sent: Sent, method: str, path: str, query: str, body: Any = None) -> None:
    assert (sent.method, sent.path, sent.query, sent.body) == (method, path, query, body)
    assert sent.headers["Signature"] == expected_signature(sent)
    assert sent.headers["Accept"] == "application/json"


@pytest.fixture
def broker() -> Broker:
    return Broker()


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "snaptrade_base_url": BASE,
        "snaptrade_client_id": CLIENT_ID,
        "snaptrade_consumer_key": SecretStr(CONSUMER_KEY),
        "snaptrade_requests_per_minute": 6000,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def pool(broker: Broker) -> AsyncIterator[HttpPool]:
    pool = HttpPool(transport=httpx.MockTransport(broker.handler))
    yield pool
    await pool.aclose()


@pytest.fixture
def adapter(pool: HttpPool) -> SnaptradeAdapter:
    credentials = Credentials(user_id=USER, user_secret=SECRET)
    return SnaptradeAdapter(settings(), credentials, pool, clock=lambda: NOW + 0.7)


def only(broker: Broker) -> Sent:
    [call] = broker.sent
    return call


async def test_register_user_is_partner_level(broker: Broker, pool: HttpPool) -> None:
    broker.answer("POST", "/snapTrade/registerUser", REGISTERED)
    partner = SnaptradeAdapter(settings(), None, pool, clock=lambda: NOW)
    credentials = await partner.register_user(USER)
    check(only(broker), "POST", "/snapTrade/registerUser", PARTNER_QUERY, {"userId": USER})
    assert dict(credentials) == {"user_id": USER, "user_secret": SECRET}
    assert SECRET not in repr(credentials)


async def test_register_user_refuses_an_answer_for_someone_else(
    broker: Broker, pool: HttpPool
) -> None:
    broker.answer("POST", "/snapTrade/registerUser", {**REGISTERED, "userId": "other"})
    partner = SnaptradeAdapter(settings(), None, pool, clock=lambda: NOW)
    with pytest.raises(errors.UnknownBrokerValue):
        await partner.register_user(USER)


async def test_delete_user_sends_no_secret(broker: Broker, adapter: SnaptradeAdapter) -> None:
    broker.answer("DELETE", "/snapTrade/deleteUser", {"status": "deleted", "userId": USER})
    await adapter.delete_user()
    check(only(broker), "DELETE", "/snapTrade/deleteUser", f"userId={USER}&{PARTNER_QUERY}")


async def test_the_portal_link(broker: Broker, pool: HttpPool) -> None:
    broker.answer("POST", "/snapTrade/login", LOGIN)
    redirect = "https://app.example.com/snaptrade/done"
    adapter = SnaptradeAdapter(
        settings(snaptrade_redirect_url=redirect),
        Credentials(user_id=USER, user_secret=SECRET),
        pool,
        clock=lambda: NOW,
    )
    before = datetime.now(UTC)
    link = await adapter.portal_link(institution="SCHWAB", reconnect="87b24961")
    after = datetime.now(UTC)
    check(
        only(broker),
        "POST",
        "/snapTrade/login",
        f"{USER_QUERY}&{PARTNER_QUERY}",
        {
            "connectionType": "trade-if-available",
            "broker": "SCHWAB",
            "reconnect": "87b24961",
            "customRedirect": redirect,
        },
    )
    assert link.url == LOGIN["redirectURI"]
    assert link.session_id == LOGIN["sessionId"]
    # "the returned URL expires in 5 minutes", counted from when it was asked for
    assert before + timedelta(minutes=5) <= link.expires_at <= after + timedelta(minutes=5)


async def test_an_encrypted_login_answer_is_refused(
    broker: Broker, adapter: SnaptradeAdapter
) -> None:
    broker.answer("POST", "/snapTrade/login", {"encryptedSharedKey": "5UEaY9QG"})
    with pytest.raises(errors.UnknownBrokerValue):
        await adapter.portal_link(institution=None, reconnect=None)
    assert only(broker).body == {"connectionType": "trade-if-available"}


async def test_links_read_connections_then_accounts(
    broker: Broker, adapter: SnaptradeAdapter
) -> None:
    broker.answer("GET", "/authorizations", [AUTHORIZATION])
    broker.answer("GET", "/accounts", [ACCOUNT])
    [link] = await adapter.links()
    first, second = broker.sent
    check(first, "GET", "/authorizations", f"{USER_QUERY}&{PARTNER_QUERY}")
    check(second, "GET", "/accounts", f"{USER_QUERY}&{PARTNER_QUERY}")
    assert [a.broker_account_id for a in link.accounts] == [ACCOUNT_ID]


async def test_balances(broker: Broker, adapter: SnaptradeAdapter) -> None:
    broker.answer("GET", f"/accounts/{ACCOUNT_ID}", ACCOUNT)
    broker.answer("GET", f"/accounts/{ACCOUNT_ID}/balances", BALANCES)
    balances = await adapter.get_balances(ACCOUNT_ID)
    first, second = broker.sent
    check(first, "GET", f"/accounts/{ACCOUNT_ID}", f"{USER_QUERY}&{PARTNER_QUERY}")
    check(second, "GET", f"/accounts/{ACCOUNT_ID}/balances", f"{USER_QUERY}&{PARTNER_QUERY}")
    assert (balances.cash, balances.buying_power, balances.equity, balances.currency) == (
        Decimal("300.71"),
        Decimal("410.71"),
        Decimal("15363.23"),
        "USD",
    )


async def test_balances_without_a_reported_total_add_up_the_positions(
    broker: Broker, adapter: SnaptradeAdapter
) -> None:
    broker.answer("GET", f"/accounts/{ACCOUNT_ID}", variant(ACCOUNT, balance={"total": None}))
    broker.answer("GET", f"/accounts/{ACCOUNT_ID}/balances", BALANCES)
    broker.answer("GET", f"/accounts/{ACCOUNT_ID}/positions/all", POSITIONS)
    balances = await adapter.get_balances(ACCOUNT_ID)
    assert balances.equity == Decimal("300.71") + Decimal("1296.225")
    assert [s.path for s in broker.sent][-1] == f"/accounts/{ACCOUNT_ID}/positions/all"


async def test_positions(broker: Broker, adapter: SnaptradeAdapter) -> None:
    broker.answer("GET", f"/accounts/{ACCOUNT_ID}/positions/all", POSITIONS)
    position = await adapter.get_position(ACCOUNT_ID, "AAPL")
    check(
        only(broker),
        "GET",
        f"/accounts/{ACCOUNT_ID}/positions/all",
        f"{USER_QUERY}&{PARTNER_QUERY}",
    )
    assert position is not None
    assert position.quantity == Decimal("10.5")
    assert await adapter.get_position(ACCOUNT_ID, "MSFT") is None


async def test_check_symbol_is_partner_level_and_remembered(
    broker: Broker, adapter: SnaptradeAdapter
) -> None:
    broker.answer("GET", "/symbols/VAB.TO", UNIVERSAL_SYMBOL)
    await adapter.check_symbol("VAB.TO")
    await adapter.check_symbol("VAB.TO")
    check(only(broker), "GET", "/symbols/VAB.TO", PARTNER_QUERY)
    with pytest.raises(errors.UnknownSymbol):
        await adapter.check_symbol("NOPE")  # 404 (spec 404FailedRequestResponse)


async def test_check_symbol_refuses_another_listing(
    broker: Broker, adapter: SnaptradeAdapter
) -> None:
    broker.answer("GET", "/symbols/VAB", UNIVERSAL_SYMBOL)  # "the first matching result"
    with pytest.raises(errors.UnknownSymbol):
        await adapter.check_symbol("VAB")


def limit_sell() -> OrderRequest:
    return OrderRequest(
        client_order_id="bg-ord-1",
        symbol="VAB.TO",
        side=OrderSide.sell,
        quantity=Decimal(10),
        order_type=OrderType.limit,
        time_in_force=TimeInForce.gtc,
        limit_price=Decimal("31.33"),
    )


async def test_place_checks_the_impact_then_places_the_trade(
    broker: Broker, adapter: SnaptradeAdapter
) -> None:
    broker.answer("GET", "/symbols/VAB.TO", UNIVERSAL_SYMBOL)
    broker.answer("POST", "/trade/impact", IMPACT)
    trade = IMPACT["trade"]["id"]
    placed_record = variant(
        ORDER,
        status="ACCEPTED",
        action="SELL",
        order_type="Limit",
        time_in_force="GTC",
        total_quantity="10",
        filled_quantity="0",
        open_quantity="10",
        canceled_quantity="0",
        limit_price="31.33",
        execution_price=None,
        time_executed=None,
    )
    broker.answer("POST", f"/trade/{trade}", placed_record)
    placed = await adapter.place_order(ACCOUNT_ID, limit_sell())
    symbol, impact, place = broker.sent
    check(symbol, "GET", "/symbols/VAB.TO", PARTNER_QUERY)
    check(
        impact,
        "POST",
        "/trade/impact",
        f"{USER_QUERY}&{PARTNER_QUERY}",
        {
            "account_id": ACCOUNT_ID,
            "action": "SELL",
            "universal_symbol_id": UNIVERSAL_SYMBOL["id"],
            "order_type": "Limit",
            "time_in_force": "GTC",
            "units": 10,
            "price": 31.33,
        },
    )
    check(
        place, "POST", f"/trade/{trade}", f"{USER_QUERY}&{PARTNER_QUERY}", {"wait_to_confirm": True}
    )
    assert (placed.status, placed.limit_price, placed.side) == (
        OrderStatus.accepted,
        Decimal("31.33"),
        OrderSide.sell,
    )


async def test_a_refused_impact_places_nothing(broker: Broker, adapter: SnaptradeAdapter) -> None:
    broker.answer("GET", "/symbols/VAB.TO", UNIVERSAL_SYMBOL)
    broker.answer("POST", "/trade/impact", {"detail": "Insufficient buying power"}, status=400)
    with pytest.raises(errors.InsufficientFunds):
        await adapter.place_order(ACCOUNT_ID, limit_sell())
    assert [s.path for s in broker.sent] == ["/symbols/VAB.TO", "/trade/impact"]


async def test_a_lost_impact_answer_is_transient_a_lost_placement_is_unknown(
    broker: Broker, adapter: SnaptradeAdapter
) -> None:
    broker.answer("GET", "/symbols/VAB.TO", UNIVERSAL_SYMBOL)
    broker.answer("POST", "/trade/impact", {"detail": "x", "status_code": 500, "code": 1000}, 500)
    with pytest.raises(errors.Transient):
        await adapter.place_order(ACCOUNT_ID, limit_sell())
    broker.answers[("POST", "/trade/impact")] = [(200, IMPACT, {})]
    trade = IMPACT["trade"]["id"]
    broker.answer("POST", f"/trade/{trade}", {"detail": "x", "status_code": 500, "code": 1000}, 500)
    with pytest.raises(errors.OutcomeUnknown):
        await adapter.place_order(ACCOUNT_ID, limit_sell())


async def test_get_order_is_a_read_even_as_a_post(
    broker: Broker, adapter: SnaptradeAdapter
) -> None:
    path = f"/accounts/{ACCOUNT_ID}/orders/details"
    broker.answer("POST", path, ORDER)
    order = await adapter.get_order(ACCOUNT_ID, ORDER["brokerage_order_id"])
    check(
        only(broker),
        "POST",
        path,
        f"{USER_QUERY}&{PARTNER_QUERY}",
        {"brokerage_order_id": ORDER["brokerage_order_id"]},
    )
    assert order.status is OrderStatus.filled
    broker.answers[("POST", path)] = [(503, {"detail": "busy", "code": 3002}, {})]
    with pytest.raises(errors.Transient):
        await adapter.get_order(ACCOUNT_ID, ORDER["brokerage_order_id"])
    broker.answers[("POST", path)] = [(404, NOT_FOUND, {})]
    with pytest.raises(errors.OrderNotFound):
        await adapter.get_order(ACCOUNT_ID, "nope")


async def test_cancel_then_read(broker: Broker, adapter: SnaptradeAdapter) -> None:
    order_id = ORDER["brokerage_order_id"]
    broker.answer("POST", f"/accounts/{ACCOUNT_ID}/trading/cancel", CANCELED)
    broker.answer(
        "POST", f"/accounts/{ACCOUNT_ID}/orders/details", variant(ORDER, status="CANCELED")
    )
    canceled = await adapter.cancel_order(ACCOUNT_ID, order_id)
    cancel, read = broker.sent
    check(
        cancel,
        "POST",
        f"/accounts/{ACCOUNT_ID}/trading/cancel",
        f"{USER_QUERY}&{PARTNER_QUERY}",
        {"brokerage_order_id": order_id},
    )
    assert read.path == f"/accounts/{ACCOUNT_ID}/orders/details"
    assert canceled.status is OrderStatus.canceled


async def test_a_cancel_whose_result_cannot_be_read_is_unknown(
    broker: Broker, adapter: SnaptradeAdapter
) -> None:
    broker.answer("POST", f"/accounts/{ACCOUNT_ID}/trading/cancel", CANCELED)
    broker.answer("POST", f"/accounts/{ACCOUNT_ID}/orders/details", {"detail": "x"}, 500)
    with pytest.raises(errors.OutcomeUnknown):
        await adapter.cancel_order(ACCOUNT_ID, ORDER["brokerage_order_id"])


async def test_replace_sends_the_whole_order_and_names_what_it_replaces(
    broker: Broker, adapter: SnaptradeAdapter
) -> None:
    old = variant(
        ORDER, order_type="Limit", status="ACCEPTED", filled_quantity="0", execution_price=None
    )
    new = variant(old, brokerage_order_id="new-id-1", limit_price="13")
    broker.answer("POST", f"/accounts/{ACCOUNT_ID}/orders/details", old)
    broker.answer("POST", f"/accounts/{ACCOUNT_ID}/trading/replace", new)
    changed = await adapter.modify_order(
        ACCOUNT_ID, ORDER["brokerage_order_id"], OrderChanges(limit_price=Decimal(13))
    )
    _, replace = broker.sent
    check(
        replace,
        "POST",
        f"/accounts/{ACCOUNT_ID}/trading/replace",
        f"{USER_QUERY}&{PARTNER_QUERY}",
        {
            "brokerage_order_id": ORDER["brokerage_order_id"],
            "action": "BUY",
            "order_type": "Limit",
            "time_in_force": "Day",
            "symbol": "VAB.TO",
            "units": 100,
            "price": 13,
        },
    )
    assert (changed.broker_order_id, changed.replaces) == ("new-id-1", ORDER["brokerage_order_id"])
    broker.answers[("POST", f"/accounts/{ACCOUNT_ID}/trading/replace")] = [(200, old, {})]
    same = await adapter.modify_order(
        ACCOUNT_ID, ORDER["brokerage_order_id"], OrderChanges(quantity=Decimal(5))
    )
    assert same.replaces is None  # changed in place: the id stayed


async def test_order_lists(broker: Broker, adapter: SnaptradeAdapter) -> None:
    working = variant(ORDER, brokerage_order_id="w", status="ACCEPTED", filled_quantity="0")
    broker.answer("GET", f"/accounts/{ACCOUNT_ID}/orders", [ORDER, working])
    closed = await adapter.list_orders(ACCOUNT_ID, "closed", 10)
    check(
        only(broker),
        "GET",
        f"/accounts/{ACCOUNT_ID}/orders",
        f"{USER_QUERY}&state=all&days=30&{PARTNER_QUERY}",
    )
    assert [o.broker_order_id for o in closed] == [ORDER["brokerage_order_id"]]
    broker.sent.clear()
    opened = await adapter.list_orders(ACCOUNT_ID, "open", 10)
    assert only(broker).query == f"{USER_QUERY}&state=open&days=30&{PARTNER_QUERY}"
    assert [o.broker_order_id for o in opened] == ["w"]


async def test_order_history_asks_for_enough_days(
    broker: Broker, adapter: SnaptradeAdapter
) -> None:
    broker.answer("GET", f"/accounts/{ACCOUNT_ID}/orders", [ORDER])
    start = datetime(2024, 7, 30, tzinfo=UTC)
    found = await adapter.order_history(ACCOUNT_ID, start, None, "VAB.TO")
    assert "state=all&days=90" in only(broker).query  # capped at SnapTrade's 90 days
    assert [o.broker_order_id for o in found] == [ORDER["brokerage_order_id"]]
    assert await adapter.order_history(ACCOUNT_ID, None, None, "AAPL") == []


async def test_find_by_fingerprint_reads_recent_orders(
    broker: Broker, adapter: SnaptradeAdapter
) -> None:
    record = variant(ORDER, status="ACCEPTED", filled_quantity="0", execution_price=None)
    broker.answer("GET", f"/accounts/{ACCOUNT_ID}/recentOrders", {"orders": [record]})
    placed_at = datetime(2024, 7, 30, 22, 51, 49, tzinfo=UTC)
    fingerprint = OrderFingerprint(
        symbol="VAB.TO",
        side=OrderSide.buy,
        quantity=Decimal(100),
        order_type=OrderType.market,
        time_in_force=TimeInForce.day,
        limit_price=None,
        stop_price=None,
        submitted_at=placed_at,
    )
    found = await adapter.find_order_by_fingerprint(ACCOUNT_ID, fingerprint, frozenset())
    check(
        only(broker),
        "GET",
        f"/accounts/{ACCOUNT_ID}/recentOrders",
        f"{USER_QUERY}&only_executed=false&{PARTNER_QUERY}",
    )
    assert found is not None
    assert found.broker_order_id == ORDER["brokerage_order_id"]
    claimed = frozenset({ORDER["brokerage_order_id"]})
    assert await adapter.find_order_by_fingerprint(ACCOUNT_ID, fingerprint, claimed) is None
    later = dataclasses.replace(fingerprint, submitted_at=placed_at.replace(hour=23))
    assert await adapter.find_order_by_fingerprint(ACCOUNT_ID, later, frozenset()) is None
    with pytest.raises(errors.NotSupported):
        await adapter.find_order_by_client_id(ACCOUNT_ID, "bg-ord-1")


async def test_find_by_fingerprint_falls_back_where_recent_orders_are_off(
    broker: Broker, adapter: SnaptradeAdapter
) -> None:
    broker.answer("GET", f"/accounts/{ACCOUNT_ID}/recentOrders", FEATURE_OFF, status=403)
    broker.answer("GET", f"/accounts/{ACCOUNT_ID}/orders", [ORDER])
    fingerprint = OrderFingerprint(
        "VAB.TO",
        OrderSide.buy,
        Decimal(100),
        OrderType.market,
        TimeInForce.day,
        None,
        None,
        datetime(2024, 7, 30, 22, 51, 50, tzinfo=UTC),
    )
    found = await adapter.find_order_by_fingerprint(ACCOUNT_ID, fingerprint, frozenset())
    assert found is not None
    assert broker.sent[-1].query == f"{USER_QUERY}&state=all&days=1&{PARTNER_QUERY}"


async def test_transactions_page_through_activities(
    broker: Broker, adapter: SnaptradeAdapter
) -> None:
    broker.answer("GET", f"/accounts/{ACCOUNT_ID}/activities", ACTIVITIES)
    start = datetime(2024, 3, 1, tzinfo=UTC)
    end = datetime(2024, 3, 31, 12, tzinfo=UTC)
    found = await adapter.get_transactions(ACCOUNT_ID, start, end, "buy")
    check(
        only(broker),
        "GET",
        f"/accounts/{ACCOUNT_ID}/activities",
        f"{USER_QUERY}&limit=1000&startDate=2024-03-01&endDate=2024-03-31&offset=0&{PARTNER_QUERY}",
    )
    assert [t.type for t in found] == ["buy"]
    assert await adapter.get_transactions(ACCOUNT_ID, None, None, "deposit") == []


async def test_quotes_go_through_the_first_account_ten_at_a_time(
    broker: Broker, adapter: SnaptradeAdapter
) -> None:
    broker.answer("GET", "/accounts", [ACCOUNT])
    broker.answer("GET", f"/accounts/{ACCOUNT_ID}/quotes", QUOTES)
    symbols = ["VAB.TO", *(f"S{i}" for i in range(10))]
    quotes = await adapter.get_quotes(symbols)
    accounts, first, second = broker.sent
    assert accounts.path == "/accounts"
    check(
        first,
        "GET",
        f"/accounts/{ACCOUNT_ID}/quotes",
        f"{USER_QUERY}&symbols={'%2C'.join(symbols[:10])}&use_ticker=true&{PARTNER_QUERY}",
    )
    assert "symbols=S9&use_ticker=true" in second.query
    assert set(quotes) == {"VAB.TO"}


async def test_a_429_carries_the_documented_reset(
    broker: Broker, adapter: SnaptradeAdapter
) -> None:
    broker.answer(
        "GET",
        "/accounts",
        THROTTLED,
        status=429,
        **{"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "40"},
    )
    with pytest.raises(errors.RateLimitExceeded) as caught:
        await adapter.list_accounts()
    assert caught.value.retry_after == 40.0
    assert len(broker.sent) == 1  # longer than the retry policy waits: not retried


async def test_the_legacy_prefix_is_signed_as_sent(broker: Broker, pool: HttpPool) -> None:
    broker.answer("GET", "/api/v1/accounts", [ACCOUNT])
    legacy = SnaptradeAdapter(
        settings(snaptrade_base_url=f"{BASE}/api/v1"),
        Credentials(user_id=USER, user_secret=SECRET),
        pool,
        clock=lambda: NOW,
    )
    await legacy.list_accounts()
    check(only(broker), "GET", "/api/v1/accounts", f"{USER_QUERY}&{PARTNER_QUERY}")
