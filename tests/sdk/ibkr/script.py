"""ibind (Client Portal Web API client) against the fake gateway, in its plain Client Portal
mode: no OAuth, no tickler thread, the fake's URL as the REST base (run under the SDK's own
interpreter). Prints one JSON object (each call's result or error) on its last line.
"""

import json
import os
import time

from ibind import IbkrClient
from ibind.client.ibkr_utils import OrderRequest

ACCOUNT = os.environ["IBKR_ACCOUNT"]
SLOW = float(os.environ["IBKR_SLOW_SECONDS"])  # the fake's pacing window on slow endpoints

client = IbkrClient(
    url=os.environ["IBKR_URL"],
    account_id=ACCOUNT,
    cacert=False,
    use_session=True,
    auto_register_shutdown=False,
    use_oauth=False,
    max_retries=0,
)
results = {}
# ibind answers each of the gateway's order questions from this table (substring match).
ANSWERS = {"price exceeds the Percentage constraint": True}


def call(name, fn):
    # The gateway's pacing: at most 10 requests a second overall (Campus "Pacing
    # Limitations"); a breach puts the caller in the penalty box.
    time.sleep(0.15)
    try:
        result = fn()
        data = getattr(result, "data", result)
        results[name] = {"ok": True, "body": json.loads(json.dumps(data, default=str))}
        return data
    except Exception as exc:  # ibind's ExternalBrokerError and friends, reported
        results[name] = {"ok": False, "error": type(exc).__name__, "message": str(exc)[:600]}
        return None


call("health", client.check_health)
call("auth_status", client.authentication_status)
time.sleep(1.1)  # /tickle: one a second, and check_health has just tickled
call("tickle", client.tickle)
call("iserver_accounts", client.receive_brokerage_accounts)
call("portfolio_accounts", client.portfolio_accounts)
call("positions", lambda: client.positions(account_id=ACCOUNT, page=0))
call("portfolio_summary", lambda: client.portfolio_summary(account_id=ACCOUNT))
call("account_summary", lambda: client.account_summary(account_id=ACCOUNT))
found = call("search", lambda: client.search_contract_by_symbol("AAPL"))
conid = int(found[0]["conid"]) if found else 0
snapshot = call(
    "snapshot", lambda: client.live_marketdata_snapshot(str(conid), fields=["31", "84", "86"])
)
last = float(os.environ["IBKR_LAST"])


def order(price, quantity=2):
    return OrderRequest(
        conid=conid,
        side="BUY",
        quantity=quantity,
        order_type="LMT",
        price=price,
        acct_id=ACCOUNT,
        tif="DAY",
        coid=f"sdk-{time.monotonic_ns()}",
    )


# Far below the market: the gateway asks the 3% price-constraint question (o163), ibind
# answers it through /iserver/reply/{id}, and the order rests.
placed = call("place", lambda: client.place_order(order(round(last * 0.9, 2)), ANSWERS, ACCOUNT))
order_id = str(placed.get("order_id")) if isinstance(placed, dict) else "0"
time.sleep(SLOW)
# The first live-order request of a session starts the gateway's subscription and may answer
# an empty list (``snapshot: false``); the next one lists the orders.
call("live_orders", lambda: client.live_orders(account_id=ACCOUNT))
time.sleep(SLOW)
call("live_orders_again", lambda: client.live_orders(account_id=ACCOUNT))
call("order_status", lambda: client.order_status(order_id))
call(
    "modify",
    lambda: client.modify_order(order_id, order(round(last * 0.91, 2)), ANSWERS, ACCOUNT),
)
call("cancel", lambda: client.cancel_order(order_id, ACCOUNT))
time.sleep(SLOW)
call("live_orders_after", lambda: client.live_orders(account_id=ACCOUNT))
call("unknown_route", lambda: client.get("iserver/no/such/route"))
print(json.dumps(results, default=str))  # noqa: T201 - the one line the test reads
