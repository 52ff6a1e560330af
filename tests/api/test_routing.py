"""The routing API: decisions, rules, explicit accounts, Linked accounts, isolation, input.

Live brokers are the fake Alpaca, Tradier and tastytrade on real ports (``routing_support``);
paper accounts are the real paper broker. Faults and failover are in
``tests/services/test_routing_failover.py``.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from app.db.models import IdempotencyKey, Order, OrderRoute, RouteAttempt
from tests.api.routing_support import ORDER, attempts_of, passed_over, routing_gateway
from tests.conftest import new_user
from tests.harness import Harness


async def _written(harness: Harness, user: str) -> tuple[int, int, int]:
    """(orders, routes, idempotency keys) of a user."""
    async with harness.state.ctx.sessionmaker() as session:
        orders = select(func.count()).where(Order.user_id == user)
        routes = select(func.count()).where(OrderRoute.user_id == user)
        keys = select(func.count()).where(IdempotencyKey.user_id == user)
        return (
            int((await session.execute(orders)).scalar_one()),
            int((await session.execute(routes)).scalar_one()),
            int((await session.execute(keys)).scalar_one()),
        )


async def _post(harness: Harness, user: str, key: str | None = None, **fields: Any) -> Any:
    body = {**ORDER, "account_id": "auto", **fields}
    return await harness.client.post(
        "/v1/orders",
        json=body,
        headers=harness.auth(user, **{"Idempotency-Key": key or uuid.uuid4().hex}),
    )


# --- the decision -----------------------------------------------------------------------


async def test_the_decision_places_nothing_and_calls_no_broker(db_url: str) -> None:
    async with routing_gateway(db_url) as gw:
        user = new_user()
        accounts = await gw.connect_three(user)
        before = gw.broker_requests()
        response = await gw.decide(user)
        assert response.status_code == 200, response.text
        decision = response.json()
        assert gw.broker_requests() == before  # not even a read
        assert await _written(gw.harness, user) == (0, 0, 0)
        assert decision["selection"] == "auto"
        assert (decision["asset_class"], decision["mode"]) == ("equity", "live")
        # No rule: oldest account first.
        assert [c["account_id"] for c in decision["candidates"]] == [
            accounts["alpaca"],
            accounts["tradier"],
            accounts["tastytrade"],
        ]
        assert [c["rank"] for c in decision["candidates"]] == [1, 2, 3]
        assert (decision["account_id"], decision["reason"]) == (
            accounts["alpaca"],
            "default_order",
        )
        assert decision["passed_over"] == []


async def test_rules_are_respected_and_can_be_changed(db_url: str) -> None:
    async with routing_gateway(db_url) as gw:
        user = new_user()
        accounts = await gw.connect_three(user)
        put = await gw.set_rules(user, {"equity": [accounts["tastytrade"], accounts["tradier"]]})
        assert put.status_code == 200, put.text
        got = await gw.harness.client.get("/v1/routing/rules", headers=gw.harness.auth(user))
        assert got.json() == put.json()
        [rule] = got.json()["rules"]
        assert rule["accounts"] == [accounts["tastytrade"], accounts["tradier"]]

        decision = (await gw.decide(user)).json()
        assert [(c["account_id"], c["source"]) for c in decision["candidates"]] == [
            (accounts["tastytrade"], "rule"),
            (accounts["tradier"], "rule"),
            (accounts["alpaca"], "default"),  # unlisted accounts come after the listed ones
        ]
        assert decision["reason"] == "routing_rule"
        placed = await gw.route(user)
        assert placed.status_code == 201, placed.text
        assert placed.json()["route"]["account_id"] == accounts["tastytrade"]
        assert gw.held() == {"alpaca": 0, "tradier": 0, "tastytrade": 1}

        await gw.set_rules(user, {"equity": [accounts["tradier"]]})
        again = await gw.route(user)
        assert again.json()["route"]["account_id"] == accounts["tradier"]
        # A rule for another asset class does not touch equities.
        await gw.set_rules(user, {"crypto": [accounts["alpaca"]]})
        default = await gw.route(user)
        assert default.json()["route"]["account_id"] == accounts["alpaca"]
        assert default.json()["route"]["decision"]["reason"] == "default_order"
        assert gw.held() == {"alpaca": 1, "tradier": 1, "tastytrade": 1}

        cleared = await gw.set_rules(user, {})
        assert cleared.json() == {"rules": []}


async def test_allowed_accounts_narrow_the_choice(db_url: str) -> None:
    async with routing_gateway(db_url) as gw:
        user = new_user()
        accounts = await gw.connect_three(user)
        allowed = [accounts["tastytrade"], accounts["tradier"]]
        response = await gw.route(user, allowed_accounts=allowed)
        assert response.status_code == 201, response.text
        route = response.json()["route"]
        assert route["account_id"] == accounts["tradier"]  # the older of the two
        assert passed_over(route["decision"]) == {accounts["alpaca"]: "not_in_allowed_accounts"}
        assert gw.held() == {"alpaca": 0, "tradier": 1, "tastytrade": 0}


async def test_an_explicit_account_wins_over_the_rules(db_url: str) -> None:
    async with routing_gateway(db_url) as gw:
        user = new_user()
        accounts = await gw.connect_three(user)
        await gw.set_rules(user, {"equity": [accounts["tradier"], accounts["alpaca"]]})
        response = await gw.route(user, account_id=accounts["tastytrade"])
        assert response.status_code == 201, response.text
        route = response.json()["route"]
        assert route["decision"]["selection"] == "explicit"
        assert route["decision"]["reason"] == "explicit_account"
        assert [c["account_id"] for c in route["decision"]["candidates"]] == [
            accounts["tastytrade"]
        ]
        assert route["account_id"] == accounts["tastytrade"]
        assert gw.held() == {"alpaca": 0, "tradier": 0, "tastytrade": 1}


async def test_an_explicit_account_answers_like_the_account_route_and_never_fails_over(
    db_url: str,
) -> None:
    async with routing_gateway(db_url) as gw:
        user = new_user()
        accounts = await gw.connect_three(user, tradier="10")
        refused = await gw.route(user, account_id=accounts["tradier"])
        assert refused.status_code == 422, refused.text
        problem = refused.json()
        assert problem["code"] == "insufficient_funds"  # the account route's own code
        assert attempts_of(problem) == [(accounts["tradier"], "rejected", "insufficient_funds")]
        assert gw.order_posts() == 1
        assert gw.held() == {"alpaca": 0, "tradier": 0, "tastytrade": 0}
        direct = await gw.harness.place(user, accounts["tradier"])
        assert (direct.status_code, direct.json()["code"]) == (422, "insufficient_funds")
        ioc = await gw.route(
            user,
            account_id=accounts["tradier"],
            order_type="limit",
            limit_price="1",
            time_in_force="ioc",
        )
        assert (ioc.status_code, ioc.json()["code"]) == (422, "unsupported_order")


async def test_the_account_route_still_places_there(db_url: str) -> None:
    async with routing_gateway(db_url) as gw:
        user = new_user()
        accounts = await gw.connect_three(user)
        await gw.set_rules(user, {"equity": [accounts["tradier"]]})
        response = await gw.harness.place(user, accounts["tastytrade"])
        assert response.status_code == 201, response.text
        assert response.json()["account_id"] == accounts["tastytrade"]
        assert "route" not in response.json()
        assert gw.held() == {"alpaca": 0, "tradier": 0, "tastytrade": 1}


# --- Linked and read-only accounts --------------------------------------------------------


async def test_a_linked_account_is_listed_but_never_a_candidate(db_url: str) -> None:
    async with routing_gateway(db_url) as gw:
        user = new_user()
        linked = await gw.connect_linked(user)  # the oldest account
        tradier = await gw.connect_tradier(user)
        listed = await gw.harness.client.get("/v1/accounts", headers=gw.harness.auth(user))
        labels = {a["id"]: (a["tier"], a["label"]) for a in listed.json()["items"]}
        assert labels[linked] == ("C", "Linked")
        portfolio = await gw.harness.client.get("/v1/portfolio", headers=gw.harness.auth(user))
        assert linked in {a["account_id"] for a in portfolio.json()["accounts"]}

        decision = (await gw.decide(user)).json()
        assert passed_over(decision) == {linked: "read_only_account"}
        assert [c["account_id"] for c in decision["candidates"]] == [tradier]
        assert decision["mode"] == "live"
        placed = await gw.route(user)
        assert placed.json()["route"]["account_id"] == tradier

        only_linked = await gw.route(user, allowed_accounts=[linked])
        assert only_linked.status_code == 422
        assert only_linked.json()["code"] == "no_eligible_account"
        assert passed_over(only_linked.json()["decision"]) == {
            linked: "read_only_account",
            tradier: "not_in_allowed_accounts",
        }
        explicit = await gw.route(user, account_id=linked)
        assert (explicit.status_code, explicit.json()["code"]) == (403, "read_only_account")
        preview = (await gw.decide(user, account_id=linked)).json()
        assert (preview["account_id"], preview["candidates"]) == (None, [])
        assert passed_over(preview) == {linked: "read_only_account"}
        rule = await gw.set_rules(user, {"equity": [linked, tradier]})
        assert (rule.status_code, rule.json()["code"]) == (403, "read_only_account")
        assert gw.held() == {"alpaca": 0, "tradier": 1, "tastytrade": 0}


async def test_a_disconnected_account_is_passed_over(harness: Harness) -> None:
    user = new_user()
    gone_connection, gone = await harness.paper_account(user)
    _, kept = await harness.paper_account(user)
    deleted = await harness.client.delete(
        f"/v1/connections/{gone_connection}", headers=harness.auth(user)
    )
    assert deleted.status_code == 204
    response = await _post(harness, user)
    assert response.status_code == 201, response.text
    route = response.json()["route"]
    assert passed_over(route["decision"]) == {gone: "connection_broken"}
    assert route["account_id"] == kept


# --- modes and the paper-first gate -----------------------------------------------------


async def test_a_route_never_mixes_paper_and_live(db_url: str) -> None:
    async with routing_gateway(db_url) as gw:
        user = new_user()
        h = gw.harness
        _, paper = await h.paper_account(user, starting_cash="10")
        alpaca = await gw.connect_alpaca(user)
        # The oldest account is paper: the route trades paper, and a refusal there never
        # moves the order onto real money.
        refused = await gw.route(user)
        assert refused.status_code == 422, refused.text
        assert refused.json()["code"] == "route_failed"
        assert passed_over(refused.json()["route"]["decision"]) == {alpaca: "mode_mismatch"}
        assert attempts_of(refused.json()) == [(paper, "rejected", "insufficient_funds")]
        assert gw.order_posts() == 0

        live = await gw.route(user, mode="live")
        assert live.status_code == 201, live.text
        assert live.json()["route"]["decision"]["mode_source"] == "request"
        assert passed_over(live.json()["route"]["decision"]) == {paper: "mode_mismatch"}
        assert live.json()["route"]["account_id"] == alpaca

        mismatch = await gw.route(user, account_id=paper, mode="live")
        assert (mismatch.status_code, mismatch.json()["code"]) == (422, "validation_error")


async def test_the_paper_first_gate_passes_live_accounts_over(db_url: str) -> None:
    async with routing_gateway(db_url, paper_first_cycles=1) as gw:
        user = new_user()
        tradier = await gw.connect_tradier(user)
        decision = (await gw.decide(user)).json()
        assert passed_over(decision) == {tradier: "paper_first_required"}
        response = await gw.route(user)
        assert response.status_code == 422
        assert response.json()["code"] == "no_eligible_account"
        assert gw.order_posts() == 0


# --- tenant isolation -------------------------------------------------------------------


async def test_another_users_accounts_are_unknown_and_never_used(db_url: str) -> None:
    async with routing_gateway(db_url) as gw:
        alice, bob = new_user("alice"), new_user("bob")
        alice_tradier = await gw.connect_tradier(alice)
        bob_alpaca = await gw.connect_alpaca(bob)

        mixed = await gw.route(alice, allowed_accounts=[bob_alpaca, alice_tradier])
        assert mixed.status_code == 201, mixed.text
        assert passed_over(mixed.json()["route"]["decision"]) == {bob_alpaca: "unknown_account"}
        assert mixed.json()["route"]["account_id"] == alice_tradier

        only_bob = await gw.route(alice, allowed_accounts=[bob_alpaca])
        assert only_bob.status_code == 422
        assert only_bob.json()["code"] == "no_eligible_account"
        assert passed_over(only_bob.json()["decision"]) == {
            bob_alpaca: "unknown_account",
            alice_tradier: "not_in_allowed_accounts",
        }
        explicit = await gw.route(alice, account_id=bob_alpaca)
        assert (explicit.status_code, explicit.json()["code"]) == (404, "not_found")
        decide = await gw.decide(alice, account_id=bob_alpaca)
        assert (decide.status_code, decide.json()["code"]) == (404, "not_found")
        rules = await gw.set_rules(alice, {"equity": [bob_alpaca]})
        assert (rules.status_code, rules.json()["code"]) == (422, "unknown_account")
        assert gw.held() == {"alpaca": 0, "tradier": 1, "tastytrade": 0}

        route_id = mixed.json()["route"]["id"]
        stolen = await gw.harness.client.get(f"/v1/routes/{route_id}", headers=gw.harness.auth(bob))
        assert (stolen.status_code, stolen.json()["code"]) == (404, "not_found")
        await gw.set_rules(bob, {"equity": [bob_alpaca]})
        alice_rules = await gw.harness.client.get(
            "/v1/routing/rules", headers=gw.harness.auth(alice)
        )
        assert alice_rules.json() == {"rules": []}


# --- idempotency ----------------------------------------------------------------------------


async def test_idempotency_key_semantics(harness: Harness) -> None:
    user = new_user()
    _, account = await harness.paper_account(user)
    key = uuid.uuid4().hex
    first = await _post(harness, user, key=key)
    assert first.status_code == 201, first.text
    replay = await _post(harness, user, key=key)
    assert (replay.status_code, replay.json()) == (201, first.json())
    changed = await _post(harness, user, key=key, quantity="2")
    assert (changed.status_code, changed.json()["code"]) == (422, "idempotency_key_reused")
    narrowed = await _post(harness, user, key=key, allowed_accounts=[account])
    assert narrowed.json()["code"] == "idempotency_key_reused"
    other_route = await harness.place(user, account, key=key)  # same key, the account route
    assert other_route.json()["code"] == "idempotency_key_reused"
    assert await _written(harness, user) == (1, 1, 1)

    missing = await harness.client.post(
        "/v1/orders", json={**ORDER, "account_id": "auto"}, headers=harness.auth(user)
    )
    assert (missing.status_code, missing.json()["code"]) == (400, "idempotency_key_required")

    async with harness.state.ctx.sessionmaker() as session:
        record = (
            await session.execute(
                select(IdempotencyKey).where(
                    IdempotencyKey.user_id == user, IdempotencyKey.key == key
                )
            )
        ).scalar_one()
        record.state = "in_flight"
        record.response_status = None
        await session.commit()
    in_flight = await _post(harness, user, key=key)
    assert (in_flight.status_code, in_flight.json()["code"]) == (409, "request_in_progress")
    assert in_flight.headers["Retry-After"] == "1"
    assert await _written(harness, user) == (1, 1, 1)


async def test_a_refusal_before_anything_is_written_keeps_the_key_free(harness: Harness) -> None:
    user = new_user()
    _, account = await harness.paper_account(user)
    key = uuid.uuid4().hex
    none = await _post(harness, user, key=key, symbol="AAPL260116C00150000")  # expired
    assert (none.status_code, none.json()["code"]) == (422, "no_eligible_account")
    assert passed_over(none.json()["decision"]) == {account: "option_expired"}
    unknown_symbol = await _post(harness, user, symbol="NOTREAL")  # the broker's own check
    assert unknown_symbol.json()["code"] == "no_eligible_account"
    assert passed_over(unknown_symbol.json()["decision"]) == {account: "unknown_symbol"}
    assert await _written(harness, user) == (0, 0, 0)
    placed = await _post(harness, user, key=key, symbol="MSFT")  # the key was not used up
    assert placed.status_code == 201, placed.text


async def test_a_user_without_accounts_gets_no_eligible_account(harness: Harness) -> None:
    user = new_user()
    decision = await harness.client.post(
        "/v1/orders/route", json={**ORDER, "account_id": "auto"}, headers=harness.auth(user)
    )
    assert decision.status_code == 200
    assert (decision.json()["account_id"], decision.json()["reason"]) == (
        None,
        "no_eligible_account",
    )
    response = await _post(harness, user)
    assert (response.status_code, response.json()["code"]) == (422, "no_eligible_account")


async def test_an_unknown_route_is_404(harness: Harness) -> None:
    response = await harness.client.get(
        "/v1/routes/rte_nosuchroute", headers=harness.auth(new_user())
    )
    assert (response.status_code, response.json()["code"]) == (404, "not_found")


# --- bad input ---------------------------------------------------------------------------------

AUTO = {**ORDER, "account_id": "auto"}
BAD_ROUTED: list[tuple[str, Any]] = [
    ("no account_id", ORDER),
    ("empty account_id", {**AUTO, "account_id": ""}),
    ("overlong account_id", {**AUTO, "account_id": "a" * 65}),
    ("account_id not a string", {**AUTO, "account_id": 7}),
    ("empty allowed_accounts", {**AUTO, "allowed_accounts": []}),
    ("allowed_accounts repeats", {**AUTO, "allowed_accounts": ["acc_x", "acc_x"]}),
    ("allowed_accounts not a list", {**AUTO, "allowed_accounts": "acc_x"}),
    ("explicit not allowed", {**AUTO, "account_id": "acc_y", "allowed_accounts": ["acc_x"]}),
    ("unknown mode", {**AUTO, "mode": "margin"}),
    ("unknown field", {**AUTO, "broker": "alpaca"}),
    ("bad order", {**AUTO, "quantity": "0"}),
]


@pytest.mark.parametrize(("case", "body"), BAD_ROUTED, ids=[c for c, _ in BAD_ROUTED])
@pytest.mark.parametrize("path", ["/v1/orders", "/v1/orders/route"])
async def test_bad_routed_orders_are_validation_errors(
    harness: Harness, case: str, body: Any, path: str
) -> None:
    user = new_user()
    await harness.paper_account(user)
    response = await harness.client.post(
        path, json=body, headers=harness.auth(user, **{"Idempotency-Key": uuid.uuid4().hex})
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "validation_error"
    assert await _written(harness, user) == (0, 0, 0)


BAD_RULES: list[tuple[str, Any]] = [
    ("no rules field", {}),
    ("unknown asset class", {"rules": [{"asset_class": "futures", "accounts": ["acc_x"]}]}),
    ("empty accounts", {"rules": [{"asset_class": "equity", "accounts": []}]}),
    ("repeated account", {"rules": [{"asset_class": "equity", "accounts": ["acc_x", "acc_x"]}]}),
    (
        "two rules for one class",
        {
            "rules": [
                {"asset_class": "equity", "accounts": ["acc_x"]},
                {"asset_class": "equity", "accounts": ["acc_y"]},
            ]
        },
    ),
    ("unknown field", {"rules": [], "default": "acc_x"}),
    ("not an object", ["acc_x"]),
]


@pytest.mark.parametrize(("case", "body"), BAD_RULES, ids=[c for c, _ in BAD_RULES])
async def test_bad_rules_are_validation_errors(harness: Harness, case: str, body: Any) -> None:
    user = new_user()
    response = await harness.client.put("/v1/routing/rules", json=body, headers=harness.auth(user))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    rules = await harness.client.get("/v1/routing/rules", headers=harness.auth(user))
    assert rules.json() == {"rules": []}


async def test_a_rule_naming_an_unknown_account_changes_nothing(harness: Harness) -> None:
    user = new_user()
    _, account = await harness.paper_account(user)
    put = await harness.client.put(
        "/v1/routing/rules",
        json={"rules": [{"asset_class": "equity", "accounts": [account]}]},
        headers=harness.auth(user),
    )
    assert put.status_code == 200
    bad = await harness.client.put(
        "/v1/routing/rules",
        json={"rules": [{"asset_class": "crypto", "accounts": [account, "acc_nosuch"]}]},
        headers=harness.auth(user),
    )
    assert (bad.status_code, bad.json()["code"]) == (422, "unknown_account")
    assert bad.json()["accounts"] == ["acc_nosuch"]
    rules = await harness.client.get("/v1/routing/rules", headers=harness.auth(user))
    assert rules.json() == put.json()


async def test_route_attempts_are_stored_per_user(harness: Harness) -> None:
    user = new_user()
    await harness.paper_account(user)
    body = (await _post(harness, user)).json()
    async with harness.state.ctx.sessionmaker() as session:
        rows = (
            (await session.execute(select(RouteAttempt).where(RouteAttempt.user_id == user)))
            .scalars()
            .all()
        )
    assert [(r.route_id, r.order_id, r.outcome) for r in rows] == [
        (body["route"]["id"], body["order"]["id"], "accepted")
    ]
