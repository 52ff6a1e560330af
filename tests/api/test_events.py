"""``GET /v1/events``: the owner's events after a cursor, in cursor order, on both backends."""

from __future__ import annotations

import re

import pytest

from tests.conftest import new_user
from tests.harness import Harness

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


async def _events(harness: Harness, user: str, **params: object) -> dict[str, object]:
    response = await harness.client.get("/v1/events", params=params, headers=harness.auth(user))
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def test_events_need_a_token(harness: Harness) -> None:
    response = await harness.client.get("/v1/events")
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


async def test_events_are_the_callers_in_cursor_order_with_api_shapes(harness: Harness) -> None:
    user = new_user()
    _, account = await harness.paper_account(user)
    order = (await harness.place(user, account, quantity="2")).json()
    page = await _events(harness, user)
    items = page["items"]
    assert isinstance(items, list)
    assert page["next_cursor"] is None
    cursors = [int(e["cursor"]) for e in items]
    assert cursors == sorted(cursors)
    assert len(set(cursors)) == len(cursors)
    assert all(isinstance(e["cursor"], str) for e in items)
    assert items[0]["type"] == "connection.active"
    assert items[0]["order"] is None
    order_events = [e for e in items if e["order_id"] == order["id"]]
    assert next(e["type"] for e in order_events) == "order.pending_submit"
    last = order_events[-1]
    assert last["type"] == f"order.{order['status']}"
    assert last["account_id"] == account
    assert last["order"] == order
    assert last["order"]["quantity"] == "2"
    assert RFC3339_UTC.match(last["occurred_at"])
    assert set(last) == {
        "cursor",
        "type",
        "account_id",
        "order_id",
        "connection_id",
        "order",
        "connection",
        "occurred_at",
    }


async def test_pages_chain_through_next_cursor(harness: Harness) -> None:
    user = new_user()
    _, account = await harness.paper_account(user)
    for _ in range(2):
        await harness.place(user, account)
    everything = (await _events(harness, user, limit=500))["items"]
    assert isinstance(everything, list)
    assert len(everything) >= 5
    seen: list[str] = []
    after: object = None
    while True:
        params = {"limit": 2} if after is None else {"limit": 2, "after": after}
        page = await _events(harness, user, **params)
        items = page["items"]
        assert isinstance(items, list)
        seen += [e["cursor"] for e in items]
        if page["next_cursor"] is None:
            break
        assert page["next_cursor"] == items[-1]["cursor"]
        after = page["next_cursor"]
    assert seen == [e["cursor"] for e in everything]
    # Polling from the last cursor: nothing new, and a valid (not an error) answer.
    assert await _events(harness, user, after=seen[-1]) == {"items": [], "next_cursor": None}


async def test_account_filter_and_another_users_account(harness: Harness) -> None:
    user, other = new_user(), new_user("other")
    _, first = await harness.paper_account(user)
    _, second = await harness.paper_account(user)
    _, foreign = await harness.paper_account(other)
    await harness.place(user, first)
    await harness.place(user, second)
    only_first = (await _events(harness, user, account_id=first))["items"]
    assert isinstance(only_first, list)
    assert only_first
    assert {e["account_id"] for e in only_first} == {first}
    both = (await _events(harness, user, account_id=[first, second]))["items"]
    assert isinstance(both, list)
    assert {e["account_id"] for e in both} == {first, second}

    for account in (foreign, "acc_does_not_exist"):
        response = await harness.client.get(
            "/v1/events", params={"account_id": account}, headers=harness.auth(user)
        )
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"


async def test_a_user_never_lists_another_users_events(harness: Harness) -> None:
    victim, attacker = new_user("victim"), new_user("attacker")
    _, account = await harness.paper_account(victim)
    await harness.place(victim, account)
    await harness.paper_account(attacker)
    items = (await _events(harness, attacker, limit=500))["items"]
    assert isinstance(items, list)
    assert all(e["account_id"] != account for e in items)
    assert [e["type"] for e in items] == ["connection.active"]


@pytest.mark.parametrize(
    "after", ["abc", "-1", "1.5", "9" * 20, "\uff11", " 1", "0x10", "99999999999999"]
)
async def test_bad_cursors_are_400_invalid_cursor(harness: Harness, after: str) -> None:
    user = new_user()
    await harness.paper_account(user)
    response = await harness.client.get(
        "/v1/events", params={"after": after}, headers=harness.auth(user)
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "invalid_cursor"


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 501}, {"after": "1" * 41}])
async def test_out_of_range_parameters_are_422(harness: Harness, params: dict[str, object]) -> None:
    response = await harness.client.get(
        "/v1/events", params=params, headers=harness.auth(new_user())
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


async def test_the_route_is_documented(harness: Harness) -> None:
    spec = harness.app.openapi()
    operation = spec["paths"]["/v1/events"]["get"]
    assert operation["operationId"] == "list_events"
    assert "WS /v1/stream" in operation["description"]
    assert set(operation["responses"]) >= {"200", "400", "401", "404", "422"}
