"""Regressions for the defects an outside probe found (issue 14, item 5), on both backends."""

from __future__ import annotations

import logging
import uuid

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.config import Settings
from app.db.session import create_engine
from tests.conftest import new_user
from tests.harness import Harness, running_app, settings_for_tests
from tests.postgres import free_port

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


# --- /metrics exposure -------------------------------------------------------------------


async def test_metrics_with_a_token_need_the_token(sqlite_url: str) -> None:
    token = "metrics-" + uuid.uuid4().hex
    settings = settings_for_tests(sqlite_url, metrics_exposure="token", metrics_token=token)
    async with running_app(settings) as harness:
        anonymous = await harness.client.get("/metrics")
        assert anonymous.status_code == 401
        assert anonymous.json()["code"] == "unauthorized"
        user_token = await harness.client.get("/metrics", headers=harness.auth(new_user()))
        assert user_token.status_code == 401  # a user's JWT is not the metrics token
        wrong = await harness.client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        scraped = await harness.client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert scraped.status_code == 200
        assert "brokerage_http_requests_total" in scraped.text


def test_the_token_mode_refuses_to_start_without_a_token() -> None:
    with pytest.raises(ValidationError):
        Settings(metrics_exposure="token")


async def test_metrics_on_their_own_port_are_not_on_the_api_port(sqlite_url: str) -> None:
    settings = settings_for_tests(sqlite_url, metrics_exposure="port", metrics_port=free_port())
    async with running_app(settings) as harness:
        on_api = await harness.client.get("/metrics")
        assert on_api.status_code == 404
        async with httpx.AsyncClient() as client:
            scraped = await client.get(f"http://127.0.0.1:{settings.metrics_port}/metrics")
        assert scraped.status_code == 200
        assert "brokerage_http_requests_total" in scraped.text
    with pytest.raises(httpx.ConnectError):  # the listener stops with the app
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{settings.metrics_port}/metrics")


# --- the OpenAPI document and the server agree --------------------------------------------


def test_the_idempotency_key_is_documented_as_required(harness: Harness) -> None:
    spec = harness.app.openapi()
    seen = 0
    for path in spec["paths"].values():
        for operation in path.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "Idempotency-Key":
                    seen += 1
                    assert parameter["required"] is True, operation["operationId"]
                    assert parameter["schema"]["type"] == "string"
    assert seen >= 2  # place_order and place_routed_order at least


async def test_a_missing_idempotency_key_is_still_a_400(harness: Harness) -> None:
    user = new_user("probe")
    _connection, account_id = await harness.paper_account(user)
    response = await harness.client.post(
        f"/v1/accounts/{account_id}/orders",
        json={"symbol": "AAPL", "side": "buy", "quantity": "1", "order_type": "market"},
        headers=harness.auth(user),
    )
    assert response.status_code == 400
    assert response.json()["code"] == "idempotency_key_required"


def test_quotes_document_their_409(harness: Harness) -> None:
    assert "409" in harness.app.openapi()["paths"]["/v1/quotes"]["get"]["responses"]


@pytest.mark.parametrize("path", ["/v1/accounts", "/v1/connections", "/v1/accounts/{acc}/orders"])
async def test_an_empty_cursor_is_the_first_page(harness: Harness, path: str) -> None:
    user = new_user("probe")
    _connection, account_id = await harness.paper_account(user)
    url = path.replace("{acc}", account_id)
    first = await harness.client.get(url, headers=harness.auth(user))
    empty = await harness.client.get(url + "?cursor=", headers=harness.auth(user))
    assert empty.status_code == 200, empty.text
    assert empty.json() == first.json()


async def test_the_events_cursor_is_documented_as_the_server_reads_it(harness: Harness) -> None:
    parameters = harness.app.openapi()["paths"]["/v1/events"]["get"]["parameters"]
    after = next(p for p in parameters if p["name"] == "after")
    assert after["schema"]["pattern"] == "^[0-9]{1,19}$"
    user = new_user("probe")
    over_long = await harness.client.get(
        "/v1/events", params={"after": "9" * 25}, headers=harness.auth(user)
    )
    assert over_long.status_code == 400
    assert over_long.json()["code"] == "invalid_cursor"


@pytest.mark.parametrize("value", ["0.5", "1700000000", "2026-11-23", "2026-11-23T14:30:00"])
async def test_a_date_time_parameter_takes_rfc_3339_only(harness: Harness, value: str) -> None:
    user = new_user("probe")
    _connection, account_id = await harness.paper_account(user)
    response = await harness.client.get(
        f"/v1/accounts/{account_id}/transactions",
        params={"start": value},
        headers=harness.auth(user),
    )
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("0001-01-01T00:00:00+01:00", None),
        ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59-05:00"),
        ("2026-11-23 14:30:00.123+02:00", None),
    ],
)
async def test_every_rfc_3339_date_time_is_accepted(
    harness: Harness, start: str, end: str | None
) -> None:
    user = new_user("probe")
    _connection, account_id = await harness.paper_account(user)
    params = {"start": start} | ({"end": end} if end else {})
    response = await harness.client.get(
        f"/v1/accounts/{account_id}/transactions", params=params, headers=harness.auth(user)
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/v1/orders/ord_x", "DELETE, GET, PATCH"),
        ("POST", "/v1/accounts", "GET"),
        ("DELETE", "/v1/accounts/acc_x/orders", "GET, POST"),
        ("POST", "/healthz", "GET"),
    ],
)
async def test_a_405_lists_every_method_of_the_path(
    harness: Harness, method: str, path: str, allowed: str
) -> None:
    response = await harness.client.request(method, path, headers=harness.auth(new_user()))
    assert response.status_code == 405
    assert response.headers["allow"] == allowed


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
async def test_a_json_body_not_in_utf_8_is_refused(harness: Harness, encoding: str) -> None:
    user = new_user("probe")
    body = '{"broker": "paper"}'.encode(encoding)
    response = await harness.client.post(
        "/v1/connections",
        content=body,
        headers=harness.auth(user, **{"Content-Type": "application/json"}),
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "malformed_json"
    listed = await harness.client.get("/v1/connections", headers=harness.auth(user))
    assert listed.json()["items"] == []
