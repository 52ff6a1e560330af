"""Failover that never doubles an order: every fault switch of the three fakes.

Each test gives one user an account at the fake Alpaca, Tradier and tastytrade, a routing
rule (Tradier first, then Alpaca, then tastytrade), arms a fault at the first broker and
places one order through ``POST /v1/orders``. The fakes' own books then say where the order
is: at most one broker ever holds it. A definitive refusal (rejection, 429, refused
connection, kill-switch, capability) moves on to the next account; an unknown outcome
(5xx on submit, timeout after the broker accepted) stops the route for reconciliation.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text, update

from app.db.models import AuditEntry, IdempotencyKey, Order, RouteAttempt
from app.db.repositories.audit import user_chain
from app.services.clock import utcnow
from app.services.reconciliation import Reconciler
from tests.api.routing_support import Gateway, attempts_of, passed_over, routing_gateway
from tests.conftest import new_user
from tests.services.support import until_lock_waiters


async def _three(gw: Gateway, user: str, **cash: str) -> dict[str, str]:
    accounts = await gw.connect_three(user, **cash)
    rules = await gw.set_rules(
        user, {"equity": [accounts["tradier"], accounts["alpaca"], accounts["tastytrade"]]}
    )
    assert rules.status_code == 200, rules.text
    return accounts


def _only(held: dict[str, int], broker: str | None) -> None:
    """The order is held by ``broker`` alone (or by no broker at all)."""
    expected = dict.fromkeys(held, 0)
    if broker is not None:
        expected[broker] = 1
    assert held == expected


async def _route(gw: Gateway, user: str, route_id: str) -> dict[str, Any]:
    response = await gw.harness.client.get(f"/v1/routes/{route_id}", headers=gw.harness.auth(user))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_rejection_fails_over_to_the_next_account(db_url: str) -> None:
    async with routing_gateway(db_url) as gw:
        user = new_user()
        accounts = await _three(gw, user, tradier="10")  # Tradier: insufficient funds
        response = await gw.route(user)
        assert response.status_code == 201, response.text
        body = response.json()
        assert attempts_of(body) == [
            (accounts["tradier"], "rejected", "insufficient_funds"),
            (accounts["alpaca"], "accepted", None),
        ]
        route = body["route"]
        assert (route["status"], route["account_id"], route["failed_over"]) == (
            "placed",
            accounts["alpaca"],
            True,
        )
        assert body["order"]["account_id"] == accounts["alpaca"]
        assert route["order_id"] == body["order"]["id"]
        _only(gw.held(), "alpaca")
        # Each attempt is its own order row with its own client order id.
        [first, second] = route["attempts"]
        assert first["order_id"] != second["order_id"]
        assert first["order_status"] == "rejected"
        async with gw.harness.state.ctx.sessionmaker() as session:
            rows = (
                (
                    await session.execute(
                        select(Order).where(Order.id.in_([first["order_id"], second["order_id"]]))
                    )
                )
                .scalars()
                .all()
            )
        assert len({row.client_order_id for row in rows}) == 2
        # Persisted: the route reads back the same.
        assert (await _route(gw, user, route["id"]))["attempts"] == route["attempts"]


async def test_a_429_on_submit_fails_over(db_url: str) -> None:
    async with routing_gateway(db_url) as gw:
        user = new_user()
        accounts = await _three(gw, user)
        gw.tradier.fake.faults.rate_limited = 1
        gw.tradier.fake.faults.rate_limited_method = "POST"  # the placement, nothing else
        response = await gw.route(user)
        assert response.status_code == 201, response.text
        assert attempts_of(response.json()) == [
            (accounts["tradier"], "not_sent", "rate_limited"),
            (accounts["alpaca"], "accepted", None),
        ]
        assert gw.order_posts() == 2
        _only(gw.held(), "alpaca")


async def test_a_refused_connection_fails_over(db_url: str) -> None:
    async with routing_gateway(db_url) as gw:
        user = new_user()
        accounts = await _three(gw, user)
        await gw.stop("tradier")  # its port now refuses connections
        response = await gw.route(user)
        assert response.status_code == 201, response.text
        [(account, outcome, code), placed] = attempts_of(response.json())
        # The broker's symbol check (a read) or the placement itself could not connect:
        # either way nothing reached Tradier.
        assert (account, code) == (accounts["tradier"], "broker_unavailable")
        assert outcome in ("skipped", "not_sent")
        assert placed == (accounts["alpaca"], "accepted", None)
        assert gw.held()["alpaca"] == 1
        assert gw.held()["tastytrade"] == 0


async def test_a_refused_connection_on_the_placement_itself_fails_over(db_url: str) -> None:
    async with routing_gateway(db_url) as gw:
        user = new_user()
        accounts = await _three(gw, user)
        warm = await gw.route(user, account_id=accounts["tradier"])  # symbol check cached
        assert warm.status_code == 201, warm.text
        await gw.stop("tradier")
        response = await gw.route(user)
        assert response.status_code == 201, response.text
        assert attempts_of(response.json()) == [
            (accounts["tradier"], "not_sent", "broker_unavailable"),
            (accounts["alpaca"], "accepted", None),
        ]
        assert gw.held()["alpaca"] == 1
        assert gw.held()["tastytrade"] == 0


async def test_a_503_before_the_order_is_sent_fails_over(db_url: str) -> None:
    async with routing_gateway(db_url) as gw:
        user = new_user()
        accounts = await _three(gw, user)
        # Tradier's symbol check (a read, retried) answers 503 every time: the order itself
        # was never sent there.
        gw.tradier.fake.faults.server_errors = 3
        gw.tradier.fake.faults.server_errors_method = "GET"
        gw.tradier.fake.faults.server_error_status = 503
        response = await gw.route(user)
        assert response.status_code == 201, response.text
        assert attempts_of(response.json()) == [
            (accounts["tradier"], "skipped", "broker_unavailable"),
            (accounts["alpaca"], "accepted", None),
        ]
        assert response.json()["route"]["attempts"][0]["order_id"] is None
        assert gw.order_posts() == 1
        _only(gw.held(), "alpaca")


async def test_a_5xx_on_submit_is_unknown_and_nothing_else_is_tried(db_url: str) -> None:
    async with routing_gateway(db_url) as gw:
        user = new_user()
        accounts = await _three(gw, user)
        gw.tradier.fake.faults.server_errors = 1
        gw.tradier.fake.faults.server_errors_method = "POST"
        key = uuid.uuid4().hex
        response = await gw.route(user, key=key)
        assert response.status_code == 202, response.text
        body = response.json()
        assert attempts_of(body) == [(accounts["tradier"], "unknown", None)]
        assert body["route"]["status"] == "waiting_for_reconciliation"
        assert body["route"]["account_id"] == accounts["tradier"]
        assert body["order"]["status"] == "unknown"
        assert gw.order_posts() == 1  # Alpaca and tastytrade never saw it
        _only(gw.held(), None)

        again = await gw.route(user, key=key)  # a retry replays; it never routes again
        assert (again.status_code, again.json()) == (202, body)
        assert gw.order_posts() == 1

        # The broker never got it: reconciliation gives up on it, the route fails, and
        # still no other broker is tried.
        reconciler = Reconciler(gw.harness.state.ctx)
        await reconciler.run_once(utcnow() + timedelta(minutes=5))
        route = await _route(gw, user, body["route"]["id"])
        assert route["status"] == "failed"
        assert route["attempts"][0]["order_status"] == "rejected"
        assert gw.order_posts() == 1
        _only(gw.held(), None)


async def test_a_timeout_after_accept_is_unknown_then_reconciled_to_placed(db_url: str) -> None:
    async with routing_gateway(db_url) as gw:
        user = new_user()
        accounts = await _three(gw, user)
        gw.tradier.fake.faults.timeout_after_accept = 1
        gw.tradier.fake.faults.hang_seconds = 5
        key = uuid.uuid4().hex
        response = await gw.route(user, key=key)
        assert response.status_code == 202, response.text
        body = response.json()
        assert attempts_of(body) == [(accounts["tradier"], "unknown", None)]
        _only(gw.held(), "tradier")  # Tradier has it; nobody else was asked

        gw.tradier.fake.acknowledge()  # pending -> open meanwhile
        await Reconciler(gw.harness.state.ctx).run_once(utcnow() + timedelta(seconds=1))
        route = await _route(gw, user, body["route"]["id"])
        assert (route["status"], route["account_id"]) == ("placed", accounts["tradier"])
        assert route["attempts"][0]["order_status"] == "accepted"
        assert (await gw.route(user, key=key)).json() == body  # the stored answer
        _only(gw.held(), "tradier")


async def test_the_first_broker_unknown_on_tastytrade_too(db_url: str) -> None:
    async with routing_gateway(db_url) as gw:
        user = new_user()
        accounts = await gw.connect_three(user)
        await gw.set_rules(user, {"equity": [accounts["tastytrade"], accounts["alpaca"]]})
        gw.tastytrade.fake.faults.timeout_after_accept = 1
        gw.tastytrade.fake.faults.hang_seconds = 5
        response = await gw.route(user)
        assert response.status_code == 202, response.text
        assert attempts_of(response.json()) == [(accounts["tastytrade"], "unknown", None)]
        _only(gw.held(), "tastytrade")


async def test_a_5xx_at_a_later_candidate_stops_there(db_url: str) -> None:
    async with routing_gateway(db_url) as gw:
        user = new_user()
        accounts = await _three(gw, user, tradier="10")
        gw.alpaca.fake.faults.server_errors = 1
        gw.alpaca.fake.faults.server_errors_method = "POST"
        response = await gw.route(user)
        assert response.status_code == 202, response.text
        assert attempts_of(response.json()) == [
            (accounts["tradier"], "rejected", "insufficient_funds"),
            (accounts["alpaca"], "unknown", None),
        ]
        assert response.json()["route"]["account_id"] == accounts["alpaca"]
        assert gw.held()["tastytrade"] == 0
        assert gw.order_posts() == 2


async def test_a_kill_switch_passes_the_broker_over_with_its_reason(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with routing_gateway(db_url) as gw:
        user = new_user()
        accounts = await _three(gw, user)
        monkeypatch.setenv("BYOB_BROKER_TRADIER_DISABLED", "1")
        decision = (await gw.decide(user)).json()
        assert passed_over(decision) == {accounts["tradier"]: "live_trading_disabled"}
        response = await gw.route(user)
        assert response.status_code == 201, response.text
        body = response.json()
        assert passed_over(body["route"]["decision"]) == {
            accounts["tradier"]: "live_trading_disabled"
        }
        assert attempts_of(body) == [(accounts["alpaca"], "accepted", None)]
        assert body["route"]["failed_over"] is False
        _only(gw.held(), "alpaca")

        monkeypatch.setenv("BYOB_LIVE_DISABLED", "1")  # every live BYOB broker
        stopped = await gw.route(user)
        assert stopped.status_code == 422
        assert stopped.json()["code"] == "no_eligible_account"
        assert set(passed_over(stopped.json()["decision"]).values()) == {"live_trading_disabled"}
        _only(gw.held(), "alpaca")


async def test_a_capability_mismatch_passes_the_broker_over(db_url: str) -> None:
    async with routing_gateway(db_url) as gw:
        user = new_user()
        accounts = await _three(gw, user)
        # Tradier takes no IOC; tastytrade and Tradier take no fractional quantities.
        ioc = await gw.route(user, order_type="limit", limit_price="500", time_in_force="ioc")
        assert ioc.status_code == 201, ioc.text
        assert passed_over(ioc.json()["route"]["decision"]) == {
            accounts["tradier"]: "unsupported_order"
        }
        assert ioc.json()["route"]["account_id"] == accounts["alpaca"]
        fractional = await gw.route(user, quantity="0.5")
        assert fractional.status_code == 201, fractional.text
        assert passed_over(fractional.json()["route"]["decision"]) == {
            accounts["tradier"]: "unsupported_order",
            accounts["tastytrade"]: "unsupported_order",
        }
        assert gw.order_posts() == 2
        assert gw.held() == {"alpaca": 2, "tradier": 0, "tastytrade": 0}


async def test_every_broker_refusing_is_route_failed_and_replayed(db_url: str) -> None:
    async with routing_gateway(db_url) as gw:
        user = new_user()
        accounts = await _three(gw, user, alpaca="10", tradier="10", tastytrade="10")
        key = uuid.uuid4().hex
        response = await gw.route(user, key=key)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["code"] == "route_failed"
        assert [(a, o) for a, o, _ in attempts_of(problem)] == [
            (accounts["tradier"], "rejected"),
            (accounts["alpaca"], "rejected"),
            (accounts["tastytrade"], "rejected"),
        ]
        assert {c for _, _, c in attempts_of(problem)} == {"insufficient_funds"}
        assert problem["route"]["status"] == "failed"
        again = await gw.route(user, key=key)
        assert (again.status_code, again.json()) == (422, problem)
        assert gw.order_posts() == 3
        _only(gw.held(), None)


async def test_nothing_reachable_releases_the_key_and_a_retry_routes_afresh(
    db_url: str,
) -> None:
    async with routing_gateway(db_url) as gw:
        user = new_user()
        await _three(gw, user)
        for fake in (gw.alpaca.fake, gw.tradier.fake, gw.tastytrade.fake):
            fake.faults.rate_limited = 1
            fake.faults.rate_limited_method = "POST"
            fake.faults.retry_after = 3
        key = uuid.uuid4().hex
        response = await gw.route(user, key=key)
        assert response.status_code == 429, response.text
        assert response.json()["code"] == "rate_limited"
        assert response.headers["Retry-After"] == "3"
        assert {o for _, o, _ in attempts_of(response.json())} == {"not_sent"}
        _only(gw.held(), None)

        retry = await gw.route(user, key=key)  # nothing reached a broker: routed afresh
        assert retry.status_code == 201, retry.text
        assert retry.json()["route"]["id"] != response.json()["route"]["id"]
        _only(gw.held(), "tradier")
        replay = await gw.route(user, key=key)
        assert replay.json() == retry.json()
        _only(gw.held(), "tradier")


async def test_a_process_stop_mid_route_is_completed_by_reconciliation(db_url: str) -> None:
    """The claim waits on the attempt's order: reconciliation answers it with the route."""
    async with routing_gateway(db_url) as gw:
        user = new_user()
        accounts = await _three(gw, user, tradier="10")
        gw.alpaca.fake.faults.timeout_after_accept = 1
        gw.alpaca.fake.faults.hang_seconds = 5
        key = uuid.uuid4().hex
        first = await gw.route(user, key=key)
        assert first.status_code == 202, first.text
        order_id = first.json()["route"]["order_id"]
        async with gw.harness.state.ctx.sessionmaker() as session:
            claim = (
                await session.execute(
                    select(IdempotencyKey).where(
                        IdempotencyKey.user_id == user, IdempotencyKey.key == key
                    )
                )
            ).scalar_one()
            assert claim.order_id == order_id  # the claim follows the route's last attempt
            # As if the process stopped before it could answer.
            await session.execute(
                update(IdempotencyKey)
                .where(IdempotencyKey.id == claim.id)
                .values(state="in_flight", response_status=None, response_body=None)
            )
            await session.execute(
                update(Order).where(Order.id == order_id).values(status="pending_submit")
            )
            await session.commit()
        in_flight = await gw.route(user, key=key)
        assert in_flight.status_code == 409
        assert in_flight.json()["code"] == "request_in_progress"

        await Reconciler(gw.harness.state.ctx).run_once(utcnow() + timedelta(minutes=5))
        answer = await gw.route(user, key=key)
        assert answer.status_code == 201, answer.text
        assert answer.json()["route"]["status"] == "placed"
        assert answer.json()["route"]["account_id"] == accounts["alpaca"]
        assert answer.json()["order"]["id"] == order_id
        _only(gw.held(), "alpaca")


async def test_every_attempt_is_in_the_audit_chain(db_url: str) -> None:
    async with routing_gateway(db_url) as gw:
        user = new_user()
        await _three(gw, user, tradier="10")
        body = (await gw.route(user)).json()
        [first, second] = body["route"]["attempts"]
        async with gw.harness.state.ctx.sessionmaker() as session:
            entries = (
                (
                    await session.execute(
                        select(AuditEntry)
                        .where(AuditEntry.user_id == user)
                        .order_by(AuditEntry.seq)
                    )
                )
                .scalars()
                .all()
            )
            attempts = (
                (await session.execute(select(RouteAttempt).where(RouteAttempt.user_id == user)))
                .scalars()
                .all()
            )
        assert [(e.order_id, e.broker_slug, e.outcome) for e in entries] == [
            (first["order_id"], "tradier", "pending_submit"),
            (first["order_id"], "tradier", "rejected:insufficient_funds"),
            (second["order_id"], "alpaca", "pending_submit"),
            (second["order_id"], "alpaca", "accepted"),
        ]
        assert len({e.request_fingerprint for e in entries}) == 1
        assert sorted(a.seq for a in attempts) == [1, 2]
        verified = await gw.harness.client.get(
            "/v1/admin/audit/verify",
            headers={"Authorization": f"Bearer {gw.harness.token(user, admin=True)}"},
        )
        assert verified.status_code == 200, verified.text
        assert verified.json()["ok"] is True


@pytest.mark.parametrize("backend", ["postgres"])
async def test_concurrent_retries_of_one_request_place_one_order(db_url: str) -> None:
    async with routing_gateway(db_url) as gw:
        user = new_user()
        await _three(gw, user, tradier="10")  # and a failover on the way
        key = uuid.uuid4().hex
        responses = await asyncio.gather(*(gw.route(user, key=key) for _ in range(8)))
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {201, 409}, [r.text for r in responses]
        placed = [r.json() for r in responses if r.status_code == 201]
        assert placed
        assert all(p == placed[0] for p in placed)
        _only(gw.held(), "alpaca")
        async with gw.harness.state.ctx.sessionmaker() as session:
            orders = (
                (await session.execute(select(Order).where(Order.user_id == user))).scalars().all()
            )
        assert len(orders) == 2  # the refused Tradier attempt and the Alpaca order


@pytest.mark.parametrize("backend", ["postgres"])
async def test_one_key_at_a_route_and_a_placement_at_once_never_deadlocks(db_url: str) -> None:
    """A direct placement and a route sent with one Idempotency-Key, both queued behind a
    transaction that holds the user's audit chain head. Both take the head before the key,
    so the first to get it claims the key and places, and the other finds the key held by
    a different request (422). Were the route to claim the key first, it would hold the key
    while waiting for the head the placement holds while waiting for that key: a deadlock,
    and one of them a 500."""
    async with routing_gateway(db_url) as gw:
        user = new_user()
        accounts = await _three(gw, user)
        h = gw.harness
        warm = await h.place(user, accounts["alpaca"])  # the chain and its head exist now
        assert warm.status_code == 201, warm.text
        key = uuid.uuid4().hex
        async with h.state.ctx.sessionmaker() as holder:
            await holder.execute(
                text("SELECT 1 FROM audit_chain_head WHERE chain = :c FOR UPDATE"),
                {"c": user_chain(user)},
            )
            placing = asyncio.create_task(h.place(user, accounts["alpaca"], key=key))
            await until_lock_waiters(h.state.ctx.sessionmaker, 1)
            routing = asyncio.create_task(gw.route(user, key=key))
            await until_lock_waiters(h.state.ctx.sessionmaker, 2)
            await holder.rollback()
        placed, routed = await asyncio.wait_for(asyncio.gather(placing, routing), timeout=30)
        assert placed.status_code == 201, placed.text
        assert routed.status_code == 422, routed.text
        assert routed.json()["code"] == "idempotency_key_reused"
        assert gw.held() == {"alpaca": 2, "tradier": 0, "tastytrade": 0}  # the warm one too


async def test_an_expired_key_routes_afresh(db_url: str) -> None:
    """A route's key whose record expired counts as new: the record is deleted (committed at
    once, so no key lock is held while the chain head is taken) and a new route places a
    new order."""
    async with routing_gateway(db_url) as gw:
        user = new_user()
        await _three(gw, user)
        key = uuid.uuid4().hex
        first = await gw.route(user, key=key)
        assert first.status_code == 201, first.text
        async with gw.harness.state.ctx.sessionmaker() as session:
            await session.execute(
                update(IdempotencyKey)
                .where(IdempotencyKey.user_id == user, IdempotencyKey.key == key)
                .values(expires_at=utcnow() - timedelta(seconds=1))
            )
            await session.commit()
        second = await gw.route(user, key=key)
        assert second.status_code == 201, second.text
        assert second.json()["order"]["id"] != first.json()["order"]["id"]
        assert second.json()["route"]["id"] != first.json()["route"]["id"]
        assert gw.held()["tradier"] == 2  # the rule's first broker took both
        async with gw.harness.state.ctx.sessionmaker() as session:
            keys = await session.scalar(
                select(func.count())
                .select_from(IdempotencyKey)
                .where(IdempotencyKey.user_id == user, IdempotencyKey.key == key)
            )
        assert keys == 1
