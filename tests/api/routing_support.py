"""Plain helpers for the routing tests: the app beside three broker fakes on real ports.

The app reaches the fake Alpaca, Tradier and tastytrade only through their base-URL
settings, exactly as it would reach the brokers. The registry is the default one plus the
read-only Alpaca link of ``portfolio_support`` (a Tier C path: no Tier C broker exists in the
default registry yet). ``held`` counts the orders each fake holds, straight from the fakes'
books, so a test can assert that at most one broker ever holds a routed order.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.api.portfolio_support import LINKED, registry_with_linked
from tests.brokers.alpaca import support as alpaca_support
from tests.brokers.tastytrade import support as tastytrade_support
from tests.brokers.tradier import support as tradier_support
from tests.harness import Harness, running_app, settings_for_tests

ORDER = {"symbol": "AAPL", "side": "buy", "quantity": "1", "order_type": "market"}
# Order states in which a fake holds nothing (the broker refused the order).
_REFUSED = frozenset({"rejected", "Rejected"})


@dataclass
class Gateway:
    harness: Harness
    alpaca: alpaca_support.Running
    tradier: tradier_support.Running
    tastytrade: tastytrade_support.Running
    stops: dict[str, contextlib.AsyncExitStack] = field(default_factory=dict)

    # --- connecting accounts ------------------------------------------------------------

    async def _connect(self, user: str, body: dict[str, Any]) -> str:
        response = await self.harness.client.post(
            "/v1/connections", json=body, headers=self.harness.auth(user)
        )
        assert response.status_code == 201, response.text
        [account_id] = response.json()["accounts"]
        return str(account_id)

    async def connect_alpaca(self, user: str, cash: str = "100000") -> str:
        key = self.alpaca.fake.add_account(cash=cash)
        credentials = {"api_key_id": key.key_id, "api_secret_key": key.secret}
        return await self._connect(user, {"broker": "alpaca", "credentials": credentials})

    async def connect_linked(self, user: str) -> str:
        """A Tier C (Linked, read-only) account: an Alpaca key linked read-only."""
        key = self.alpaca.fake.add_account()
        credentials = {"api_key_id": key.key_id, "api_secret_key": key.secret}
        return await self._connect(user, {"broker": LINKED, "credentials": credentials})

    async def connect_tradier(self, user: str, cash: str = "100000") -> str:
        fake_user = self.tradier.fake.add_user(cash=cash)
        credentials = {"access_token": fake_user.token}
        return await self._connect(user, {"broker": "tradier", "credentials": credentials})

    async def connect_tastytrade(self, user: str, cash: str = "100000") -> str:
        customer = self.tastytrade.fake.add_customer(cash=cash)
        credentials = {
            "client_secret": customer.client_secret,
            "refresh_token": customer.refresh_token,
        }
        return await self._connect(user, {"broker": "tastytrade", "credentials": credentials})

    async def connect_three(self, user: str, **cash: str) -> dict[str, str]:
        """One account at each broker, connected in the order alpaca, tradier, tastytrade."""
        return {
            "alpaca": await self.connect_alpaca(user, cash.get("alpaca", "100000")),
            "tradier": await self.connect_tradier(user, cash.get("tradier", "100000")),
            "tastytrade": await self.connect_tastytrade(user, cash.get("tastytrade", "100000")),
        }

    # --- the brokers' books -------------------------------------------------------------

    def held(self) -> dict[str, int]:
        """Orders each fake holds (anything it did not refuse), from the fakes' own books."""
        alpaca = sum(
            1
            for account in self.alpaca.fake.accounts.values()
            for order in account.orders.values()
            if order.status not in _REFUSED
        )
        tradier = sum(
            1
            for user in self.tradier.fake.users.values()
            for account in user.accounts
            for order in account.orders.values()
            if order.status not in _REFUSED
        )
        tastytrade = sum(
            1
            for customer in self.tastytrade.fake.customers
            for account in customer.accounts
            for order in account.orders.values()
            if order.status not in _REFUSED
        )
        return {"alpaca": alpaca, "tradier": tradier, "tastytrade": tastytrade}

    def order_posts(self) -> int:
        """Order placements every fake received (refused ones included)."""
        posts = [
            (m, p)
            for fake in (self.alpaca.fake, self.tradier.fake, self.tastytrade.fake)
            for m, p in fake.requests
            if m == "POST" and p.endswith("/orders")
        ]
        return len(posts)

    def broker_requests(self) -> int:
        return sum(
            len(fake.requests)
            for fake in (self.alpaca.fake, self.tradier.fake, self.tastytrade.fake)
        )

    async def stop(self, broker: str) -> None:
        """Stop one fake's server: its port refuses connections from now on."""
        await self.stops[broker].aclose()

    # --- the API --------------------------------------------------------------------------

    async def route(self, user: str, key: str | None = None, **fields: Any) -> httpx.Response:
        body = {**ORDER, "account_id": "auto", **fields}
        return await self.harness.client.post(
            "/v1/orders",
            json=body,
            headers=self.harness.auth(user, **{"Idempotency-Key": key or uuid.uuid4().hex}),
        )

    async def decide(self, user: str, **fields: Any) -> httpx.Response:
        body = {**ORDER, "account_id": "auto", **fields}
        return await self.harness.client.post(
            "/v1/orders/route", json=body, headers=self.harness.auth(user)
        )

    async def set_rules(self, user: str, rules: dict[str, list[str]]) -> httpx.Response:
        body = {"rules": [{"asset_class": c, "accounts": a} for c, a in rules.items()]}
        return await self.harness.client.put(
            "/v1/routing/rules", json=body, headers=self.harness.auth(user)
        )


def attempts_of(body: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(account, outcome, code) of every attempt of a route in a response body."""
    return [(a["account_id"], a["outcome"], a["code"]) for a in body["route"]["attempts"]]


def passed_over(decision: dict[str, Any]) -> dict[str, str]:
    """account id -> reason code of every account a decision passed over."""
    return {p["account_id"]: p["code"] for p in decision["passed_over"]}


@contextlib.asynccontextmanager
async def routing_gateway(db_url: str, **overrides: Any) -> AsyncIterator[Gateway]:
    async with contextlib.AsyncExitStack() as outer:
        stops: dict[str, contextlib.AsyncExitStack] = {}
        running: dict[str, Any] = {}
        for name, module in (
            ("alpaca", alpaca_support),
            ("tradier", tradier_support),
            ("tastytrade", tastytrade_support),
        ):
            stack = contextlib.AsyncExitStack()
            outer.push_async_callback(stack.aclose)
            running[name] = await stack.enter_async_context(module.running_fake())
            stops[name] = stack
        alpaca, tradier, tastytrade = running["alpaca"], running["tradier"], running["tastytrade"]
        values: dict[str, Any] = {
            "alpaca_trading_url": alpaca.url,
            "alpaca_data_url": alpaca.url,
            "tradier_base_url": tradier.url,
            "tastytrade_base_url": tastytrade.url,
            "tastytrade_streamer_url": tastytrade.streamer_url,
            "tastytrade_requests_per_minute": 6000,
            "tastytrade_burst": 200,
            "broker_read_timeout_seconds": 0.5,
            # Long: a connect to a listening local fake only times out on a starved loop.
            "broker_connect_timeout_seconds": 5.0,
            "reconcile_unknown_after_seconds": 0,
        }
        values.update(overrides)
        settings = settings_for_tests(db_url, **values)
        harness = await outer.enter_async_context(
            running_app(settings, registry=registry_with_linked())
        )
        yield Gateway(
            harness=harness, alpaca=alpaca, tradier=tradier, tastytrade=tastytrade, stops=stops
        )
