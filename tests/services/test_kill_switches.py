"""Kill-switches: read from the environment at request time, BYOB live submissions only.

The matrix crosses the global switch (off/on) with the per-broker switch (off, on for the
connection's broker, on for another broker) for each ownership (byob, platform, paper) and
each action (place, modify, cancel, read). A refused submission must not reach the broker:
the fake Alpaca's request log proves it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio

from app.services.kill_switches import KillSwitches, broker_variable
from tests.conftest import new_user
from tests.services.support import LiveGateway, assert_problem, live_gateway


@dataclass
class World:
    gw: LiveGateway
    user: str
    accounts: dict[str, str]  # ownership -> account id


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def module_db_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest_asyncio.fixture(scope="module")
async def world(module_db_url: str) -> AsyncIterator[World]:
    async with live_gateway(module_db_url) as gw:
        user = new_user("switch")
        _, byob = await gw.connect_byob(user)
        _, platform = await gw.connect_platform(user)
        _, paper = await gw.harness.paper_account(user)
        yield World(gw, user, {"byob": byob, "platform": platform, "paper": paper})


async def _resting_order(world: World, account_id: str) -> dict[str, Any]:
    placed = await world.gw.harness.place(
        world.user, account_id, order_type="limit", limit_price="1.00", time_in_force="gtc"
    )
    assert placed.status_code == 201, placed.text
    order: dict[str, Any] = placed.json()
    assert order["status"] == "accepted"
    return order


async def _act(world: World, action: str, account_id: str, order_id: str | None) -> httpx.Response:
    h, user = world.gw.harness, world.user
    if action == "place":
        return await h.place(user, account_id)
    if action == "modify":
        return await h.client.patch(
            f"/v1/orders/{order_id}", json={"limit_price": "1.01"}, headers=h.auth(user)
        )
    if action == "cancel":
        return await h.client.delete(f"/v1/orders/{order_id}", headers=h.auth(user))
    balances = await h.client.get(f"/v1/accounts/{account_id}/balances", headers=h.auth(user))
    assert balances.status_code == 200, balances.text
    positions = await h.client.get(f"/v1/accounts/{account_id}/positions", headers=h.auth(user))
    assert positions.status_code == 200, positions.text
    return await h.client.get(f"/v1/accounts/{account_id}/orders", headers=h.auth(user))


SUCCESS = {"place": 201, "modify": 200, "cancel": 200, "read": 200}


@pytest.mark.parametrize("action", ["place", "modify", "cancel", "read"])
@pytest.mark.parametrize("ownership", ["byob", "platform", "paper"])
@pytest.mark.parametrize("broker_switch", [None, "alpaca", "tradier"])
@pytest.mark.parametrize("live_switch", [False, True])
async def test_kill_switch_matrix(
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    live_switch: bool,
    broker_switch: str | None,
    ownership: str,
    action: str,
) -> None:
    account_id = world.accounts[ownership]
    order = await _resting_order(world, account_id) if action in ("modify", "cancel") else None
    if live_switch:
        monkeypatch.setenv("BYOB_LIVE_DISABLED", "1")
    if broker_switch is not None:
        monkeypatch.setenv(broker_variable(broker_switch), "1")
    refused = (
        ownership == "byob"
        and action in ("place", "modify")
        and (live_switch or broker_switch == "alpaca")
    )
    before = len(world.gw.requests)

    response = await _act(world, action, account_id, order["id"] if order else None)

    if refused:
        problem = assert_problem(response, 503, "live_trading_disabled")
        assert problem["retryable"] is False
        assert world.gw.requests[before:] == []  # nothing reached the broker
        if order is not None:
            h = world.gw.harness
            got = await h.client.get(f"/v1/orders/{order['id']}", headers=h.auth(world.user))
            assert got.json()["status"] == "accepted"  # untouched
    else:
        assert response.status_code == SUCCESS[action], response.text
        reached = world.gw.requests[before:]
        assert bool(reached) is (ownership != "paper")
        if action == "cancel":
            assert response.json()["status"] in ("pending_cancel", "canceled")


async def test_a_switch_takes_effect_on_the_next_request_without_a_restart(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    h, user, account = world.gw.harness, world.user, world.accounts["byob"]
    assert (await h.place(user, account)).status_code == 201
    monkeypatch.setenv("BYOB_BROKER_ALPACA_DISABLED", "1")
    assert_problem(await h.place(user, account), 503, "live_trading_disabled")
    monkeypatch.setenv("BYOB_BROKER_ALPACA_DISABLED", "0")
    assert (await h.place(user, account)).status_code == 201
    monkeypatch.setenv("BYOB_LIVE_DISABLED", "true")
    assert_problem(await h.place(user, account), 503, "live_trading_disabled")
    monkeypatch.delenv("BYOB_LIVE_DISABLED")
    assert (await h.place(user, account)).status_code == 201


async def test_a_paper_broker_switch_never_stops_paper(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BYOB_LIVE_DISABLED", "1")
    monkeypatch.setenv("BYOB_BROKER_PAPER_DISABLED", "1")
    h = world.gw.harness
    assert (await h.place(world.user, world.accounts["paper"])).status_code == 201
    listed = await h.client.get("/v1/brokers", headers=h.auth(world.user))
    assert "paper" in {b["slug"] for b in listed.json()["items"]}


@pytest.mark.parametrize(
    "variable", ["BYOB_LIVE_DISABLED", "BYOB_BROKER_ALPACA_DISABLED", "BYOB_BROKER_alpaca_DISABLED"]
)
async def test_a_switched_off_broker_is_hidden_and_refuses_new_connections(
    world: World, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    gw, h = world.gw, world.gw.harness
    user = new_user()
    listed = await h.client.get("/v1/brokers", headers=h.auth(user))
    assert {"alpaca", "paper"} <= {b["slug"] for b in listed.json()["items"]}

    monkeypatch.setenv(variable, "1")
    listed = await h.client.get("/v1/brokers", headers=h.auth(user))
    slugs = {b["slug"] for b in listed.json()["items"]}
    assert "paper" in slugs
    assert "alpaca" not in slugs  # hidden, not greyed (a lower-case name counts too)

    before = len(gw.requests)
    refused = await h.client.post(
        "/v1/connections",
        json={
            "broker": "alpaca",
            "credentials": {"api_key_id": gw.byob_key.key_id, "api_secret_key": gw.byob_key.secret},
        },
        headers=h.auth(user),
    )
    assert_problem(refused, 503, "live_trading_disabled")
    assert gw.requests[before:] == []  # the key was not even checked at the broker
    assert (await h.client.get("/v1/connections", headers=h.auth(user))).json()["items"] == []

    # The platform's default account is not BYOB: still connectable, still trading.
    _, platform_account = await gw.connect_platform(user)
    assert (await h.place(user, platform_account)).status_code == 201
    # Paper too.
    _, paper_account = await h.paper_account(user)
    assert (await h.place(user, paper_account)).status_code == 201


async def test_admin_kill_switches_show_what_is_in_force(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = world.gw.harness
    admin = {"Authorization": f"Bearer {h.token(new_user('ops'), admin=True)}"}
    for name in [n for n in os.environ if n.upper().startswith("BYOB_")]:
        monkeypatch.delenv(name)

    calm = (await h.client.get("/v1/admin/kill-switches", headers=admin)).json()
    assert calm["byob_live_disabled"] is False
    assert (calm["blocked_brokers"], calm["hidden_brokers"], calm["switches"]) == ([], [], [])

    monkeypatch.setenv("BYOB_BROKER_ALPACA_DISABLED", "1")
    monkeypatch.setenv("BYOB_BROKER_NOSUCHBROKER_DISABLED", "yes")  # not a registered broker
    monkeypatch.setenv("BYOB_BROKER_WEBULL_DISABLED", "0")
    one = (await h.client.get("/v1/admin/kill-switches", headers=admin)).json()
    assert one["byob_live_disabled"] is False
    assert one["blocked_brokers"] == ["alpaca"]
    assert one["hidden_brokers"] == ["alpaca"]
    assert one["switches"] == [
        {
            "variable": "BYOB_BROKER_ALPACA_DISABLED",
            "value": "1",
            "scope": "broker",
            "broker": "alpaca",
        },
        {
            "variable": "BYOB_BROKER_NOSUCHBROKER_DISABLED",
            "value": "yes",
            "scope": "broker",
            "broker": "nosuchbroker",
        },
    ]

    monkeypatch.setenv("BYOB_LIVE_DISABLED", "1")
    monkeypatch.delenv("BYOB_BROKER_ALPACA_DISABLED")
    both = (await h.client.get("/v1/admin/kill-switches", headers=admin)).json()
    assert both["byob_live_disabled"] is True
    live = sorted(s.slug for s in h.state.ctx.registry.all() if s.tier.value in ("A", "B"))
    assert "alpaca" in live
    assert both["blocked_brokers"] == live
    assert both["switches"][0]["scope"] == "all_byob"

    plain = await h.client.get("/v1/admin/kill-switches", headers=h.auth(world.user))
    assert_problem(plain, 403, "forbidden")
    assert (await h.client.get("/v1/admin/kill-switches")).status_code == 401


# --- the switch parser, on plain mappings ----------------------------------------------


@pytest.mark.parametrize(
    ("value", "on"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        (" on ", True),
        ("enabled?", True),  # unrecognised: fails closed
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
        ("", False),
    ],
)
def test_switch_values(value: str, on: bool) -> None:
    switches = KillSwitches.from_environ({"BYOB_LIVE_DISABLED": value})
    assert switches.live_disabled is on
    assert switches.blocks_live_orders(slug="alpaca", ownership="byob", tier="A") is on
    per_broker = KillSwitches.from_environ({"BYOB_BROKER_SCHWAB_DISABLED": value})
    assert per_broker.blocks_live_orders(slug="schwab", ownership="byob", tier="B") is on


def test_switches_cover_byob_tier_a_and_b_only() -> None:
    switches = KillSwitches.from_environ({"BYOB_LIVE_DISABLED": "1"})
    assert switches.blocks_live_orders(slug="tradier", ownership="byob", tier="A")
    assert switches.blocks_live_orders(slug="snaptrade", ownership="byob", tier="B")
    assert not switches.blocks_live_orders(slug="alpaca", ownership="platform", tier="A")
    assert not switches.blocks_live_orders(slug="paper", ownership="paper", tier="paper")
    assert not switches.blocks_live_orders(slug="plaid", ownership="byob", tier="C")
    # Hidden: live paths; Tier C imports and paper stay offered under the global switch.
    assert switches.hides_broker(slug="tradier", tier="A")
    assert not switches.hides_broker(slug="plaid", tier="C")
    assert not switches.hides_broker(slug="paper", tier="paper")
    # A per-broker switch hides its broker whatever the tier, and only that broker.
    plaid_off = KillSwitches.from_environ({"BYOB_BROKER_PLAID_DISABLED": "1"})
    assert plaid_off.hides_broker(slug="plaid", tier="C")
    assert not plaid_off.hides_broker(slug="tradier", tier="A")


def test_slug_variables() -> None:
    assert broker_variable("alpaca") == "BYOB_BROKER_ALPACA_DISABLED"
    assert broker_variable("interactive-brokers") == "BYOB_BROKER_INTERACTIVE_BROKERS_DISABLED"
    switches = KillSwitches.from_environ({"BYOB_BROKER_INTERACTIVE_BROKERS_DISABLED": "1"})
    assert switches.broker_disabled("interactive-brokers")
    assert not switches.broker_disabled("alpaca")
    assert KillSwitches.from_environ({}).switches == ()
