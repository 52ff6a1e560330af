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
from app.brokers.base import OptionRight, OrderRequest, OrderSide, OrderType, TimeInForce
from tests.brokers.alpaca.options import combo, contract, iron_condor_legs, single
from tests.brokers.alpaca.support import Running, running_fake
from tests.brokers.alpaca.test_adapter import limit_buy

SPEC = Path(__file__).resolve().parents[4] / "shared" / "specs" / "alpaca-trading-api.json"
DATA_SPEC = SPEC.with_name("alpaca-market-data-api.json")

pytestmark = pytest.mark.skipif(
    not SPEC.exists() or not DATA_SPEC.exists(),
    reason=f"the official Alpaca specs are not at {SPEC.parent}",
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


def spec(path: Path = SPEC) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def validator_for(schema: dict[str, Any], path: Path = SPEC) -> Draft202012Validator:
    document = _json_schema(spec(path))
    return Draft202012Validator({**schema, "components": document["components"]})


def response_schema(
    path: str, method: str, status: str = "200", document: Path = SPEC
) -> dict[str, Any]:
    operation = spec(document)["paths"][path][method]
    content = operation["responses"][status]["content"]["application/json"]
    return dict(_json_schema(content["schema"]))


def check(body: object, schema: dict[str, Any], document: Path = SPEC) -> None:
    found = validator_for(schema, document).iter_errors(body)
    errors = sorted(found, key=lambda e: list(e.path))
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


# --- options -------------------------------------------------------------------------------
#
# The spec's ``MultilegOptionsOrderResponse`` example itself breaks its ``Order`` schema: the
# parent's ``asset_class``, ``asset_id``, ``symbol`` and ``side`` are "" and each leg's
# ``type`` is "" (none of those enums/formats allow ""). The fake follows the example (what
# Alpaca sends; alpaca-py's models make those fields optional and read "" as None), so an
# mleg order is checked against the schema with exactly those "" values allowed.
MLEG_BLANKS = {("asset_class",), ("asset_id",), ("symbol",), ("side",), ("position_intent",)}
LEG_BLANKS = {("type",), ("order_type",)}


def check_order(body: dict[str, Any], schema: dict[str, Any]) -> None:
    validator = validator_for(schema)
    problems = []
    for error in validator.iter_errors(body):
        where = tuple(str(p) for p in error.path)
        blank = error.instance == ""
        if blank and len(where) == 1 and where in MLEG_BLANKS and body.get("order_class") == "mleg":
            continue
        if blank and len(where) == 3 and where[0] == "legs" and (where[2],) in LEG_BLANKS:
            continue
        problems.append(f"{list(error.path)}: {error.message}")
    assert not problems, "\n".join(problems[:10])


def test_the_spec_mleg_example_passes_the_same_check() -> None:
    example = spec()["components"]["examples"]["MultilegOptionsOrderResponse"]["value"]
    check_order(example, response_schema("/v2/orders", "post"))


async def test_option_reads_match_the_specs() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        call = contract(run.fake, OptionRight.call, 1)
        await adapter.place_order(run.account.id, single("bg-spec-o", call.symbol))
        mleg = await adapter.place_order(
            run.account.id, combo("bg-spec-m", iron_condor_legs(run.fake))
        )
        await run.fake.match()
        async with client(run) as http:
            contracts = await http.get(
                "/v2/options/contracts",
                params={"underlying_symbols": "AAPL", "expiration_date": str(call.expiration)},
            )
            assert contracts.status_code == 200
            assert len(contracts.json()["option_contracts"]) == 82
            check(contracts.json(), response_schema("/v2/options/contracts", "get"))
            one = await http.get(f"/v2/options/contracts/{call.symbol}")
            check(one.json(), response_schema("/v2/options/contracts/{symbol_or_id}", "get"))
            missing = await http.get("/v2/options/contracts/AAPL200117C00100000")
            assert missing.status_code == 404
            check(missing.json(), {"$ref": "#/components/schemas/Error"})
            positions = await http.get("/v2/positions")
            assert {p["asset_class"] for p in positions.json()} == {"us_option"}
            check(positions.json(), response_schema("/v2/positions", "get"))
            nested = await http.get(f"/v2/orders/{mleg.broker_order_id}?nested=true")
            assert len(nested.json()["legs"]) == 4
            check_order(nested.json(), response_schema("/v2/orders/{order_id}", "get"))
            listed = await http.get("/v2/orders?status=all&nested=true")
            for order in listed.json():
                check_order(order, response_schema("/v2/orders/{order_id}", "get"))
            flat = await http.get("/v2/orders?status=all")
            assert all(o["legs"] is None for o in flat.json())  # legs only when nested

            for kind in ("quotes", "trades"):
                latest = await http.get(
                    f"/v1beta1/options/{kind}/latest", params={"symbols": call.symbol}
                )
                assert list(latest.json()[kind]) == [call.symbol]
                schema = response_schema(
                    f"/v1beta1/options/{kind}/latest", "get", document=DATA_SPEC
                )
                check(latest.json(), schema, DATA_SPEC)
            snapshots = await http.get(
                "/v1beta1/options/snapshots/AAPL", params={"type": "put", "limit": "5"}
            )
            assert snapshots.status_code == 200
            assert len(snapshots.json()["snapshots"]) == 5
            assert snapshots.json()["next_page_token"]
            check(
                snapshots.json(),
                response_schema(
                    "/v1beta1/options/snapshots/{underlying_symbol}", "get", document=DATA_SPEC
                ),
                DATA_SPEC,
            )


async def test_option_writes_match_the_spec() -> None:
    request_schema = spec()["paths"]["/v2/orders"]["post"]["requestBody"]
    body_schema = _json_schema(request_schema["content"]["application/json"]["schema"])
    async with running_fake() as run:
        async with client(run) as http:
            call = contract(run.fake, OptionRight.call, 0)
            single_body = mapping.order_to_wire(
                single("bg-spec-ow", call.symbol, order_type=OrderType.limit, limit_price="0.05")
            )
            check(single_body, body_schema)
            placed = await http.post("/v2/orders", json=single_body)
            assert placed.status_code == 200, placed.text
            assert placed.json()["asset_class"] == "us_option"
            check_order(placed.json(), response_schema("/v2/orders", "post"))

            mleg_body = mapping.order_to_wire(
                combo("bg-spec-mw", iron_condor_legs(run.fake), limit_price="900")
            )
            check(mleg_body, body_schema)
            mleg = await http.post("/v2/orders", json=mleg_body)
            assert mleg.status_code == 200, mleg.text
            assert mleg.json()["limit_price"] == "-900"
            check_order(mleg.json(), response_schema("/v2/orders", "post"))
            leg_id = mleg.json()["legs"][0]["id"]
            for answer in (
                await http.delete(f"/v2/orders/{leg_id}"),
                await http.patch(f"/v2/orders/{leg_id}", json={"qty": "2"}),
            ):
                assert answer.status_code == 422
                assert "individual legs of a mleg order" in answer.json()["message"]
                check(answer.json(), {"$ref": "#/components/schemas/Error"})
            replaced = await http.patch(
                f"/v2/orders/{mleg.json()['id']}", json={"qty": "2", "limit_price": "-800"}
            )
            assert replaced.status_code == 200, replaced.text
            check_order(replaced.json(), response_schema("/v2/orders/{order_id}", "patch"))
            canceled = await http.delete(f"/v2/orders/{replaced.json()['id']}")
            assert canceled.status_code == 204
            bad = dict(mleg_body, legs=mleg_body["legs"][:1], client_order_id="bg-spec-1leg")
            refused = await http.post("/v2/orders", json=bad)
            assert refused.status_code == 422
            check(refused.json(), {"$ref": "#/components/schemas/Error"})


# --- the routes alpaca-py calls beyond the gateway's own (issue 15 item 9) ------------------


async def test_bulk_cancel_close_configurations_and_clock_match_the_spec() -> None:
    error_schema = {"$ref": "#/components/schemas/Error"}
    async with running_fake() as run:
        adapter = run.adapter()
        resting = await adapter.place_order(run.account.id, limit_buy("bg-spec-bulk"))
        for n, symbol in enumerate(("AAPL", "MSFT")):
            await adapter.place_order(
                run.account.id,
                OrderRequest(
                    f"bg-spec-pos-{n}",
                    symbol,
                    OrderSide.buy,
                    Decimal(4),
                    OrderType.market,
                    TimeInForce.day,
                ),
            )
        await run.fake.match()
        async with client(run) as http:
            configurations = await http.get("/v2/account/configurations")
            assert configurations.status_code == 200
            check(configurations.json(), response_schema("/v2/account/configurations", "get"))
            clock = await http.get("/v2/clock")
            assert clock.status_code == 200
            check(clock.json(), response_schema("/v2/clock", "get"))

            half = await http.delete("/v2/positions/AAPL", params={"percentage": "50"})
            assert half.status_code == 200, half.text
            assert (half.json()["side"], half.json()["qty"]) == ("sell", "2")
            check(half.json(), response_schema("/v2/positions/{symbol_or_asset_id}", "delete"))
            too_much = await http.delete("/v2/positions/AAPL", params={"qty": "9"})
            assert too_much.status_code == 403
            check(too_much.json(), error_schema)

            canceled = await http.delete("/v2/orders")
            assert canceled.status_code == 207
            ids = {c["id"] for c in canceled.json()}
            assert resting.broker_order_id in ids
            check(canceled.json(), response_schema("/v2/orders", "delete", "207"))
            assert (await http.get("/v2/orders")).json() == []

            closed = await http.delete("/v2/positions", params={"cancel_orders": "true"})
            assert closed.status_code == 207
            assert {c["symbol"] for c in closed.json()} == {"AAPL", "MSFT"}
            check(closed.json(), response_schema("/v2/positions", "delete", "207"))

            for unknown in (await http.get("/v2/nowhere"), await http.put("/v2/clock")):
                assert unknown.status_code in (404, 405)
                assert unknown.headers["content-type"].startswith("application/json")
                check(unknown.json(), error_schema)


async def test_order_list_filters() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        first = await adapter.place_order(run.account.id, limit_buy("bg-f-1"))
        second = await adapter.place_order(
            run.account.id,
            OrderRequest(
                "bg-f-2",
                "BTC-USD",
                OrderSide.buy,
                Decimal("0.01"),
                OrderType.limit,
                TimeInForce.gtc,
                limit_price=Decimal(1000),
            ),
        )
        third = await adapter.place_order(run.account.id, limit_buy("bg-f-3", symbol="MSFT"))
        async with client(run) as http:

            async def ids(**params: str) -> list[str]:
                answer = await http.get("/v2/orders", params={"direction": "asc", **params})
                assert answer.status_code == 200, answer.text
                return [o["id"] for o in answer.json()]

            all_ids = [first.broker_order_id, second.broker_order_id, third.broker_order_id]
            assert await ids() == all_ids
            assert await ids(side="sell") == []
            assert await ids(side="buy") == all_ids
            assert await ids(asset_class="crypto") == [second.broker_order_id]
            assert await ids(asset_class="us_equity") == [all_ids[0], all_ids[2]]
            assert await ids(after_order_id=first.broker_order_id) == all_ids[1:]
            assert await ids(before_order_id=third.broker_order_id) == all_ids[:2]


async def test_notional_crypto_and_exercise_bodies_match_the_spec() -> None:
    request_schema = spec()["paths"]["/v2/orders"]["post"]["requestBody"]
    body_schema = _json_schema(request_schema["content"]["application/json"]["schema"])
    async with running_fake() as run:
        async with client(run) as http:
            for body in (
                mapping.order_to_wire(
                    OrderRequest(
                        "bg-spec-n",
                        "AAPL",
                        OrderSide.buy,
                        Decimal(0),
                        OrderType.market,
                        TimeInForce.day,
                        notional=Decimal("500"),
                    )
                ),
                mapping.order_to_wire(
                    OrderRequest(
                        "bg-spec-c",
                        "BTC-USD",
                        OrderSide.buy,
                        Decimal("0.001"),
                        OrderType.market,
                        TimeInForce.ioc,
                    )
                ),
            ):
                check(body, body_schema)
                placed = await http.post("/v2/orders", json=body)
                assert placed.status_code == 200, placed.text
                check(placed.json(), response_schema("/v2/orders", "post"))
            notional = await http.get("/v2/orders:by_client_order_id?client_order_id=bg-spec-n")
            assert (notional.json()["qty"], notional.json()["notional"]) == (None, "500")
            both = await http.post(
                "/v2/orders",
                json={**body, "client_order_id": "bg-spec-both", "qty": "1", "notional": "5"},
            )
            assert both.status_code == 422
            nothing = await http.post("/v2/positions/AAPL250620C00100000/exercise")
            assert nothing.status_code == 403
            check(nothing.json(), {"$ref": "#/components/schemas/Error"})
            dne = await http.post("/v2/positions/AAPL250620C00100000/do-not-exercise")
            assert dne.status_code == 403


async def test_option_lifecycle_activities_match_the_spec() -> None:
    async with running_fake(cash="1000000") as run:
        adapter = run.adapter()
        call = contract(run.fake, OptionRight.call, 1)
        put = contract(run.fake, OptionRight.call, 2)
        for n, symbol in enumerate((call.symbol, put.symbol)):
            await adapter.place_order(run.account.id, single(f"bg-spec-l{n}", symbol))
        await run.fake.match()
        async with client(run) as http:
            exercised = await http.post(f"/v2/positions/{call.symbol}/exercise")
            assert (exercised.status_code, exercised.content) == (200, b"")
        run.fake.settle_option(run.account.key_id, put.symbol, "OPEXP")
        async with client(run) as http:
            activities = await http.get("/v2/account/activities")
            kinds = [a["activity_type"] for a in activities.json()]
            assert {"OPEXC", "OPTRD", "OPEXP"} <= set(kinds)
            check(activities.json(), response_schema("/v2/account/activities", "get"))
