"""The fake's answers (and the adapter's requests) against SnapTrade's official OpenAPI spec.

The spec is read from ``shared/specs/snaptrade-api.yaml`` next to the checkout (the first
parent folder holding it; see that folder's README); the test is skipped, with a message,
where it is absent. OpenAPI 3.0 ``nullable`` becomes JSON Schema's ``anyOf [..., null]``
and ``$ref``s resolve inside the document.
"""

from __future__ import annotations

import functools
import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from jsonschema import Draft202012Validator

from app.brokers.base import OrderChanges, OrderRequest, OrderSide, OrderType, TimeInForce
from app.brokers.snaptrade import auth, mapping, options
from tests.brokers.snaptrade.support import Running, running_fake


def _find_spec() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "shared" / "specs" / "snaptrade-api.yaml"
        if candidate.exists():
            return candidate
    return here.parents[4] / "shared" / "specs" / "snaptrade-api.yaml"


SPEC = _find_spec()

pytestmark = pytest.mark.skipif(
    not SPEC.exists(), reason=f"the official SnapTrade spec is not at {SPEC}"
)

_DROP = frozenset({"example", "examples", "discriminator", "deprecated", "xml"})


def _json_schema(node: Any) -> Any:
    if isinstance(node, dict):
        converted = {
            k: _json_schema(v) for k, v in node.items() if k not in _DROP and not k.startswith("x-")
        }
        if converted.pop("nullable", False):
            return {"anyOf": [converted, {"type": "null"}]}
        return converted
    if isinstance(node, list):
        return [_json_schema(v) for v in node]
    return node


@functools.cache
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SPEC.read_text())
    return loaded


@functools.cache
def components() -> dict[str, Any]:
    converted: dict[str, Any] = _json_schema(spec()["components"])
    return converted


def check(body: object, schema: dict[str, Any]) -> None:
    validator = Draft202012Validator({**schema, "components": components()})
    found = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
    assert not found, "\n".join(f"{list(e.path)}: {e.message}" for e in found[:10])


def response_schema(path: str, method: str, status: str = "200") -> dict[str, Any]:
    operation = spec()["paths"][path][method]
    content = operation["responses"][status]["content"]["application/json"]
    return dict(_json_schema(content["schema"]))


def request_schema(path: str, method: str) -> dict[str, Any]:
    body = spec()["paths"][path][method]["requestBody"]
    if "$ref" in body:
        body = spec()["components"]["requestBodies"][body["$ref"].rsplit("/", 1)[1]]
    return dict(_json_schema(body["content"]["application/json"]["schema"]))


def schema(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def client(run: Running, *, consumer_key: str | None = None) -> httpx.AsyncClient:
    key = auth.PartnerKey(run.fake.client_id, consumer_key or run.fake.consumer_key)
    return httpx.AsyncClient(base_url=run.url, auth=auth.SignedRequests(key))


def user(run: Running) -> dict[str, str]:
    return {"userId": run.user.user_id, "userSecret": run.user.secret}


def order(**changes: Any) -> OrderRequest:
    values: dict[str, Any] = {
        "client_order_id": "bg-spec",
        "symbol": "AAPL",
        "side": OrderSide.buy,
        "quantity": Decimal(2),
        "order_type": OrderType.limit,
        "time_in_force": TimeInForce.gtc,
        "limit_price": Decimal("1.5"),
    }
    values.update(changes)
    return OrderRequest(**values)


async def test_reads_match_the_spec() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        account = run.account.id
        resting = await adapter.place_order(account, order())
        await adapter.place_order(
            account,
            order(order_type=OrderType.market, limit_price=None, time_in_force=TimeInForce.day),
        )
        await run.fake.match()
        auth_id = run.authorization.id
        async with client(run) as http:
            cases = [
                ("/", "get", "/", {}, None),
                ("/snapTrade/listUsers", "get", "/snapTrade/listUsers", {}, None),
                ("/authorizations", "get", "/authorizations", user(run), None),
                (
                    f"/authorizations/{auth_id}",
                    "get",
                    "/authorizations/{authorizationId}",
                    user(run),
                    None,
                ),
                ("/accounts", "get", "/accounts", user(run), None),
                (f"/accounts/{account}", "get", "/accounts/{accountId}", user(run), None),
                (
                    f"/accounts/{account}/balances",
                    "get",
                    "/accounts/{accountId}/balances",
                    user(run),
                    None,
                ),
                (
                    f"/accounts/{account}/positions/all",
                    "get",
                    "/accounts/{accountId}/positions/all",
                    user(run),
                    None,
                ),
                (
                    f"/accounts/{account}/holdings",
                    "get",
                    "/accounts/{accountId}/holdings",
                    user(run),
                    None,
                ),
                (
                    f"/accounts/{account}/orders",
                    "get",
                    "/accounts/{accountId}/orders",
                    {**user(run), "state": "all"},
                    None,
                ),
                (
                    f"/accounts/{account}/recentOrders",
                    "get",
                    "/accounts/{accountId}/recentOrders",
                    {**user(run), "only_executed": "false"},
                    None,
                ),
                (
                    f"/accounts/{account}/orders/details",
                    "post",
                    "/accounts/{accountId}/orders/details",
                    user(run),
                    {"brokerage_order_id": resting.broker_order_id},
                ),
                (
                    f"/accounts/{account}/activities",
                    "get",
                    "/accounts/{accountId}/activities",
                    user(run),
                    None,
                ),
                (
                    f"/accounts/{account}/quotes",
                    "get",
                    "/accounts/{accountId}/quotes",
                    {**user(run), "symbols": "AAPL,MSFT", "use_ticker": "true"},
                    None,
                ),
                ("/symbols/AAPL", "get", "/symbols/{query}", {}, None),
            ]
            for url, method, template, params, body in cases:
                answer = await http.request(method.upper(), url, params=params, json=body)
                assert answer.status_code == 200, (url, answer.text)
                check(answer.json(), response_schema(template, method))
                assert answer.headers["X-RateLimit-Limit"] == "250"
                assert answer.headers["X-Request-ID"]
            holdings = await http.get(f"/accounts/{account}/holdings", params=user(run))
            assert len(holdings.json()["positions"]) == 1  # the market order filled


async def test_writes_match_the_spec() -> None:
    async with running_fake() as run:
        account = run.account.id
        async with client(run) as http:
            register = {"userId": "bgw-spec-user"}
            check(register, request_schema("/snapTrade/registerUser", "post"))
            registered = await http.post("/snapTrade/registerUser", json=register)
            check(registered.json(), response_schema("/snapTrade/registerUser", "post"))
            login = {"connectionType": "trade-if-available", "broker": "SCHWAB"}
            check(login, request_schema("/snapTrade/login", "post"))
            portal = await http.post("/snapTrade/login", params=user(run), json=login)
            check(portal.json(), response_schema("/snapTrade/login", "post"))

            symbol = (await http.get("/symbols/AAPL")).json()
            form = mapping.impact_form(account, order(), symbol["id"])
            check(form, request_schema("/trade/impact", "post"))
            impact = await http.post("/trade/impact", params=user(run), json=form)
            assert impact.status_code == 200, impact.text
            check(impact.json(), response_schema("/trade/impact", "post"))
            trade = impact.json()["trade"]["id"]
            check({"wait_to_confirm": True}, request_schema("/trade/{tradeId}", "post"))
            placed = await http.post(
                f"/trade/{trade}", params=user(run), json={"wait_to_confirm": True}
            )
            check(placed.json(), response_schema("/trade/{tradeId}", "post"))

            current = mapping.order_from_wire(mapping.loads(placed.content))
            replace = mapping.replace_form(current, OrderChanges(limit_price=Decimal(2)))
            check(replace, request_schema("/accounts/{accountId}/trading/replace", "post"))
            replaced = await http.post(
                f"/accounts/{account}/trading/replace", params=user(run), json=replace
            )
            check(replaced.json(), response_schema("/accounts/{accountId}/trading/replace", "post"))
            cancel = {"brokerage_order_id": replaced.json()["brokerage_order_id"]}
            check(cancel, request_schema("/accounts/{accountId}/trading/cancel", "post"))
            canceled = await http.post(
                f"/accounts/{account}/trading/cancel", params=user(run), json=cancel
            )
            check(canceled.json(), response_schema("/accounts/{accountId}/trading/cancel", "post"))

            disabled = await http.post(
                f"/authorizations/{run.authorization.id}/disable", params=user(run)
            )
            check(
                disabled.json(),
                response_schema("/authorizations/{authorizationId}/disable", "post"),
            )
            again = await http.post(
                f"/authorizations/{run.authorization.id}/disable", params=user(run)
            )
            assert again.status_code == 402
            check(
                again.json(),
                response_schema("/authorizations/{authorizationId}/disable", "post", "402"),
            )

            secret = {"userId": "bgw-spec-user", "userSecret": registered.json()["userSecret"]}
            check(secret, request_schema("/snapTrade/resetUserSecret", "post"))
            rotated = await http.post("/snapTrade/resetUserSecret", json=secret)
            check(rotated.json(), response_schema("/snapTrade/resetUserSecret", "post"))
            deleted = await http.delete("/snapTrade/deleteUser", params={"userId": "bgw-spec-user"})
            check(deleted.json(), response_schema("/snapTrade/deleteUser", "delete"))


async def test_error_bodies_match_the_spec() -> None:
    async with running_fake(cash="10") as run:
        account = run.account.id
        async with client(run) as http, client(run, consumer_key="wrong") as forged:
            refused = await forged.get("/accounts", params=user(run))
            assert refused.status_code == 401
            assert refused.json() == {
                "detail": "Unable to verify signature sent",
                "status_code": 401,
                "code": "1076",
            }
            check(refused.json(), schema("401FailedRequestResponse"))
            async with httpx.AsyncClient(base_url=run.url) as bare:
                unsigned = await bare.get("/accounts", params=user(run))
            assert unsigned.status_code == 401

            symbol = (await http.get("/symbols/AAPL")).json()["id"]
            form = mapping.impact_form(account, order(limit_price=Decimal(100)), symbol)
            poor = await http.post("/trade/impact", params=user(run), json=form)
            assert poor.status_code == 400
            check(poor.json(), response_schema("/trade/impact", "post", "400"))
            missing = await http.post(
                f"/accounts/{account}/orders/details",
                params=user(run),
                json={"brokerage_order_id": "nope"},
            )
            assert missing.status_code == 404
            check(
                missing.json(),
                response_schema("/accounts/{accountId}/orders/details", "post", "404"),
            )
            unknown = await http.get("/symbols/NOSUCH")
            check(unknown.json(), response_schema("/symbols/{query}", "get", "404"))

            run.fake.faults.rate_limited = 1
            limited = await http.get("/accounts", params=user(run))
            assert limited.status_code == 429
            assert limited.json() == {
                "detail": "Request was throttled. Expected available in 7 seconds.",
                "status_code": 429,
                "code": "0000",
            }
            assert (
                limited.headers["X-RateLimit-Remaining"],
                limited.headers["X-RateLimit-Reset"],
            ) == ("0", "7")
            assert "Retry-After" not in limited.headers
            check(limited.json(), schema("429TooManyRequestsResponse"))

            run.fake.faults.server_errors = 1
            run.fake.faults.server_error_status = 503
            busy = await http.get(f"/accounts/{account}/balances", params=user(run))
            assert busy.status_code == 503
            check(busy.json(), response_schema("/accounts/{accountId}/balances", "get", "503"))


async def test_an_expired_trade_cannot_be_placed() -> None:
    async with running_fake() as run:
        later = [timedelta(0)]
        clock = run.fake.clock
        run.fake.clock = lambda: clock() + later[0]
        async with client(run) as http:
            symbol = (await http.get("/symbols/AAPL")).json()["id"]
            form = mapping.impact_form(run.account.id, order(), symbol)
            trade = (await http.post("/trade/impact", params=user(run), json=form)).json()["trade"]
            later[0] = timedelta(minutes=6)  # "expires after 5 minutes"
            placed = await http.post(f"/trade/{trade['id']}", params=user(run), json={})
            assert placed.status_code == 400
            check(placed.json(), response_schema("/trade/{tradeId}", "post", "400"))
            assert run.fake.order_count(run.account.id) == 0


async def test_webhooks_match_the_spec_and_are_signed() -> None:
    async with running_fake() as run:
        payload = run.fake.webhook_payload(
            "CONNECTION_ADDED",
            run.user.user_id,
            brokerageId=run.authorization.brokerage.id,
            brokerageAuthorizationId=run.authorization.id,
        )
        check(payload, schema("WebhookBase"))
        canonical = json.dumps(payload, separators=(",", ":"), sort_keys=True)
        expected = auth.webhook_signature(run.fake.consumer_key, json.loads(canonical))
        assert run.fake.webhook_signature(payload) == expected


async def test_option_endpoints_match_the_spec() -> None:
    """The option form we send and every option answer of the fake, against the spec:
    impact and placement (``MlegTradeForm``, ``OptionImpact``, ``MlegOrderResponse``), the V2
    order reads, the option quote, option positions, V1 leg records and option activities."""
    from tests.brokers.snaptrade.test_options import (
        contract,
        natural_debit,
        single,
        vertical,
        vertical_legs,
    )

    async with running_fake() as run:
        account = run.account.id
        legs = vertical_legs(run)
        price = (natural_debit(run, legs) * Decimal("1.2")).quantize(Decimal("0.01"))
        form = options.mleg_form(vertical(legs, price))
        single_form = options.mleg_form(single(contract(run, -4).symbol))
        trading = "/accounts/{accountId}/trading/options"
        for sent in (form, single_form):
            check(sent, request_schema(trading, "post"))
            check(sent, request_schema(trading + "/impact", "post"))
        async with client(run) as http:
            impact = await http.post(
                f"/accounts/{account}/trading/options/impact", params=user(run), json=form
            )
            assert impact.status_code == 200, impact.text
            check(impact.json(), response_schema(trading + "/impact", "post"))
            placed = await http.post(
                f"/accounts/{account}/trading/options", params=user(run), json=form
            )
            assert placed.status_code == 200, placed.text
            check(placed.json(), response_schema(trading, "post"))
            resting = await http.post(
                f"/accounts/{account}/trading/options", params=user(run), json=single_form
            )
            check(resting.json(), response_schema(trading, "post"))
            await run.fake.match()
            combo_id = placed.json()["brokerage_order_id"]
            single_id = resting.json()["brokerage_order_id"]
            call = contract(run, 0)
            cases = [
                (
                    f"/accounts/{account}/orders/details/v2/{combo_id}",
                    "/accounts/{accountId}/orders/details/v2/{brokerageOrderId}",
                    user(run),
                ),
                (
                    f"/accounts/{account}/orders/v2",
                    "/accounts/{accountId}/orders/v2",
                    {**user(run), "state": "all"},
                ),
                (
                    f"/accounts/{account}/quotes/options",
                    "/accounts/{accountId}/quotes/options",
                    {**user(run), "symbol": call.occ_padded},
                ),
                (
                    f"/accounts/{account}/positions/all",
                    "/accounts/{accountId}/positions/all",
                    user(run),
                ),
                (f"/accounts/{account}/holdings", "/accounts/{accountId}/holdings", user(run)),
                (
                    f"/accounts/{account}/orders",
                    "/accounts/{accountId}/orders",
                    {**user(run), "state": "all"},
                ),
                (
                    f"/accounts/{account}/activities",
                    "/accounts/{accountId}/activities",
                    user(run),
                ),
            ]
            for url, template, params in cases:
                answer = await http.get(url, params=params)
                assert answer.status_code == 200, (url, answer.text)
                check(answer.json(), response_schema(template, "get"))
            positions = (
                await http.get(f"/accounts/{account}/positions/all", params=user(run))
            ).json()["results"]
            assert sorted(p["units"] for p in positions) == ["-2", "2"]
            holdings = (await http.get(f"/accounts/{account}/holdings", params=user(run))).json()
            assert len(holdings["option_positions"]) == 2
            detail = await http.post(
                f"/accounts/{account}/orders/details",
                params=user(run),
                json={"brokerage_order_id": single_id},
            )
            check(detail.json(), response_schema("/accounts/{accountId}/orders/details", "post"))
            assert detail.json()["option_symbol"]["ticker"] == contract(run, -4).occ_padded
            v2 = await http.get(
                f"/accounts/{account}/orders/details/v2/{single_id}", params=user(run)
            )
            current = options.order_v2_from_wire(mapping.loads(v2.content))
            replace = mapping.replace_form(current, OrderChanges(limit_price=Decimal("0.02")))
            check(replace, request_schema("/accounts/{accountId}/trading/replace", "post"))
            replaced = await http.post(
                f"/accounts/{account}/trading/replace", params=user(run), json=replace
            )
            assert replaced.status_code == 200, replaced.text
            check(replaced.json(), response_schema("/accounts/{accountId}/trading/replace", "post"))
            canceled = await http.post(
                f"/accounts/{account}/trading/cancel",
                params=user(run),
                json={"brokerage_order_id": replaced.json()["brokerage_order_id"]},
            )
            check(canceled.json(), response_schema("/accounts/{accountId}/trading/cancel", "post"))
            activity = run.fake.record_option_event(
                account, "OPTIONEXPIRATION", contract(run, 5), Decimal(1)
            )
            check(activity, schema("AccountUniversalActivity"))

            bad = {**form, "legs": form["legs"] * 3}  # six legs
            refused = await http.post(
                f"/accounts/{account}/trading/options/impact", params=user(run), json=bad
            )
            assert refused.status_code == 400
            check(refused.json(), response_schema(trading + "/impact", "post", "400"))
            missing = await http.get(
                f"/accounts/{account}/orders/details/v2/nope", params=user(run)
            )
            assert missing.status_code == 404
            check(
                missing.json(),
                response_schema(
                    "/accounts/{accountId}/orders/details/v2/{brokerageOrderId}", "get", "404"
                ),
            )
