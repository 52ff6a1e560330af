"""Tradier expirations as order events, end to end against the fake Tradier over HTTP.

Tradier's history reports an expiry as ``{"type": "option", "option": {"option_type":
"OPTEXP", "description": "Expired", "quantity": -1.0}}`` with a date and nothing else: no
contract, no id. The sweep makes it an order only when it can be known which contract it
was: the one contract the account is known to have held expiring that day, on the side the
quantity's sign says and with a size it held. Otherwise it stays a transaction."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from app.brokers.base import OptionContract, OptionRight
from app.db.models import Order
from app.services.lifecycle import LifecycleSweep, _net_filled, lifecycle_brokers
from app.services.reconciliation import Reconciler
from tests.brokers.tradier.test_api import Gateway
from tests.brokers.tradier.test_api import gateway as tradier_gateway
from tests.conftest import new_user
from tests.fakes.tradier.server import FakeAccount, FakePosition
from tests.harness import Harness

D = Decimal
LOGGER = "app.services.lifecycle"


@dataclass
class Case:
    gw: Gateway
    user: str
    account: str

    @property
    def h(self) -> Harness:
        return self.gw.harness

    @property
    def fake_account(self) -> FakeAccount:
        return self.gw.tradier.account

    def contract(
        self, right: OptionRight = OptionRight.put, strike: int = 0, week: int = 0
    ) -> OptionContract:
        fake = self.gw.tradier.fake
        today = datetime.now(UTC).date()
        expiration = fake.options.expirations("AAPL", today)[week].expiration
        strikes = fake.options.strikes("AAPL")
        return OptionContract(
            "AAPL", "AAPL", expiration, right, strikes[len(strikes) // 2 + strike]
        )

    def hold(self, contract: OptionContract, qty: int) -> None:
        self.fake_account.positions[contract.symbol] = FakePosition(
            id=len(self.fake_account.positions) + 1, quantity=D(qty), cost_basis=D(qty) * D(120)
        )

    def expire(self, contract: OptionContract) -> dict[str, Any]:
        event: dict[str, Any] = self.gw.tradier.fake.expire_option(
            self.fake_account, contract.symbol
        )
        return event

    async def events(self) -> list[dict[str, Any]]:
        response = await self.h.client.get(
            "/v1/events", params={"limit": 500}, headers=self.h.auth(self.user)
        )
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def expirations_listed(self) -> list[dict[str, Any]]:
        response = await self.h.client.get(
            f"/v1/accounts/{self.account}/transactions", headers=self.h.auth(self.user)
        )
        assert response.status_code == 200, response.text
        return [t for t in response.json()["items"] if t["type"] == "option_expiration"]

    def later(self, now: datetime, steps: int = 1) -> datetime:
        interval = self.h.settings.option_lifecycle_interval("tradier")
        return now + steps * (interval + timedelta(seconds=1))


@asynccontextmanager
async def tradier_case(db_url: str) -> AsyncIterator[Case]:
    async with tradier_gateway(db_url) as gw:
        # Each fake numbers its accounts from VA00000001, and the module's tests share one
        # database: an account number shared by two connections is not adopted into
        # (OrderUpdateIngest), so each case has its own.
        gw.tradier.account.number = f"VA{uuid.uuid4().int % 10**8:08d}"
        user = new_user()
        [account] = (await gw.connect(user))["accounts"]
        yield Case(gw, user, account)


def _past_the_open_poll(h: Harness) -> datetime:
    """When the reconciler first looks up a new open order at a streaming broker (here it
    stands in for the Tradier stream the tests do not run)."""
    interval = timedelta(seconds=h.state.ctx.settings.reconcile_open_streamed_seconds)
    return datetime.now(UTC) + interval + timedelta(seconds=1)


def _logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


@pytest.mark.parametrize(("held", "side"), [(2, "sell"), (-3, "buy")])
async def test_an_expiry_of_the_one_contract_held_that_day_reaches_the_stream_once(
    db_url: str, held: int, side: str
) -> None:
    async with tradier_case(db_url) as c:
        h = c.h
        assert "tradier" in lifecycle_brokers(h.state.ctx)
        option = c.contract()
        c.hold(option, held)
        c.hold(c.contract(week=1), 1)  # another expiration day: not a candidate
        sweep = LifecycleSweep(h.state.ctx)
        now = datetime.now(UTC)
        assert await sweep.run_once(now) == 0  # sees the positions; nothing expired yet
        baseline = len(await c.events())

        wire = c.expire(option)
        assert wire["option"]["quantity"] == -held  # the position's change
        [listed] = await c.expirations_listed()
        assert (listed["symbol"], listed["quantity"], listed["description"]) == (
            None,
            str(-held),
            "Expired",
        )
        assert listed["occurred_at"].startswith(option.expiration.isoformat())
        assert await sweep.run_once(c.later(now)) == 1
        new = (await c.events())[baseline:]
        assert [e["type"] for e in new] == ["order.filled"]
        order = new[0]["order"]
        assert new[0]["account_id"] == c.account
        assert (order["symbol"], order["side"], order["quantity"], order["filled_quantity"]) == (
            option.symbol,
            side,
            str(abs(held)),
            str(abs(held)),
        )
        assert order["position_effect"] == "close"
        assert order["client_order_id"].startswith("option_expiration:")
        number = c.fake_account.number
        assert order["broker_order_id"] == (
            f"tx:optexp:{number}:{option.expiration:%Y-%m-%d}:{option.symbol}"
        )

        # Read again by this sweep, by another instance's (which never saw the position),
        # and after more history rows moved the row's place in the answer: one order.
        c.fake_account.history.append(
            {
                "amount": D("-1.50"),
                "date": f"{option.expiration:%Y-%m-%d}T00:00:00Z",
                "type": "fee",
                "fee": {"description": "FEE", "quantity": D(0)},
            }
        )
        assert await sweep.run_once(c.later(now, 2)) == 0
        assert await LifecycleSweep(h.state.ctx).run_once(c.later(now, 3)) == 0
        assert len(await c.events()) == baseline + 1
        orders = await h.client.get(f"/v1/accounts/{c.account}/orders", headers=h.auth(c.user))
        assert orders.status_code == 200, orders.text
        assert [(o["client_order_id"], o["status"]) for o in orders.json()["items"]] == [
            (order["client_order_id"], "filled")
        ]
        assert len(await c.expirations_listed()) == 1  # still listed, as a transaction


async def test_the_last_portfolio_read_tells_another_instance_the_contract(db_url: str) -> None:
    async with tradier_case(db_url) as c:
        h = c.h
        option = c.contract(OptionRight.call)
        c.hold(option, -1)
        portfolio = await h.client.get("/v1/portfolio", headers=h.auth(c.user))
        assert portfolio.status_code == 200, portfolio.text
        c.expire(option)
        baseline = len(await c.events())
        assert await LifecycleSweep(h.state.ctx).run_once(datetime.now(UTC)) == 1
        [event] = (await c.events())[baseline:]
        assert (event["order"]["symbol"], event["order"]["side"]) == (option.symbol, "buy")


async def test_the_gateways_own_filled_order_tells_the_contract(db_url: str) -> None:
    """Bought through the gateway and filled: a process that never read the position, with
    no portfolio read, finds the contract in the account's filled orders."""
    async with tradier_case(db_url) as c:
        h = c.h
        option = c.contract(OptionRight.call, strike=1)
        placed = await h.place(
            c.user,
            c.account,
            symbol=option.symbol,
            quantity="2",
            time_in_force="day",
            position_effect="open",
        )
        assert placed.status_code == 201, placed.text
        await c.gw.tradier.fake.match()
        assert await Reconciler(h.state.ctx).run_once(_past_the_open_poll(h)) >= 1
        got = await h.client.get(f"/v1/orders/{placed.json()['id']}", headers=h.auth(c.user))
        assert got.json()["status"] == "filled", got.text
        c.expire(option)
        baseline = len(await c.events())
        assert await LifecycleSweep(h.state.ctx).run_once(datetime.now(UTC)) == 1
        [event] = (await c.events())[baseline:]
        assert (event["order"]["symbol"], event["order"]["side"], event["order"]["quantity"]) == (
            option.symbol,
            "sell",
            "2",
        )


async def test_a_leg_of_the_gateways_own_calendar_spread_tells_the_contract(db_url: str) -> None:
    """A calendar spread placed through the gateway (one order, its legs expiring a week
    apart) and filled: when the near leg expires, its contract is found in the order's legs."""
    async with tradier_case(db_url) as c:
        h = c.h
        near, far = (
            c.contract(OptionRight.call, strike=2),
            c.contract(OptionRight.call, strike=2, week=1),
        )
        placed = await h.client.post(
            f"/v1/accounts/{c.account}/orders",
            json={
                "legs": [
                    {"symbol": near.symbol, "side": "sell", "ratio": 1, "position_effect": "open"},
                    {"symbol": far.symbol, "side": "buy", "ratio": 1, "position_effect": "open"},
                ],
                "quantity": "1",
                "order_type": "market",
                "time_in_force": "day",
            },
            headers=h.auth(c.user, **{"Idempotency-Key": f"calendar-{uuid.uuid4().hex}"}),
        )
        assert placed.status_code == 201, placed.text
        await c.gw.tradier.fake.match()
        assert await Reconciler(h.state.ctx).run_once(_past_the_open_poll(h)) >= 1
        got = await h.client.get(f"/v1/orders/{placed.json()['id']}", headers=h.auth(c.user))
        assert got.json()["status"] == "filled", got.text
        assert got.json()["symbol"] == "AAPL"  # the order's row names the underlying only
        assert c.expire(near)["option"]["quantity"] == 1  # a short removed
        baseline = len(await c.events())
        assert await LifecycleSweep(h.state.ctx).run_once(datetime.now(UTC)) == 1
        [event] = (await c.events())[baseline:]
        assert (event["order"]["symbol"], event["order"]["side"], event["order"]["quantity"]) == (
            near.symbol,
            "buy",
            "1",
        )


async def test_no_contract_known_held_that_day_is_refused(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with tradier_case(db_url) as c:
        option = c.contract()
        c.hold(option, 1)
        c.expire(option)  # gone before anything of the gateway saw it
        baseline = len(await c.events())
        assert await LifecycleSweep(c.h.state.ctx).run_once(datetime.now(UTC)) == 0
        assert len(await c.events()) == baseline
        assert len(await c.expirations_listed()) == 1
        assert any("none known held expiring that day" in m for m in _logged(caplog))


async def test_several_contracts_held_expiring_that_day_are_refused(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with tradier_case(db_url) as c:
        put, call = c.contract(), c.contract(OptionRight.call)
        c.hold(put, 1)
        c.hold(call, 2)
        sweep = LifecycleSweep(c.h.state.ctx)
        now = datetime.now(UTC)
        assert await sweep.run_once(now) == 0
        c.expire(put)  # one row; the call was closed some other way (or its row is late)
        c.fake_account.positions.pop(call.symbol)
        baseline = len(await c.events())
        assert await sweep.run_once(c.later(now)) == 0
        assert len(await c.events()) == baseline
        assert len(await c.expirations_listed()) == 1
        assert any("several known held expiring that day" in m for m in _logged(caplog))


async def test_a_quantity_or_sign_that_disagrees_is_refused(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with tradier_case(db_url) as c:
        sized, signed = c.contract(), c.contract(week=1)
        c.hold(sized, 3)
        c.hold(signed, 1)
        sweep = LifecycleSweep(c.h.state.ctx)
        now = datetime.now(UTC)
        assert await sweep.run_once(now) == 0
        c.hold(sized, 1)  # two sold outside the gateway, unseen before the expiry
        assert c.expire(sized)["option"]["quantity"] == -1
        # A long held, a row saying a short was removed.
        row = c.expire(signed)
        row["option"]["quantity"] = D(1)
        baseline = len(await c.events())
        assert await sweep.run_once(c.later(now)) == 0
        assert len(await c.events()) == baseline
        assert len(await c.expirations_listed()) == 2
        logged = _logged(caplog)
        assert sum("quantity disagrees with the contract held" in m for m in logged) == 2


async def test_two_expiration_rows_on_one_day_or_both_sides_held_are_refused(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with tradier_case(db_url) as c:
        option, flipped = c.contract(), c.contract(week=1)
        c.hold(option, 1)
        c.hold(flipped, 1)
        sweep = LifecycleSweep(c.h.state.ctx)
        now = datetime.now(UTC)
        assert await sweep.run_once(now) == 0
        c.hold(flipped, -1)  # closed and sold short within the lookback
        assert await sweep.run_once(c.later(now)) == 0
        row = c.expire(option)
        c.fake_account.history.append(dict(row))  # a second row that day: which contract?
        c.expire(flipped)
        baseline = len(await c.events())
        assert await sweep.run_once(c.later(now, 2)) == 0
        assert len(await c.events()) == baseline
        assert len(await c.expirations_listed()) == 3
        logged = _logged(caplog)
        assert any("several expiration rows on one day" in m for m in logged)
        assert any("held both long and short" in m for m in logged)


def test_the_orders_made_of_lifecycle_events_are_not_counted_as_the_accounts_trades() -> None:
    """A short of 2 opened through the gateway, one assigned (its order made by the sweep):
    the gateway's own orders still say short 2, not "short 2, bought 1" (a later event of
    the contract is judged on what the account traded, never on what the sweep made)."""
    symbol = "AAPL261218P00150000"

    def order(client_order_id: str, side: str, filled: str) -> Order:
        return Order(
            client_order_id=client_order_id, symbol=symbol, side=side, legs=None,
            filled_quantity=D(filled),
        )  # fmt: skip

    opened = order("c-open", "sell", "2")
    assigned = order("option_assignment:abc", "buy", "1")
    assert _net_filled([opened, assigned]) == {symbol: D(-2)}
    assert _net_filled([opened, order("c-close", "buy", "1")]) == {symbol: D(-1)}
