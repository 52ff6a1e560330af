"""Plain helpers for the portfolio and accounts tests: the app beside a fake Alpaca.

``linked_alpaca_spec`` registers a read-only link to an Alpaca account: the real Alpaca
adapter over real HTTP to the fake, under tier C, so these tests can put Linked and Live
accounts of one fake side by side. Everything the tier decides (the label, ``no_order_write``
in the vault, ``can_trade``) comes from our own code, as it does for Plaid (whose own
end-to-end tests are in tests/brokers/plaid/).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from app.brokers.alpaca import alpaca_spec
from app.brokers.base import Tier
from app.brokers.registry import BrokerRegistry, BrokerSpec, default_registry
from tests.brokers.alpaca.support import Running, running_fake
from tests.fakes.alpaca.server import FakeAccount
from tests.harness import Harness, running_app, settings_for_tests

LINKED = "alpaca_linked"


def linked_alpaca_spec() -> BrokerSpec:
    live = alpaca_spec()
    return dataclasses.replace(
        live,
        slug=LINKED,
        name="Alpaca (read-only)",
        tier=Tier.C,
        capabilities=dataclasses.replace(live.capabilities, place_orders=False),
    )


def registry_with_linked() -> BrokerRegistry:
    registry = default_registry()
    registry.register(linked_alpaca_spec())
    return registry


@dataclass
class Gateway:
    harness: Harness
    alpaca: Running

    async def connect(self, user: str, account: FakeAccount, broker: str = "alpaca") -> str:
        """Connect one fake Alpaca account; returns the gateway's account id."""
        response = await self.harness.client.post(
            "/v1/connections",
            json={
                "broker": broker,
                "credentials": {"api_key_id": account.key_id, "api_secret_key": account.secret},
            },
            headers=self.harness.auth(user),
        )
        assert response.status_code == 201, response.text
        [account_id] = response.json()["accounts"]
        return str(account_id)

    async def portfolio(self, user: str) -> dict[str, Any]:
        response = await self.harness.client.get("/v1/portfolio", headers=self.harness.auth(user))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@contextlib.asynccontextmanager
async def gateway(db_url: str, **overrides: Any) -> AsyncIterator[Gateway]:
    """A fake Alpaca on a real port and the app pointed at it (registry: default + linked)."""
    async with running_fake() as alpaca:
        values: dict[str, Any] = {
            "alpaca_trading_url": alpaca.url,
            "alpaca_data_url": alpaca.url,
            "broker_read_timeout_seconds": 0.5,
        }
        values.update(overrides)
        settings = settings_for_tests(db_url, **values)
        async with running_app(settings, registry=registry_with_linked()) as harness:
            yield Gateway(harness=harness, alpaca=alpaca)
