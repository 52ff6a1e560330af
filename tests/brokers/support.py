"""Scaffolding the broker test packages share (plain functions, no fixtures).

- order requests (``limit_buy``, ``market``) the adapter tests send to a fake;
- ``TrackedAdapters``: adapters a test made against a running fake, closed with it;
- ``fake_settings`` / ``gateway_app`` / ``connect_broker``: the adapter's settings for a
  fake, and the whole gateway app reaching a fake exactly as it would reach the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, TypeVar

import httpx

from app.brokers.base import OrderRequest, OrderSide, OrderType, TimeInForce
from app.config import Settings
from tests.harness import Harness, running_app, settings_for_tests

# --- order requests -------------------------------------------------------------------------


def limit_buy(
    client_order_id: str,
    qty: str = "2",
    price: str = "100",
    *,
    symbol: str = "AAPL",
    time_in_force: TimeInForce = TimeInForce.gtc,
) -> OrderRequest:
    """A resting buy limit (far enough from the fakes' markets not to fill by itself)."""
    return OrderRequest(
        client_order_id=client_order_id,
        symbol=symbol,
        side=OrderSide.buy,
        quantity=Decimal(qty),
        order_type=OrderType.limit,
        time_in_force=time_in_force,
        limit_price=Decimal(price),
    )


def market(
    client_order_id: str,
    side: OrderSide = OrderSide.buy,
    qty: str = "2",
    *,
    symbol: str = "AAPL",
    time_in_force: TimeInForce = TimeInForce.day,
) -> OrderRequest:
    return OrderRequest(
        client_order_id=client_order_id,
        symbol=symbol,
        side=side,
        quantity=Decimal(qty),
        order_type=OrderType.market,
        time_in_force=time_in_force,
    )


# --- adapters against a running fake -----------------------------------------------------


class Closable(Protocol):
    async def close(self) -> None: ...


A = TypeVar("A", bound=Closable)


@dataclass
class TrackedAdapters:
    """Base of each package's ``Running``: adapters made in a test are closed when the fake
    stops (a test adapter owns its HTTP pool)."""

    adapters: list[Any] = field(default_factory=list, kw_only=True)

    def track(self, adapter: A) -> A:
        self.adapters.append(adapter)
        return adapter

    async def close_adapters(self) -> None:
        for adapter in self.adapters:
            await adapter.close()


def fake_settings(**values: Any) -> Settings:
    """Adapter settings for a fake on a local port: a short read timeout (a fault the
    test injects shows quickly), ``values`` on top. The connect timeout stays long: a
    connect to a listening local socket never legitimately takes long, so a short one only
    fires when a loaded machine starves the event loop."""
    return Settings(
        **{"broker_read_timeout_seconds": 0.5, "broker_connect_timeout_seconds": 5.0, **values}
    )


# --- the gateway against a fake -------------------------------------------------------------


@contextlib.asynccontextmanager
async def gateway_app(db_url: str, **overrides: Any) -> AsyncIterator[Harness]:
    """The whole app on ``db_url``, reaching the fake through ``overrides`` (its base URL
    settings), with short broker timeouts and immediate reconciliation of unknown orders."""
    settings = settings_for_tests(
        db_url,
        **{"broker_read_timeout_seconds": 0.5, "reconcile_unknown_after_seconds": 0, **overrides},
    )
    async with running_app(settings) as harness:
        yield harness


async def connect_broker(
    harness: Harness, user: str, broker: str, credentials: dict[str, str]
) -> dict[str, Any]:
    """``POST /v1/connections`` that must succeed (201); the new connection."""
    response = await harness.client.post(
        "/v1/connections",
        json={"broker": broker, "credentials": credentials},
        headers=harness.auth(user),
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def order_reaching(
    harness: Harness, user: str, order_id: str, status: str, *, attempts: int = 300
) -> httpx.Response:
    """``GET /v1/orders/{id}`` until the order shows ``status``: the update arrives from a
    broker stream in the background. Fails the test if it never does."""
    seen = None
    for _ in range(attempts):
        got = await harness.client.get(f"/v1/orders/{order_id}", headers=harness.auth(user))
        seen = got.json()["status"]
        if seen == status:
            return got
        await asyncio.sleep(0.02)
    raise AssertionError(f"order {order_id} is {seen}, never {status}")
