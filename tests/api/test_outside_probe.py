"""Regressions for the defects an outside probe found (issue 14, item 5), on both backends."""

from __future__ import annotations

import logging
import uuid

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.db.session import create_engine
from tests.conftest import new_user
from tests.harness import Harness

# --- NUL bytes: Postgres cannot compare text with a NUL, SQLite just finds nothing -------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/orders/a%00b"),
        ("PATCH", "/v1/orders/%00"),
        ("DELETE", "/v1/orders/ord_%00"),
        ("GET", "/v1/accounts/acc%00/orders"),
        ("GET", "/v1/accounts/%00/positions"),
        ("GET", "/v1/connections/con_%00x"),
        ("GET", "/v1/routes/rte%00"),
    ],
)
async def test_a_nul_in_a_path_id_is_a_404(harness: Harness, method: str, path: str) -> None:
    user = new_user("nul")
    response = await harness.client.request(method, path, headers=harness.auth(user), json={})
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    "query",
    [
        "/v1/events?account_id=%00",
        "/v1/events?after=1%00",
        "/v1/orders?status=open%00",
        "/v1/portfolio?account_id=acc%00",
    ],
)
async def test_a_nul_in_a_query_parameter_is_a_422(harness: Harness, query: str) -> None:
    user = new_user("nul")
    response = await harness.client.get(query, headers=harness.auth(user))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"


async def test_a_nul_in_a_json_string_that_reaches_the_database_is_a_422(
    harness: Harness,
) -> None:
    user = new_user("nul")
    _connection, account_id = await harness.paper_account(user)
    response = await harness.client.put(
        "/v1/routing/rules",
        json={"rules": [{"asset_class": "equity", "accounts": [f"{account_id}\u0000"]}]},
        headers=harness.auth(user),
    )
    assert response.status_code in (404, 422), response.text


async def test_failed_statements_never_carry_their_bound_parameters(db_url: str) -> None:
    engine = create_engine(db_url)
    secret = "sk-live-" + uuid.uuid4().hex
    try:
        async with engine.connect() as connection:
            with pytest.raises(DBAPIError) as failed:
                await connection.execute(
                    text("SELECT * FROM no_such_table_at_all WHERE x = :secret"),
                    {"secret": secret},
                )
    finally:
        await engine.dispose()
    assert secret not in str(failed.value)
    assert "hidden due to hide_parameters" in str(failed.value)


async def test_an_unhandled_database_error_is_logged_without_its_parameters(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """A NUL that slipped into SQL used to log ``[parameters: ('a\\x00b', ...)]``."""
    user = new_user("nul")
    body_value = f"acc_{uuid.uuid4().hex}\u0000marker"
    with caplog.at_level(logging.ERROR):
        await harness.client.put(
            "/v1/routing/rules",
            json={"rules": [{"asset_class": "equity", "accounts": [body_value]}]},
            headers=harness.auth(user),
        )
    assert "marker" not in caplog.text


# --- OAuth callback metric: bounded labels ----------------------------------------------


async def test_the_oauth_callback_metric_labels_only_known_brokers(harness: Harness) -> None:
    made_up = "nobroker" + uuid.uuid4().hex[:8]
    response = await harness.client.get(f"/v1/oauth/{made_up}/callback?state=x&code=y")
    assert response.status_code in (302, 400)
    exposition = (await harness.client.get("/metrics")).text
    assert made_up not in exposition
    assert (
        REGISTRY.get_sample_value(
            "brokerage_oauth_callbacks_total", {"broker": "unknown", "outcome": "invalid_state"}
        )
        or 0
    ) >= 1
