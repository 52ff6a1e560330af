"""The pre-trade gates of the live order path: paper-first, and the order the gates run in.

Order (ARCHITECTURE.md, "Orders" step 2): connection active and owned; tier allows orders
(vault); kill-switch; paper-first (live only); capabilities. Each test below sets up two
failing gates at once and checks that the earlier one answers, with nothing reaching the
broker.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy import update

from app.config import Settings
from app.db.models import BrokerToken
from tests.conftest import new_user
from tests.harness import running_app, settings_for_tests
from tests.services.support import LiveGateway, assert_problem, live_gateway

# --- the setting ---------------------------------------------------------------------


def test_paper_first_defaults_to_three_cycles_and_zero_turns_it_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BROKERAGE_PAPER_FIRST_CYCLES", raising=False)
    assert Settings().paper_first_cycles == 3
    monkeypatch.setenv("BROKERAGE_PAPER_FIRST_CYCLES", "0")
    assert Settings().paper_first_cycles == 0
    monkeypatch.setenv("BROKERAGE_PAPER_FIRST_CYCLES", "-1")
    with pytest.raises(ValidationError):
        Settings()


# --- paper-first ---------------------------------------------------------------------


async def _refused(gw: LiveGateway, user: str, account: str, completed: int, required: int) -> None:
    before = len(gw.requests)
    problem = assert_problem(await gw.harness.place(user, account), 403, "paper_first_required")
    assert (problem["completed_cycles"], problem["required_cycles"]) == (completed, required)
    assert gw.requests[before:] == []


async def test_live_byob_orders_wait_for_enough_paper_round_trips(db_url: str) -> None:
    async with live_gateway(db_url, paper_first_cycles=2) as gw:
        h, user = gw.harness, new_user()
        _, live = await gw.connect_byob(user)
        await _refused(gw, user, live, completed=0, required=2)  # no paper account at all
        _, paper = await h.paper_account(user)
        await _refused(gw, user, live, completed=0, required=2)
        await gw.round_trip(user, paper)
        await _refused(gw, user, live, completed=1, required=2)  # below
        # A second paper account counts too: cycles are summed over the user's accounts.
        _, second_paper = await h.paper_account(user)
        await gw.round_trip(user, second_paper)
        placed = await h.place(user, live)  # at the threshold
        assert placed.status_code == 201, placed.text
        await gw.round_trip(user, paper)
        assert (await h.place(user, live)).status_code == 201  # above
        # Another user's cycles are theirs.
        other = new_user()
        _, other_live = await gw.connect_byob(other)
        await _refused(gw, other, other_live, completed=0, required=2)


async def test_zero_cycles_switches_the_gate_off(db_url: str) -> None:
    async with live_gateway(db_url, paper_first_cycles=0) as gw:
        user = new_user()
        _, live = await gw.connect_byob(user)
        assert (await gw.harness.place(user, live)).status_code == 201


async def test_round_trips_at_a_broker_sandbox_do_not_count(db_url: str) -> None:
    """The fake Alpaca is what Alpaca's own paper environment would be (its accounts are
    ``PA...``): round trips there are not ours and never graduate a user."""
    async with live_gateway(db_url, paper_first_cycles=1) as gw:
        h, user = gw.harness, new_user()
        _, live = await gw.connect_byob(user)
        _, platform = await gw.connect_platform(user)
        for _ in range(2):
            await gw.round_trip(user, platform)
        sandbox = gw.alpaca.fake.accounts[gw.platform_key.key_id]
        assert sandbox.account_number.startswith("PA")
        assert len([o for o in sandbox.orders.values() if o.status == "filled"]) >= 4
        await _refused(gw, user, live, completed=0, required=1)

        _, paper = await h.paper_account(user)
        await gw.round_trip(user, paper)
        assert (await h.place(user, live)).status_code == 201


async def test_paper_and_platform_orders_are_not_gated(db_url: str) -> None:
    async with live_gateway(db_url, paper_first_cycles=3) as gw:
        h, user = gw.harness, new_user()
        _, platform = await gw.connect_platform(user)
        _, paper = await h.paper_account(user)
        assert (await h.place(user, platform)).status_code == 201
        assert (await h.place(user, paper)).status_code == 201


async def test_changing_a_live_order_is_not_paper_gated(db_url: str) -> None:
    """Paper-first guards new live orders; an order that exists passed it (or was placed
    while the gate was lower) and can still be changed and cancelled."""
    async with live_gateway(db_url, paper_first_cycles=0) as gw:
        h, user = gw.harness, new_user()
        _, live = await gw.connect_byob(user)
        placed = await h.place(
            user, live, order_type="limit", limit_price="1.00", time_in_force="gtc"
        )
        order_id = placed.json()["id"]
        stricter = h.settings.model_copy(update={"paper_first_cycles": 3})
        async with running_app(stricter) as strict:
            refused = await strict.place(user, live)
            assert_problem(refused, 403, "paper_first_required")
            modified = await strict.client.patch(
                f"/v1/orders/{order_id}", json={"limit_price": "1.01"}, headers=strict.auth(user)
            )
            assert modified.status_code == 200, modified.text
            canceled = await strict.client.delete(
                f"/v1/orders/{modified.json()['id']}", headers=strict.auth(user)
            )
            assert canceled.status_code == 200, canceled.text


# --- the order of the gates ------------------------------------------------------------


async def test_ownership_comes_first(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with live_gateway(db_url, paper_first_cycles=3) as gw:
        owner, stranger = new_user(), new_user()
        _, live = await gw.connect_byob(owner)
        monkeypatch.setenv("BYOB_LIVE_DISABLED", "1")
        assert_problem(await gw.harness.place(stranger, live), 404, "not_found")


async def test_an_inactive_connection_is_refused_before_the_kill_switch(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with live_gateway(db_url, paper_first_cycles=3) as gw:
        h, user = gw.harness, new_user()
        connection, live = await gw.connect_byob(user)
        deleted = await h.client.delete(f"/v1/connections/{connection}", headers=h.auth(user))
        assert deleted.status_code == 204
        monkeypatch.setenv("BYOB_LIVE_DISABLED", "1")
        before = len(gw.requests)
        assert_problem(await h.place(user, live), 409, "connection_broken")
        assert gw.requests[before:] == []


async def test_a_read_only_credential_is_refused_before_the_kill_switch(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vault's ``no_order_write`` refusal (gate 2) answers before the switch (gate 3),
    for placing and for changing an order."""
    async with live_gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        connection, live = await gw.connect_byob(user)
        resting = await h.place(
            user, live, order_type="limit", limit_price="1.00", time_in_force="gtc"
        )
        async with h.state.ctx.sessionmaker() as session:
            await session.execute(
                update(BrokerToken)
                .where(BrokerToken.connection_id == connection)
                .values(no_order_write=True)
            )
            await session.commit()
        monkeypatch.setenv("BYOB_LIVE_DISABLED", "1")
        before = len(gw.requests)
        assert_problem(await h.place(user, live), 403, "read_only_account")
        modify = await h.client.patch(
            f"/v1/orders/{resting.json()['id']}",
            json={"limit_price": "1.01"},
            headers=h.auth(user),
        )
        assert_problem(modify, 403, "read_only_account")
        assert gw.requests[before:] == []


async def test_the_kill_switch_answers_before_paper_first(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with live_gateway(db_url, paper_first_cycles=3) as gw:
        user = new_user()
        _, live = await gw.connect_byob(user)
        monkeypatch.setenv("BYOB_BROKER_ALPACA_DISABLED", "1")
        assert_problem(await gw.harness.place(user, live), 503, "live_trading_disabled")


async def test_paper_first_answers_before_capabilities(db_url: str) -> None:
    async with live_gateway(db_url, paper_first_cycles=3) as gw:
        user = new_user()
        _, live = await gw.connect_byob(user)
        crypto = await gw.harness.place(user, live, symbol="BTC/USD")  # Alpaca: unsupported here
        problem = assert_problem(crypto, 403, "paper_first_required")
        assert problem["completed_cycles"] == 0


async def test_capabilities_answer_last(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with live_gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        _, live = await gw.connect_byob(user)
        before = len(gw.requests)
        # Alpaca trades crypto pairs with time in force gtc/ioc only: a day order is refused
        # by the adapter's order terms (after the asset lookup), never sent.
        assert_problem(await h.place(user, live, symbol="BTC/USD"), 422, "unsupported_order")
        assert [r for r in gw.requests[before:] if r[0] != "GET"] == []
        monkeypatch.setenv("BYOB_LIVE_DISABLED", "1")
        assert_problem(await h.place(user, live, symbol="BTC/USD"), 503, "live_trading_disabled")


async def test_modify_checks_the_kill_switch_before_the_order_state(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with live_gateway(db_url) as gw:
        h, user = gw.harness, new_user()
        _, live = await gw.connect_byob(user)
        resting = await h.place(
            user, live, order_type="limit", limit_price="1.00", time_in_force="gtc"
        )
        order_id = resting.json()["id"]
        canceled = await h.client.delete(f"/v1/orders/{order_id}", headers=h.auth(user))
        assert canceled.json()["status"] == "canceled"
        # Without a switch: the order's state answers (capabilities/state, gate 5).
        late = await h.client.patch(
            f"/v1/orders/{order_id}", json={"limit_price": "1.01"}, headers=h.auth(user)
        )
        assert_problem(late, 409, "order_not_modifiable")
        monkeypatch.setenv("BYOB_LIVE_DISABLED", "1")
        late = await h.client.patch(
            f"/v1/orders/{order_id}", json={"limit_price": "1.01"}, headers=h.auth(user)
        )
        assert_problem(late, 503, "live_trading_disabled")


async def test_the_platform_connection_needs_a_configured_platform_key(db_url: str) -> None:
    async with running_app(settings_for_tests(db_url)) as h:
        user = new_user()
        response = await h.client.post(
            "/v1/connections",
            json={"broker": "alpaca", "options": {"ownership": "platform"}},
            headers=h.auth(user),
        )
        assert_problem(response, 422, "unknown_broker")
    async with live_gateway(db_url) as gw:
        user = new_user()
        await gw.connect_platform(user)
        second = await gw.harness.client.post(
            "/v1/connections",
            json={"broker": "alpaca", "options": {"ownership": "platform"}},
            headers=gw.harness.auth(user),
        )
        assert_problem(second, 409, "conflict")
        with_key = await gw.harness.client.post(
            "/v1/connections",
            json={
                "broker": "alpaca",
                "credentials": {"api_key_id": "PK1", "api_secret_key": "s"},
                "options": {"ownership": "platform"},
            },
            headers=gw.harness.auth(new_user()),
        )
        assert_problem(with_key, 422, "validation_error")
