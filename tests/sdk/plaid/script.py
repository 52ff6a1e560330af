"""plaid-python against the fake Plaid (run under the SDK's own interpreter).

Each call goes through the SDK's request models and deserialises the fake's answer into the
SDK's response models (``_check_return_type``, the SDK's default), so a body missing a
required field or carrying a wrong type fails here as it would against Plaid. Prints one JSON
object (each call's result or error) on its last line.
"""

import json
import os
from datetime import UTC, datetime, timedelta

import plaid
from plaid.api import plaid_api
from plaid.model.accounts_balance_get_request import AccountsBalanceGetRequest
from plaid.model.accounts_get_request import AccountsGetRequest
from plaid.model.country_code import CountryCode
from plaid.model.investments_holdings_get_request import InvestmentsHoldingsGetRequest
from plaid.model.investments_transactions_get_request import InvestmentsTransactionsGetRequest
from plaid.model.investments_transactions_get_request_options import (
    InvestmentsTransactionsGetRequestOptions,
)
from plaid.model.item_get_request import ItemGetRequest
from plaid.model.item_public_token_exchange_request import ItemPublicTokenExchangeRequest
from plaid.model.item_remove_request import ItemRemoveRequest
from plaid.model.link_token_create_request import LinkTokenCreateRequest
from plaid.model.link_token_create_request_user import LinkTokenCreateRequestUser
from plaid.model.products import Products
from plaid.model.sandbox_public_token_create_request import SandboxPublicTokenCreateRequest

configuration = plaid.Configuration(
    host=os.environ["PLAID_URL"],
    api_key={"clientId": os.environ["PLAID_CLIENT_ID"], "secret": os.environ["PLAID_SECRET"]},
)
client = plaid_api.PlaidApi(plaid.ApiClient(configuration))
results = {}


def call(name, fn):
    try:
        response = fn()
        results[name] = {"ok": True, "body": response.to_dict()}
        return response
    except plaid.ApiException as exc:  # Plaid's error envelope, as the SDK raises it
        results[name] = {"ok": False, "status": exc.status, "body": json.loads(exc.body)}
    except Exception as exc:  # the SDK refused the answer (a model it cannot build)
        results[name] = {"ok": False, "error": type(exc).__name__, "message": str(exc)[:600]}
    return None


call(
    "link_token_create",
    lambda: client.link_token_create(
        LinkTokenCreateRequest(
            client_name="Brokerage Gateway",
            language="en",
            country_codes=[CountryCode("US")],
            user=LinkTokenCreateRequestUser(client_user_id="sdk-user-1"),
            products=[Products("investments")],
        )
    ),
)
public = call(
    "sandbox_public_token_create",
    lambda: client.sandbox_public_token_create(
        SandboxPublicTokenCreateRequest(
            institution_id=os.environ["PLAID_INSTITUTION"],
            initial_products=[Products("investments")],
        )
    ),
)
exchanged = call(
    "public_token_exchange",
    lambda: client.item_public_token_exchange(
        ItemPublicTokenExchangeRequest(public_token=public.public_token if public else "none")
    ),
)
token = exchanged.access_token if exchanged else "access-sandbox-none"
call("accounts_get", lambda: client.accounts_get(AccountsGetRequest(access_token=token)))
call(
    "accounts_balance_get",
    lambda: client.accounts_balance_get(AccountsBalanceGetRequest(access_token=token)),
)
call(
    "holdings_get",
    lambda: client.investments_holdings_get(InvestmentsHoldingsGetRequest(access_token=token)),
)
today = datetime.now(UTC).date()
call(
    "transactions_get",
    lambda: client.investments_transactions_get(
        InvestmentsTransactionsGetRequest(
            access_token=token,
            start_date=today - timedelta(days=30),
            end_date=today,
            options=InvestmentsTransactionsGetRequestOptions(count=100, offset=0),
        )
    ),
)
call("item_get", lambda: client.item_get(ItemGetRequest(access_token=token)))
call(
    "bad_token",
    lambda: client.accounts_get(AccountsGetRequest(access_token="access-sandbox-not-a-token")),
)
call("item_remove", lambda: client.item_remove(ItemRemoveRequest(access_token=token)))
call("removed_item_get", lambda: client.item_get(ItemGetRequest(access_token=token)))
print(json.dumps(results, default=str))  # noqa: T201 - the one line the test reads
