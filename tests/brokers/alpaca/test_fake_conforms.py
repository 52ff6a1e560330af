"""The fake's answers (and the adapter's requests) against Alpaca's official OpenAPI spec.

The spec is read from ../shared/specs/alpaca-trading-api.json (see that folder's README);
the test is skipped, with a message, where the folder is absent. OpenAPI 3.0 ``nullable``
is turned into JSON Schema's ``["type", "null"]`` and ``$ref``s resolve inside the document.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from app.brokers.alpaca import mapping
from app.brokers.base import OrderRequest, OrderSide, OrderType, TimeInForce
from tests.brokers.alpaca.support import Running, running_fake
from tests.brokers.alpaca.test_adapter import limit_buy

SPEC = Path(__file__).resolve().parents[4] / "shared" / "specs" / "alpaca-trading-api.json"

pytestmark = pytest.mark.skipif(
    not SPEC.exists(), reason=f"the official Alpaca spec is not at {SPEC}"
)


def _json_schema(node: Any) -> Any:
    if isinstance(node, dict):
        converted = {k: _json_schema(v) for k, v in node.items() if k not in ("example",)}
        if converted.pop("nullable", False):
            if "type" in converted:
                converted["type"] = [converted["type"], "null"]
            elif "$ref" in converted:
                converted = {"anyOf": [{"$ref": converted.pop("$ref")}, {"type": "null"}]}
            if "enum" in converted:
                converted["enum"] = [*converted["enum"], None]
        return converted
    if isinstance(node, list):
        return [_json_schema(v) for v in node]
    return node


def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SPEC.read_text())
    return loaded


def validator_for(schema: dict[str, Any]) -> Draft202012Validator:
    document = _json_schema(spec())
    return Draft202012Validator({**schema, "components": document["components"]})


def response_schema(path: str, method: str, status: str = "200") -> dict[str, Any]:
    operation = spec()["paths"][path][method]
    content = operation["responses"][status]["content"]["application/json"]
    return dict(_json_schema(content["schema"]))


def check(body: object, schema: dict[str, Any]) -> None:
    errors = sorted(validator_for(schema).iter_errors(body), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])


def client(run: Running, *, good: bool = True) -> httpx.AsyncClient:
    secret = run.account.secret if good else "wrong"
    return httpx.AsyncClient(
        base_url=run.url,
        headers={"APCA-API-KEY-ID": run.account.key_id, "APCA-API-SECRET-KEY": secret},
    )


async def test_reads_match_the_spec() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        placed = await adapter.place_order(run.account.id, limit_buy("bg-spec-1"))
        await adapter.place_order(
            run.account.id,
            OrderRequest(
                "bg-spec-2", "MSFT", OrderSide.buy, Decimal(2), OrderType.market, TimeInForce.day
            ),
        )
        await run.fake.match()
        async with client(run) as http:
            cases = [
                ("/v2/account", "get", "/v2/account"),
                ("/v2/positions", "get", "/v2/positions"),
                ("/v2/positions/MSFT", "get", "/v2/positions/{symbol_or_asset_id}"),
                ("/v2/orders?status=all", "get", "/v2/orders"),
                (f"/v2/orders/{placed.broker_order_id}", "get", "/v2/orders/{order_id}"),
                (
                    "/v2/orders:by_client_order_id?client_order_id=bg-spec-1",
                    "get",
                    "/v2/orders:by_client_order_id",
                ),
                ("/v2/assets/AAPL", "get", "/v2/assets/{symbol_or_asset_id}"),
                ("/v2/account/activities", "get", "/v2/account/activities"),
            ]
            for url, method, template in cases:
                answer = await http.request(method.upper(), url)
                assert answer.status_code == 200, (url, answer.text)
                check(answer.json(), response_schema(template, method))


async def test_writes_match_the_spec() -> None:
    async with running_fake() as run:
        async with client(run) as http:
            body = mapping.order_to_wire(limit_buy("bg-spec-w"))
            request_schema = spec()["paths"]["/v2/orders"]["post"]["requestBody"]
            check(body, _json_schema(request_schema["content"]["application/json"]["schema"]))
            placed = await http.post("/v2/orders", json=body)
            assert placed.status_code == 200
            check(placed.json(), response_schema("/v2/orders", "post"))
            order_id = placed.json()["id"]
            replaced = await http.patch(f"/v2/orders/{order_id}", json={"limit_price": "99"})
            assert replaced.status_code == 200
            check(replaced.json(), response_schema("/v2/orders/{order_id}", "patch"))
            canceled = await http.delete(f"/v2/orders/{replaced.json()['id']}")
            assert (canceled.status_code, canceled.content) == (204, b"")


async def test_error_bodies_match_the_spec_error_schema() -> None:
    error_schema = {"$ref": "#/components/schemas/Error"}
    async with running_fake(cash="10") as run:
        async with client(run, good=False) as bad, client(run) as http:
            unauthorized = await bad.get("/v2/account")
            assert unauthorized.status_code == 401
            assert unauthorized.json() == {"code": 40110000, "message": "request is not authorized"}
            poor = await http.post("/v2/orders", json=mapping.order_to_wire(limit_buy("bg-e")))
            assert poor.status_code == 403
            missing = await http.get("/v2/orders/6f1b9c8e-0000-4000-8000-000000000000")
            assert missing.status_code == 404
            run.fake.faults.rate_limited = 1
            limited = await http.get("/v2/account")
            assert limited.status_code == 429
            assert limited.headers["Retry-After"] == "7"
            for answer in (unauthorized, poor, missing, limited):
                check(answer.json(), error_schema)
