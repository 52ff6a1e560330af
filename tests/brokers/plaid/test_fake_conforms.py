"""The fake Plaid answers what Plaid's own client accepts.

Plaid's OpenAPI file is not among the specs in ``../shared/specs``; its MIT-licensed Python
client ``plaid-python`` (a dev dependency, generated from that file) carries a model per
schema with the required fields, types and enums. Every answer of the fake, success and
error, is deserialized here the way ``plaid.api_client.ApiClient.deserialize`` does it
(``validate_and_convert_types`` with type checking on): a missing required field, a wrong
type or an unknown enum value fails the test. The client is newer (46.0.0, 2026-10) than the
spec copy the fake was first written from (2026-06); where they differ (``Security.figi``,
``Institution.connection_availability``) the fake follows the client.
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest
from plaid.configuration import Configuration
from plaid.exceptions import ApiTypeError, ApiValueError
from plaid.model.accounts_get_response import AccountsGetResponse
from plaid.model.institutions_get_by_id_response import InstitutionsGetByIdResponse
from plaid.model.investments_holdings_get_response import InvestmentsHoldingsGetResponse
from plaid.model.investments_transactions_get_response import (
    InvestmentsTransactionsGetResponse,
)
from plaid.model.item_get_response import ItemGetResponse
from plaid.model.item_public_token_exchange_response import ItemPublicTokenExchangeResponse
from plaid.model.item_remove_response import ItemRemoveResponse
from plaid.model.link_token_create_response import LinkTokenCreateResponse
from plaid.model.plaid_error import PlaidError
from plaid.model.sandbox_public_token_create_response import SandboxPublicTokenCreateResponse
from plaid.model.webhook_verification_key_get_response import (
    WebhookVerificationKeyGetResponse,
)
from plaid.model_utils import ModelNormal, ModelSimple, validate_and_convert_types

from app.brokers.base import OptionContract, OptionRight
from tests.brokers.plaid.support import Running, running_fake


def conforms(body: Any, model: type) -> Any:
    """Deserialize as the official client does, then check every enum value; raises on any
    disagreement (the client itself lets unknown enum values through, for forward
    compatibility, so the enums are checked here against its ``allowed_values``)."""
    parsed = validate_and_convert_types(
        body, (model,), ["received_data"], True, True, configuration=Configuration()
    )
    strict_enums(parsed)
    return parsed


def strict_enums(value: Any, path: str = "") -> None:
    if isinstance(value, ModelSimple):
        allowed = getattr(value, "allowed_values", {}).get(("value",))
        if allowed and value.value not in allowed.values():
            raise ApiValueError(f"{path}: {value.value!r} is not one of {sorted(allowed.values())}")
    elif isinstance(value, ModelNormal):
        for name in value.to_dict():
            strict_enums(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            strict_enums(item, f"{path}[{index}]")


async def post(run: Running, path: str, **body: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=run.url) as client:
        return await client.post(
            path, json={"client_id": run.fake.client_id, "secret": run.fake.secret, **body}
        )


def seeded(run: Running) -> None:
    run.fake.hold(run.account, "AAPL", "10", "190.25", cost_basis="1500")
    run.fake.hold(run.account, "VTSAX", "2", "120", kind="mutual fund")
    run.fake.hold(run.account, "DOGE", "100", "0.14", kind="cryptocurrency")
    call = OptionContract("AAPL", "AAPL", date(2027, 1, 15), OptionRight.call, Decimal("172.5"))
    run.fake.hold_option(run.account, call, -2, "7.25", cost_basis="-1300")


async def test_every_success_answer_is_what_plaids_client_reads() -> None:
    async with running_fake() as run:
        seeded(run)
        link = await post(
            run,
            "/link/token/create",
            client_name="Brokerage Gateway",
            language="en",
            country_codes=["US"],
            user={"client_user_id": "alice"},
            products=["investments"],
        )
        conforms(link.json(), LinkTokenCreateResponse)
        sandbox = await post(
            run,
            "/sandbox/public_token/create",
            institution_id="ins_109508",
            initial_products=["investments"],
        )
        public = conforms(sandbox.json(), SandboxPublicTokenCreateResponse).public_token
        exchanged = await post(run, "/item/public_token/exchange", public_token=public)
        token = conforms(exchanged.json(), ItemPublicTokenExchangeResponse).access_token
        checks = [
            ("/accounts/get", {}, AccountsGetResponse),
            ("/investments/holdings/get", {}, InvestmentsHoldingsGetResponse),
            (
                "/investments/transactions/get",
                {"start_date": "2020-01-01", "end_date": "2030-01-01"},
                InvestmentsTransactionsGetResponse,
            ),
            ("/item/get", {}, ItemGetResponse),
        ]
        for path, extra, model in checks:
            answer = await post(run, path, access_token=token, **extra)
            assert answer.status_code == 200, (path, answer.text)
            conforms(answer.json(), model)
        holdings = conforms(
            (await post(run, "/investments/holdings/get", access_token=token)).json(),
            InvestmentsHoldingsGetResponse,
        )
        assert {str(s.type) for s in holdings.securities} >= {
            "equity",
            "mutual fund",
            "cash",
            "derivative",
        }
        [option] = [s for s in holdings.securities if s.option_contract is not None]
        assert str(option.option_contract.contract_type) == "call"
        assert option.option_contract.underlying_security_ticker == "AAPL"
        institution = await post(
            run, "/institutions/get_by_id", institution_id="ins_109508", country_codes=["US"]
        )
        conforms(institution.json(), InstitutionsGetByIdResponse)
        key = await post(run, "/webhook_verification_key/get", key_id=run.fake.kid)
        conforms(key.json(), WebhookVerificationKeyGetResponse)
        removed = await post(run, "/item/remove", access_token=token)
        conforms(removed.json(), ItemRemoveResponse)


async def test_every_error_answer_is_plaids_error_shape() -> None:
    async with running_fake() as run:
        item, credentials = run.link()
        answers = [
            await post(run, "/accounts/get", access_token="access-sandbox-nope"),
            await post(run, "/item/public_token/exchange", public_token="public-sandbox-nope"),
        ]
        run.fake.require_login(item)
        answers.append(await post(run, "/accounts/get", access_token=credentials["access_token"]))
        run.fake.faults.rate_limited = 1
        answers.append(await post(run, "/accounts/get", access_token="x"))
        run.fake.faults.server_errors = 1
        answers.append(await post(run, "/accounts/get", access_token="x"))
        async with httpx.AsyncClient(base_url=run.url) as client:
            answers.append(
                await client.post("/accounts/get", json={"client_id": "x", "secret": "y"})
            )
        codes = []
        for answer in answers:
            error = conforms(answer.json(), PlaidError)
            assert answer.json()["status"] == answer.status_code
            codes.append((answer.status_code, str(error.error_type), error.error_code))
        assert codes == [
            (400, "INVALID_INPUT", "INVALID_ACCESS_TOKEN"),
            (400, "INVALID_INPUT", "INVALID_PUBLIC_TOKEN"),
            (400, "ITEM_ERROR", "ITEM_LOGIN_REQUIRED"),
            (429, "RATE_LIMIT_EXCEEDED", "ACCOUNTS_LIMIT"),
            (500, "API_ERROR", "INTERNAL_SERVER_ERROR"),
            (400, "INVALID_INPUT", "INVALID_API_KEYS"),
        ]


def test_the_check_can_fail() -> None:
    """The validation is strict: a missing field, a wrong type, an unknown enum all fail."""
    good = {
        "accounts": [
            {
                "account_id": "a",
                "balances": {
                    "available": 1,
                    "current": 1,
                    "iso_currency_code": "USD",
                    "limit": None,
                    "unofficial_currency_code": None,
                },
                "mask": "0000",
                "name": "n",
                "official_name": None,
                "type": "investment",
                "subtype": "ira",
            }
        ],
        "item": {
            "item_id": "i",
            "webhook": "",
            "error": None,
            "available_products": [],
            "billed_products": [],
            "consent_expiration_time": None,
            "update_type": "background",
        },
        "request_id": "r",
    }
    conforms(json.loads(json.dumps(good)), AccountsGetResponse)
    missing = json.loads(json.dumps(good))
    del missing["accounts"][0]["mask"]
    wrong_type = json.loads(json.dumps(good))
    wrong_type["accounts"][0]["balances"]["current"] = "1"
    bad_enum = json.loads(json.dumps(good))
    bad_enum["accounts"][0]["type"] = "savingsish"
    for body in (missing, wrong_type, bad_enum):
        with pytest.raises((ApiTypeError, ApiValueError, TypeError)):
            conforms(body, AccountsGetResponse)
