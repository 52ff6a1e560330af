"""Plaid payloads from Plaid's own documentation.

``spec_examples.json`` holds response examples copied unchanged from the official OpenAPI
file (plaid/plaid-openapi ``2020-09-14.yml``, MIT, commit 26f1a05): the ``example-1`` of
``/investments/holdings/get``, ``/investments/transactions/get``, ``/accounts/get``,
``/institutions/get_by_id``, ``/item/public_token/exchange``, ``/link/token/create`` and
``/webhook_verification_key/get``, and the ``x-examples`` of the HOLDINGS and
INVESTMENTS_TRANSACTIONS ``DEFAULT_UPDATE`` and ITEM ``ERROR`` webhooks. The error bodies
below are the docs' examples (https://plaid.com/docs/errors/).
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).with_name("spec_examples.json")


@cache
def _examples() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(EXAMPLES.read_text())
    return loaded


def example(name: str) -> dict[str, Any]:
    """A fresh copy of one spec example (tests may change it)."""
    return copy.deepcopy(_examples()[name])


def example_text(name: str) -> str:
    """The example as JSON text: what the adapter parses (numbers become Decimal)."""
    return json.dumps(_examples()[name])


# https://plaid.com/docs/errors/item/#item_login_required (and the spec's ItemErrorWebhook).
ITEM_LOGIN_REQUIRED = {
    "error_type": "ITEM_ERROR",
    "error_code": "ITEM_LOGIN_REQUIRED",
    "error_code_reason": None,
    "error_message": "the login details of this item have changed (credentials, MFA, or "
    "required user action) and a user login is required to update this information. use "
    "Link's update mode to restore the item to a good state",
    "display_message": None,
    "request_id": "HNTDNrA8F1shFEW",
}
# https://plaid.com/docs/errors/rate-limit-exceeded/#accounts_limit
ACCOUNTS_LIMIT = {
    "error_type": "RATE_LIMIT_EXCEEDED",
    "error_code": "ACCOUNTS_LIMIT",
    "error_message": "rate limit exceeded for attempts to access this item. please try again later",
    "display_message": None,
    "request_id": "HNTDNrA8F1shFEW",
}
# https://plaid.com/docs/errors/invalid-input/#invalid_access_token
INVALID_ACCESS_TOKEN = {
    "error_type": "INVALID_INPUT",
    "error_code": "INVALID_ACCESS_TOKEN",
    "error_message": "could not find matching access token",
    "display_message": None,
    "request_id": "HNTDNrA8F1shFEW",
}
# https://plaid.com/docs/errors/item/#access_not_granted
ACCESS_NOT_GRANTED = {
    "error_type": "ITEM_ERROR",
    "error_code": "ACCESS_NOT_GRANTED",
    "error_message": "access to this product was not granted for the account",
    "display_message": "The user did not grant the necessary permissions for this product on "
    "their account.",
    "request_id": "HNTDNrA8F1shFEW",
}
# https://plaid.com/docs/errors/api/#internal_server_error
INTERNAL_SERVER_ERROR = {
    "error_type": "API_ERROR",
    "error_code": "INTERNAL_SERVER_ERROR",
    "error_message": "an unexpected error occurred",
    "display_message": "Something went wrong. Please try again later.",
    "request_id": "HNTDNrA8F1shFEW",
}
