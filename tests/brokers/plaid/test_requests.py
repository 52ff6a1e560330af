"""Per adapter method: the exact request sent, and the result from Plaid's documented answer.

The Plaid side is an ``httpx.MockTransport`` answering the spec's own examples
(``payloads.py``); the transport is the HTTP pool's injection point, everything of ours runs.
Each test pins the method, path, headers and JSON body Plaid receives.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest_asyncio
from pydantic import SecretStr

from app.brokers.http import HttpPool
from app.brokers.plaid import mapping
from app.brokers.plaid.adapter import PlaidAdapter, PlaidApi
from app.brokers.plaid.auth import credentials_from_exchange
from app.config import Settings
from tests.brokers.plaid import payloads

BASE = "https://sandbox.plaid.com"
CLIENT_ID, SECRET = "5f1e0000a1b2c3d4e5f60000", "plaid-sandbox-secret-0000"
ACCESS = "access-sandbox-de3ce8ef-33f8-452c-a685-8671031fc0f6"
ITEM = "M5eVJqLnv3tbzdngLDp9FL5OlDNxlNhlE55op"
# Plaid 401k in the /accounts/get example (available: null, current: 23631.9805).
K401 = "6PdjjRP6LmugpBy5NgQvUqpRXMWxzktg3rwrk"


@dataclass
class Plaid:
    """Answers each path with the named spec example; records what was sent."""

    answers: dict[str, str]
    sent: list[tuple[str, str, httpx.Headers, dict[str, Any]]] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.sent.append((request.method, request.url.path, request.headers, body))
        name = self.answers.get(request.url.path)
        if name is None:
            return httpx.Response(200, json={"request_id": "r"})
        return httpx.Response(200, content=payloads.example_text(name).encode())

    def bodies(self) -> list[tuple[str, dict[str, Any]]]:
        return [(path, body) for _, path, _, body in self.sent]


ANSWERS = {
    "/accounts/get": "ACCOUNTS_GET",
    "/investments/holdings/get": "HOLDINGS_GET",
    "/investments/transactions/get": "TRANSACTIONS_GET",
    "/link/token/create": "LINK_TOKEN_CREATE",
    "/item/public_token/exchange": "PUBLIC_TOKEN_EXCHANGE",
    "/institutions/get_by_id": "INSTITUTION_GET_BY_ID",
    "/webhook_verification_key/get": "VERIFICATION_KEY_GET",
}


def settings() -> Settings:
    return Settings(
        plaid_env="sandbox",
        plaid_client_id=SecretStr(CLIENT_ID),
        plaid_secret=SecretStr(SECRET),
        plaid_requests_per_minute=6000,
        plaid_burst=200,
    )


@pytest_asyncio.fixture
async def plaid() -> AsyncIterator[tuple[Plaid, HttpPool]]:
    fake = Plaid(dict(ANSWERS))
    pool = HttpPool(transport=httpx.MockTransport(fake.handle))
    try:
        yield fake, pool
    finally:
        await pool.aclose()


def adapter(pool: HttpPool) -> PlaidAdapter:
    return PlaidAdapter(settings(), credentials_from_exchange(ACCESS, ITEM), pool)


def item_body(**extra: Any) -> dict[str, Any]:
    return {"client_id": CLIENT_ID, "secret": SECRET, "access_token": ACCESS, **extra}


async def test_every_request_is_a_json_post_to_the_environment_host(
    plaid: tuple[Plaid, HttpPool],
) -> None:
    fake, pool = plaid
    await adapter(pool).list_accounts()
    [(method, path, headers, body)] = fake.sent
    assert (method, path) == ("POST", "/accounts/get")
    assert headers["Content-Type"] == "application/json"
    assert headers["Plaid-Version"] == "2020-09-14"
    assert "PLAID-SECRET" not in headers
    assert body == item_body()
    assert settings().plaid_url == BASE


async def test_list_accounts(plaid: tuple[Plaid, HttpPool]) -> None:
    _, pool = plaid
    [k401] = await adapter(pool).list_accounts()
    assert (k401.name, k401.number_masked) == ("Plaid 401k", "****6666")
    assert mapping.account_id_of(k401.broker_account_id) == K401


async def test_get_balances_uses_the_cash_holdings_when_available_is_null(
    plaid: tuple[Plaid, HttpPool],
) -> None:
    fake, pool = plaid
    [k401] = await adapter(pool).list_accounts()
    fake.sent.clear()
    balances = await adapter(pool).get_balances(k401.broker_account_id)
    assert [path for path, _ in fake.bodies()] == ["/accounts/get", "/investments/holdings/get"]
    assert [body for _, body in fake.bodies()] == [item_body(), item_body()]
    # The holdings example has no holding in this account: no cash.
    assert (balances.cash, balances.equity) == (Decimal(0), Decimal("23631.9805"))


async def test_get_positions(plaid: tuple[Plaid, HttpPool]) -> None:
    fake, pool = plaid
    ref = "k67E4xKvMlhmleEa4pg9hlwGGNnnEeixPolGm~f0000000000000000"
    positions = await adapter(pool).get_positions(ref)
    assert fake.bodies() == [("/investments/holdings/get", item_body())]
    assert sorted(p.symbol for p in positions) == ["ACHN", "DBLTX", "MIPTX", "NHX105509"]
    assert await adapter(pool).get_position(ref, "MIPTX") is not None


async def test_get_transactions(plaid: tuple[Plaid, HttpPool]) -> None:
    fake, pool = plaid
    ref = "rz99ex9ZQotvnjXdgQLEsR81e3ArPgulVWjGj~f0000000000000000"
    found = await adapter(pool).get_transactions(
        ref, datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 12, 31, 23, tzinfo=UTC), None
    )
    assert fake.bodies() == [
        (
            "/investments/transactions/get",
            item_body(
                start_date="2020-01-01",
                end_date="2020-12-31",
                options={
                    "account_ids": ["rz99ex9ZQotvnjXdgQLEsR81e3ArPgulVWjGj"],
                    "count": 500,
                    "offset": 0,
                },
            ),
        )
    ]
    assert found
    assert all(t.occurred_at.year == 2020 for t in found)
    assert [t.occurred_at for t in found] == sorted((t.occurred_at for t in found), reverse=True)


async def test_link_token_create(plaid: tuple[Plaid, HttpPool]) -> None:
    fake, pool = plaid
    token, expiration = await PlaidApi(settings(), pool).create_link_token("user-1", None)
    assert (token, expiration) == (
        "link-sandbox-af1a0311-da53-4636-b754-dd15cc058176",
        "2020-03-27T12:56:34Z",
    )
    assert fake.bodies() == [
        (
            "/link/token/create",
            {
                "client_id": CLIENT_ID,
                "secret": SECRET,
                "client_name": "Brokerage Gateway",
                "language": "en",
                "country_codes": ["US"],
                "user": {"client_user_id": "user-1"},
                "products": ["investments"],
            },
        )
    ]


async def test_public_token_exchange(plaid: tuple[Plaid, HttpPool]) -> None:
    fake, pool = plaid
    public = "public-sandbox-b0e2c4ee-a763-4df5-bfe9-46a46bce993d"
    exchanged = await PlaidApi(settings(), pool).exchange_public_token(public)
    assert (exchanged.access_token, exchanged.item_id) == (ACCESS, ITEM)
    assert fake.bodies() == [
        (
            "/item/public_token/exchange",
            {"client_id": CLIENT_ID, "secret": SECRET, "public_token": public},
        )
    ]


async def test_institution_name(plaid: tuple[Plaid, HttpPool]) -> None:
    fake, pool = plaid
    assert await PlaidApi(settings(), pool).institution_name("ins_109512") == "Houndstooth Bank"
    assert fake.bodies() == [
        (
            "/institutions/get_by_id",
            {
                "client_id": CLIENT_ID,
                "secret": SECRET,
                "institution_id": "ins_109512",
                "country_codes": ["US"],
            },
        )
    ]


async def test_webhook_verification_key(plaid: tuple[Plaid, HttpPool]) -> None:
    fake, pool = plaid
    kid = "bfbd5111-8e33-4643-8ced-b2e642a72f3c"
    key = await PlaidApi(settings(), pool).webhook_key(kid)
    assert (key["kid"], key["alg"], key["expired_at"]) == (kid, "ES256", None)
    assert fake.bodies() == [
        (
            "/webhook_verification_key/get",
            {"client_id": CLIENT_ID, "secret": SECRET, "key_id": kid},
        )
    ]


async def test_item_remove(plaid: tuple[Plaid, HttpPool]) -> None:
    fake, pool = plaid
    await PlaidApi(settings(), pool).remove_item(ACCESS)
    assert fake.bodies() == [
        ("/item/remove", {"client_id": CLIENT_ID, "secret": SECRET, "access_token": ACCESS})
    ]


def test_the_environment_picks_the_host() -> None:
    assert Settings().plaid_url == "https://production.plaid.com"
    assert Settings(plaid_env="sandbox").plaid_url == "https://sandbox.plaid.com"
    assert Settings(plaid_base_url="http://127.0.0.1:8770").plaid_url == "http://127.0.0.1:8770"


def test_plaid_is_configured_only_with_both_keys() -> None:
    from app.brokers.plaid import plaid_spec

    spec = plaid_spec()
    assert not spec.configured(Settings())
    assert not spec.configured(Settings(plaid_client_id=SecretStr(CLIENT_ID)))
    both = Settings(plaid_client_id=SecretStr(CLIENT_ID), plaid_secret=SecretStr(SECRET))
    assert spec.configured(both)
    assert SECRET not in repr(both)
    assert spec.token_tier == "tier_c"
    assert spec.label == "Linked"
