"""Drive the fake tastytrade with tastyware's ``tastytrade`` SDK (pinned in requirements.txt).

Run by tests/sdk/test_tastytrade.py under the SDK's own interpreter; it must not import the
gateway. The SDK's Session is built with the fake's provider secret and refresh token, and
its httpx client's base URL set to the fake (the SDK names only api.tastyworks.com and the
cert host). The last line printed is one JSON object: each call's result or error.

Environment: TT_URL, TT_STREAMER_URL, TT_SECRET, TT_REFRESH, TT_ACCOUNT.
"""

from __future__ import annotations

import asyncio
import json
import os
from decimal import Decimal
from typing import Any

from tastytrade import Account, Session
from tastytrade.account import AccountBalance
from tastytrade.instruments import Cryptocurrency, Equity
from tastytrade.order import (
    LimitOrder,
    MarketOrder,
    NotionalOrder,
    OrderAction,
    OrderTimeInForce,
    PlacedOrder,
)
from tastytrade.streamer import AlertStreamer

env = os.environ
results: dict[str, Any] = {}


async def record(name: str, call: Any) -> Any:
    try:
        value = await call
    except Exception as exc:
        while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]  # anyio's task groups wrap the streamer's error
        results[name] = {"ok": False, "error": type(exc).__name__, "message": str(exc)[:300]}
        return None
    results[name] = {"ok": True}
    return value


async def main() -> None:
    session = Session(env["TT_SECRET"], env["TT_REFRESH"])
    session._client.base_url = env["TT_URL"]
    number = env["TT_ACCOUNT"]
    await record("refresh", session.refresh())
    accounts = await record("account_get_all", Account.get(session))
    account = await record("account_get", Account.get(session, number))
    if account is None:
        return
    await record("get_balances", account.get_balances(session))
    await record("get_positions", account.get_positions(session))
    equity = await record("equity_get", Equity.get(session, "AAPL"))
    if equity is None:
        return
    leg = equity.build_leg(Decimal(1), OrderAction.BUY_TO_OPEN)
    order = LimitOrder(legs=[leg], price=Decimal("-1.00"))
    await record("place_order_dry_run", account.place_order(session, order, dry_run=True))
    placed = await record("place_order", account.place_order(session, order, dry_run=False))
    live = await record("get_live_orders", account.get_live_orders(session))
    if live:
        order_id = max(o.id for o in live)
        await record("get_order", account.get_order(session, order_id))
        new = LimitOrder(legs=[leg], price=Decimal("-1.50"))
        replaced = await record("replace_order", account.replace_order(session, order_id, new))
        target = replaced.id if replaced is not None else order_id
        await record("delete_order", account.delete_order(session, target))
    await record("get_order_history", account.get_order_history(session))
    market = MarketOrder(legs=[equity.build_leg(Decimal(1), OrderAction.BUY_TO_OPEN)])
    await record("place_market_order", account.place_order(session, market, dry_run=False))
    notional = NotionalOrder(
        legs=[equity.build_leg(None, OrderAction.BUY_TO_OPEN)], value=Decimal("-500")
    )
    await record("place_notional_order", account.place_order(session, notional, dry_run=False))
    btc = await record("cryptocurrency_get", Cryptocurrency.get(session, "BTC/USD"))
    if btc is not None:
        crypto = MarketOrder(
            time_in_force=OrderTimeInForce.IOC,
            legs=[btc.build_leg(Decimal("0.01"), OrderAction.BUY_TO_OPEN)],
        )
        await record("place_crypto_order", account.place_order(session, crypto, dry_run=False))
    await record("account_streamer", stream(session, account, equity))
    positions = await record("get_positions_after", account.get_positions(session))
    results["positions_after"] = {
        "ok": True,
        "value": sorted((p.symbol, p.instrument_type.value) for p in positions or []),
    }
    results["accounts_listed"] = {
        "ok": True,
        "value": len(accounts or []),
        "number": account.account_number,
    }
    _ = placed


async def stream(session: Session, account: Account, equity: Equity) -> None:
    """The account streamer: subscribe, then an order placed now arrives as a PlacedOrder
    as PlacedOrders up to Filled (the test fills it), and the balance change as an
    AccountBalance."""
    streamer = AlertStreamer(session)
    streamer.base_url = env["TT_STREAMER_URL"]
    async with streamer:
        await streamer.subscribe_accounts([account])
        order = MarketOrder(legs=[equity.build_leg(Decimal(1), OrderAction.BUY_TO_OPEN)])
        placed = await account.place_order(session, order, dry_run=False)
        seen: dict[str, Any] = {}
        async with asyncio.timeout(15):
            async for update in streamer.listen(PlacedOrder):
                if update.id == placed.order.id:
                    seen.setdefault("order_statuses", []).append(update.status.value)
                    if update.status.value == "Filled":
                        break
            async for balance in streamer.listen(AccountBalance):
                seen["balance_account"] = balance.account_number
                break
        results["streamed"] = {"ok": True, "value": seen}


asyncio.run(main())
print(json.dumps(results, default=str))  # noqa: T201
