"""Health, readiness, metrics, request ids, and the checked-in OpenAPI document."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import new_user
from tests.harness import Harness

OPENAPI_PATH = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


async def test_healthz_and_readyz(harness: Harness) -> None:
    assert (await harness.client.get("/healthz")).json() == {"status": "ok"}
    ready = await harness.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


async def test_metrics_count_requests_and_orders(harness: Harness) -> None:
    user = new_user()
    _, account = await harness.paper_account(user)
    await harness.place(user, account)
    text = (await harness.client.get("/metrics")).text
    assert (
        'brokerage_http_requests_total{method="POST",route="/v1/accounts/{account_id}/orders"'
        in text
    )
    assert 'brokerage_orders_total{broker="paper",outcome="filled"}' in text
    assert "brokerage_http_request_duration_seconds_bucket" in text


async def test_request_id_is_echoed_or_generated(harness: Harness) -> None:
    echoed = await harness.client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    generated = await harness.client.get("/healthz", headers={"X-Request-ID": "bad id\n"})
    assert generated.headers["x-request-id"] != "bad id\n"
    assert len(generated.headers["x-request-id"]) == 32


async def test_unknown_route_and_method_are_problems(harness: Harness) -> None:
    missing = await harness.client.get("/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"
    wrong = await harness.client.put("/healthz")
    assert wrong.status_code == 405
    assert wrong.json()["code"] == "method_not_allowed"


async def test_checked_in_openapi_is_current(harness: Harness) -> None:
    generated = harness.app.openapi()
    stored = json.loads(OPENAPI_PATH.read_text())
    assert stored == json.loads(json.dumps(generated)), (
        "openapi/openapi.json is stale: run scripts/openapi"
    )


async def test_operation_ids_are_unique_and_readable(harness: Harness) -> None:
    ids = [
        op["operationId"]
        for path in harness.app.openapi()["paths"].values()
        for op in path.values()
    ]
    assert len(ids) == len(set(ids))
    assert all(i.replace("_", "").isalpha() and i.islower() for i in ids)


async def test_admin_routes_need_the_admin_role(harness: Harness) -> None:
    user = new_user()
    await harness.paper_account(user)
    plain = await harness.client.get("/v1/admin/connections/health", headers=harness.auth(user))
    assert plain.status_code == 403
    assert plain.headers["content-type"].startswith("application/problem+json")
    assert plain.json()["code"] == "forbidden"
    anonymous = await harness.client.get("/v1/admin/connections/health")
    assert anonymous.status_code == 401

    admin_token = harness.token(new_user("ops"), admin=True)
    summary = await harness.client.get(
        "/v1/admin/connections/health", headers={"Authorization": f"Bearer {admin_token}"}
    )
    assert summary.status_code == 200
    paper_active = [
        row
        for row in summary.json()["items"]
        if (row["broker"], row["status"]) == ("paper", "active")
    ]
    assert paper_active
    assert paper_active[0]["count"] >= 1
