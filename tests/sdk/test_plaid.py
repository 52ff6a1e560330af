"""plaid-python, Plaid's own client, against the fake Plaid.

The fake runs in-process on a real localhost port; ``tests/sdk/plaid/script.py`` runs under
the SDK's interpreter, makes the Link and Investments calls through the SDK's request models
and has the SDK deserialise every answer into its response models (type-checked), so a fake
body Plaid's own client would refuse fails here.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tests.brokers.plaid.support import running_fake
from tests.sdk.environments import run_sdk_script

# The SDK calls the script makes, by name (the figure for the closing note).
CALLS = [
    "link_token_create",
    "sandbox_public_token_create",
    "public_token_exchange",
    "accounts_get",
    "accounts_balance_get",
    "holdings_get",
    "transactions_get",
    "item_get",
    "bad_token",
    "item_remove",
    "removed_item_get",
]
# Calls whose right outcome is Plaid's error envelope.
REFUSED = {"bad_token", "removed_item_get"}


async def test_plaid_python_drives_the_fake() -> None:
    async with running_fake(cash="2500") as run:
        fake = run.fake
        fake.hold(run.account, "AAPL", "10", "190.25", cost_basis="1500.00")
        fake.hold(run.account, "VTSAX", "3.5", "120", kind="mutual fund")
        aapl = fake.security("AAPL", price="190")
        fake.add_transaction(
            run.account,
            kind="buy",
            subtype="buy",
            amount=Decimal("190.00"),
            name="BUY AAPL",
            security=aapl,
            quantity=Decimal(1),
            price=Decimal(190),
            on=(datetime.now(UTC) - timedelta(days=2)).date(),
        )
        result = await asyncio.to_thread(
            run_sdk_script,
            "plaid",
            "script.py",
            {
                "PLAID_URL": run.url,
                "PLAID_CLIENT_ID": fake.client_id,
                "PLAID_SECRET": fake.secret,
                "PLAID_INSTITUTION": run.login.institution_id,
            },
        )
    assert sorted(result) == sorted(CALLS)
    failed = {n: result[n] for n in CALLS if not result[n]["ok"] and n not in REFUSED}
    assert failed == {}, json.dumps(failed, indent=1)[:6000]
    for name in REFUSED:
        assert result[name]["status"] == 400
        assert result[name]["body"]["error_code"] == "INVALID_ACCESS_TOKEN"
        assert result[name]["body"]["error_type"] == "INVALID_INPUT"
    accounts = result["accounts_balance_get"]["body"]["accounts"]
    ira = next(a for a in accounts if a["subtype"] == "ira")
    assert ira["balances"]["available"] == 2500
    holdings = result["holdings_get"]["body"]
    tickers = {s["security_id"]: s["ticker_symbol"] for s in holdings["securities"]}
    held = {tickers[h["security_id"]] for h in holdings["holdings"]}
    assert {"AAPL", "VTSAX"} <= held
    transactions = result["transactions_get"]["body"]
    assert transactions["total_investment_transactions"] >= 1
    assert "buy" in {t["type"] for t in transactions["investment_transactions"]}
    assert result["item_get"]["body"]["item"]["institution_id"] == run.login.institution_id
