"""Drive the fake Schwab with schwab-py (pinned in tests/sdk/schwab/requirements.txt).

Run by tests/sdk/test_schwab.py under the SDK's own interpreter; it must not import the
gateway. schwab-py has no base-URL setting (every path is joined to the literal
``https://api.schwabapi.com``), so this script's httpx transport sends those requests to the
fake instead, and the stream's connect goes to the fake's plain ws:// socket rather than the
advertised wss:// one; nothing else of the SDK is touched. The client is built the SDK's way,
from a token file (``client_from_token_file``) holding tokens the fake issued.

Environment: SCHWAB_URL (the fake), SCHWAB_STREAMER_URL (its socket), SCHWAB_API_KEY,
SCHWAB_APP_SECRET, SCHWAB_TOKEN_FILE, SCHWAB_ACCOUNT_HASH, SCHWAB_OPTION_SYMBOL (a listed
call, OCC). The last line printed is one
JSON object: each call's status and answer, or its error.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import httpx
from schwab import streaming
from schwab.auth import client_from_token_file
from schwab.orders.common import Duration
from schwab.orders.equities import (
    equity_buy_limit,
    equity_buy_market,
    equity_buy_to_cover_market,
    equity_sell_short_market,
)
from schwab.orders.options import option_buy_to_open_limit
from schwab.utils import Utils

env = os.environ
FAKE = httpx.URL(env["SCHWAB_URL"])
_send = httpx.HTTPTransport.handle_request


def _to_fake(self: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
    if request.url.host == "api.schwabapi.com":
        request.url = request.url.copy_with(scheme=FAKE.scheme, host=FAKE.host, port=FAKE.port)
    return _send(self, request)


httpx.HTTPTransport.handle_request = _to_fake  # type: ignore[method-assign]

results: dict[str, Any] = {}


def record(name: str, call: Any) -> httpx.Response | None:
    try:
        response = call()
    except Exception as exc:
        results[name] = {"error": type(exc).__name__, "message": str(exc)[:300]}
        return None
    try:
        body: Any = response.json() if response.content else None
    except ValueError:
        body = response.text[:300]
    results[name] = {"status": response.status_code, "body": body}
    return response


client = client_from_token_file(
    env["SCHWAB_TOKEN_FILE"], env["SCHWAB_API_KEY"], env["SCHWAB_APP_SECRET"]
)
account = env["SCHWAB_ACCOUNT_HASH"]

record("get_account_numbers", client.get_account_numbers)
record("get_accounts", client.get_accounts)
record(
    "get_account_positions",
    lambda: client.get_account(account, fields=[client.Account.Fields.POSITIONS]),
)
record("get_user_preferences", client.get_user_preferences)


def placed_id(name: str, spec: Any) -> int | None:
    response = record(name, lambda: client.place_order(account, spec))
    if response is None or response.is_error:
        return None
    order_id = Utils(client, account).extract_order_id(response)
    results[name]["order_id"] = order_id
    return order_id


limit_id = placed_id(
    "place_equity_limit",
    equity_buy_limit("AAPL", 1, "1.00").set_duration(Duration.GOOD_TILL_CANCEL),
)
if limit_id is not None:
    record("get_order", lambda: client.get_order(limit_id, account))
    replaced = record(
        "replace_order",
        lambda: client.replace_order(account, limit_id, equity_buy_limit("AAPL", 1, "1.50")),
    )
    new_id = None
    if replaced is not None and not replaced.is_error:
        new_id = Utils(client, account).extract_order_id(replaced)
        results["replace_order"]["order_id"] = new_id
    if new_id is not None:
        record("cancel_order", lambda: client.cancel_order(new_id, account))
        record("get_canceled_order", lambda: client.get_order(new_id, account))
placed_id("place_equity_market", equity_buy_market("AAPL", 2))
placed_id("place_option_limit", option_buy_to_open_limit(env["SCHWAB_OPTION_SYMBOL"], 1, "50.00"))
placed_id("place_sell_short", equity_sell_short_market("MSFT", 1))
time.sleep(1)  # the test's ticker fills it
placed_id("place_buy_to_cover", equity_buy_to_cover_market("MSFT", 1))
record("get_orders_for_account", lambda: client.get_orders_for_account(account))
record("get_transactions", lambda: client.get_transactions(account))
record(
    "get_account_positions_after",
    lambda: client.get_account(account, fields=[client.Account.Fields.POSITIONS]),
)


# The account-activity stream. Schwab advertises a wss:// socket (so does the fake); the
# fake's socket is plain ws:// on localhost, so the connect call is pointed there and the
# advertised URL kept for the test to check.
_connect = streaming.ws_client.connect
advertised: list[str] = []


def _connect_to_fake(url: str, **kwargs: Any) -> Any:
    advertised.append(url)
    return _connect(env["SCHWAB_STREAMER_URL"], **kwargs)


streaming.ws_client.connect = _connect_to_fake  # type: ignore[assignment]


async def stream() -> None:
    stream_client = streaming.StreamClient(client)
    messages: list[dict[str, Any]] = []
    stream_client.add_account_activity_handler(messages.append)
    await stream_client.login()
    await stream_client.account_activity_sub()
    placed = client.place_order(account, equity_buy_market("AAPL", 1))
    placed.raise_for_status()
    types: list[str] = []
    async with asyncio.timeout(15):
        while "OrderFillCompleted" not in types:
            await stream_client.handle_message()
            types = [c.get("MESSAGE_TYPE") for m in messages for c in m.get("content") or []]
    await stream_client.logout()
    results["account_activity_stream"] = {
        "status": 200,
        "body": {
            "advertised": advertised,
            "service": messages[0].get("service"),
            "message_types": types,
        },
    }


try:
    asyncio.run(stream())
except Exception as exc:
    results["account_activity_stream"] = {"error": type(exc).__name__, "message": str(exc)[:300]}
print(json.dumps(results, default=str))  # noqa: T201
