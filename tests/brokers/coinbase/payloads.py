"""Coinbase Advanced Trade payloads: the official reference's examples and recorded answers.

Sources, per payload (the reference pages live under
https://docs.cdp.coinbase.com/api-reference/advanced-trade-api/):

* ``ACCOUNTS_DOC``: the list-accounts example (``rest-api/accounts/list-accounts``), as
  transcribed in JKorf/Coinbase.Net ``UnitTests/Endpoints/AdvancedTrade/Account/
  GetAccounts.txt``; ``retail_portfolio_id`` and the values are the example's.
* ``ORDER_DOC``: the get-order example (``rest-api/orders/get-order``; the same values in
  the nautilus-coinbase crate's ``test_data/http_order.json``): a limit GTC order.
* ``CREATE_SUCCESS_DOC``: the create-order example's ``success_response`` (JKorf
  ``Trading/PlaceOrder.txt``, the reference's example values), ``success`` true.
* ``CREATE_FAILURE``: the create-order answer for a refusal: ``success`` false and the
  reference's ``error_response`` fields (``error``, ``message``, ``error_details``,
  ``preview_failure_reason``, ``new_order_failure_reason``), with INSUFFICIENT_FUND values.
  The field names are documented; the message wording is unconfirmed.
* ``CANCEL_DOC``: the cancel-orders example (JKorf ``Trading/CancelOrders.txt``).
* ``EDIT_SUCCESS`` / ``EDIT_REFUSED``: the edit-order answer shape (coinbase-advanced-py
  ``EditOrderResponse``: ``success`` and ``errors[]`` of ``edit_failure_reason`` /
  ``preview_failure_reason``); ``EDIT_DOC`` is the reference's example (JKorf
  ``Trading/EditOrder.txt``), where ``errors`` is one object, not a list.
* ``FILLS_DOC``: the list-fills example (JKorf ``Trading/GetUserTrades.txt``).
* ``USER_UPDATE_DOC``: the user channel example of the WebSocket channels page (JKorf
  ``Subscriptions/AdvancedTrade/User.txt``), its ``type`` set to ``update``;
  ``USER_SNAPSHOT_RECORDED``: nautilus-coinbase ``test_data/ws_user.json``;
  ``SUBSCRIPTIONS_RECORDED`` and ``HEARTBEAT_RECORDED``: recorded answers in JKorf
  ``Subscriptions/AdvancedTrade/User.txt`` and ``Heartbeat.txt``.
* ``PRODUCT_DOC``: the products example (JKorf ``ExchangeData/GetSymbols.txt``), trimmed of
  its futures details.
* ``BEST_BID_ASK`` and ``BREAKDOWN``: no example was found for best-bid-ask in a public
  transcription; both carry the reference's field names (``pricebooks[]`` of ``product_id``,
  ``bids``/``asks`` ``{"price", "size"}``, ``time``; the portfolio breakdown's
  ``spot_positions[]``) with values of our own.
* ``V2_TRANSACTIONS_DOC``: the Coinbase App list-transactions example (JKorf
  ``Account/GetTransactions.txt``) plus a ``fiat_deposit`` entry of the same shape.
* ``ERROR_400_RECORDED``: a recorded 400 body (hummingbot/hummingbot#7220).
"""

from __future__ import annotations

import copy
from typing import Any

PORTFOLIO = "b87a2d3f-8a1e-49b3-a4ea-402d8c389aca"

ACCOUNTS_DOC: dict[str, Any] = {
    "accounts": [
        {
            "uuid": "8bfc20d7-f7c6-4422-bf07-8243ca4169fe",
            "name": "BTC Wallet",
            "currency": "BTC",
            "available_balance": {"value": "1.23", "currency": "BTC"},
            "default": False,
            "active": True,
            "created_at": "2021-05-31T09:59:59Z",
            "updated_at": "2021-05-31T09:59:59Z",
            "deleted_at": "2021-05-31T09:59:59Z",
            "type": "FIAT",
            "ready": True,
            "hold": {"value": "1.23", "currency": "BTC"},
            "retail_portfolio_id": PORTFOLIO,
        }
    ],
    "has_next": True,
    "cursor": "789100",
    "size": 1,
}


def wallet(
    currency: str, available: str, hold: str = "0", uuid: str | None = None
) -> dict[str, Any]:
    """A live wallet of ``ACCOUNTS_DOC``'s shape (the example is marked deleted)."""
    item = copy.deepcopy(ACCOUNTS_DOC["accounts"][0])
    item.update(
        uuid=uuid or f"{currency.lower()}-wallet-0000-4000-8000-000000000000",
        name=f"{currency} Wallet",
        currency=currency,
        available_balance={"value": available, "currency": currency},
        hold={"value": hold, "currency": currency},
        deleted_at=None,
        type="ACCOUNT_TYPE_FIAT" if currency == "USD" else "ACCOUNT_TYPE_CRYPTO",
    )
    return item


ORDER_DOC: dict[str, Any] = {
    "order": {
        "order_id": "0000-000000-000000",
        "product_id": "BTC-USD",
        "user_id": "2222-000000-000000",
        "order_configuration": {
            "limit_limit_gtc": {"base_size": "0.001", "limit_price": "10000.00", "post_only": False}
        },
        "side": "BUY",
        "client_order_id": "11111-000000-000000",
        "status": "OPEN",
        "time_in_force": "GOOD_UNTIL_CANCELLED",
        "created_time": "2021-05-31T09:59:59Z",
        "completion_percentage": "50",
        "filled_size": "0.001",
        "average_filled_price": "50",
        "fee": "0.00",
        "number_of_fills": "2",
        "filled_value": "10000",
        "pending_cancel": False,
        "size_in_quote": False,
        "total_fees": "5.00",
        "size_inclusive_of_fees": False,
        "total_value_after_fees": "10000",
        "trigger_status": "INVALID_ORDER_TYPE",
        "order_type": "LIMIT",
        "reject_reason": "REJECT_REASON_UNSPECIFIED",
        "settled": False,
        "product_type": "SPOT",
        "reject_message": "",
        "cancel_message": "",
        "order_placement_source": "RETAIL_ADVANCED",
        "outstanding_hold_amount": "1.00",
        "is_liquidation": False,
        "last_fill_time": "2021-05-31T10:30:00Z",
        "leverage": "",
        "margin_type": "CROSS",
        "retail_portfolio_id": "",
        "originating_order_id": "",
        "attached_order_id": "",
    }
}


def order(**changes: Any) -> dict[str, Any]:
    """``ORDER_DOC``'s order with some fields changed (a resting, unfilled one by default)."""
    item = copy.deepcopy(ORDER_DOC["order"])
    item.update(filled_size="0", average_filled_price="0", number_of_fills="0", filled_value="0")
    item["last_fill_time"] = None
    item.update(changes)
    return item


CREATE_SUCCESS_DOC: dict[str, Any] = {
    "success": True,
    "success_response": {
        "order_id": "11111-00000-000000",
        "product_id": "BTC-USD",
        "side": "BUY",
        "client_order_id": "0000-00000-000000",
    },
    "order_configuration": {
        "limit_limit_gtc": {"base_size": "0.001", "limit_price": "10000.00", "post_only": False}
    },
}

CREATE_FAILURE: dict[str, Any] = {
    "success": False,
    "error_response": {
        "error": "INSUFFICIENT_FUND",
        "message": "Insufficient balance in source account",
        "error_details": "",
        "preview_failure_reason": "PREVIEW_INSUFFICIENT_FUND",
        "new_order_failure_reason": "UNKNOWN_FAILURE_REASON",
    },
}

# The reference's create-order example error_response (its values are placeholders).
CREATE_ERROR_DOC: dict[str, Any] = {
    "error": "UNKNOWN_FAILURE_REASON",
    "message": "The order configuration was invalid",
    "error_details": "Market orders cannot be placed with empty order sizes",
    "preview_failure_reason": "UNKNOWN_PREVIEW_FAILURE_REASON",
    "new_order_failure_reason": "UNKNOWN_FAILURE_REASON",
}

CANCEL_DOC: dict[str, Any] = {
    "results": [
        {
            "success": True,
            "failure_reason": "UNKNOWN_CANCEL_FAILURE_REASON",
            "order_id": "0000-00000",
        }
    ]
}

EDIT_SUCCESS: dict[str, Any] = {"success": True, "errors": []}
EDIT_REFUSED: dict[str, Any] = {
    "success": False,
    "errors": [
        {
            "edit_failure_reason": "ONLY_OPEN_ORDERS_CAN_BE_EDITED",
            "preview_failure_reason": "UNKNOWN_PREVIEW_FAILURE_REASON",
        }
    ],
}
EDIT_DOC: dict[str, Any] = {
    "success": True,
    "success_response": {"order_id": "11111-00000-000000"},
    "error_response": {
        "error_details": "Market orders cannot be placed with empty order sizes",
        "edit_order_failure_reason": "UNKNOWN_EDIT_ORDER_FAILURE_REASON",
    },
    "errors": {
        "edit_failure_reason": "UNKNOWN_EDIT_ORDER_FAILURE_REASON",
        "preview_failure_reason": "UNKNOWN_PREVIEW_FAILURE_REASON",
    },
}

FILLS_DOC: dict[str, Any] = {
    "fills": [
        {
            "entry_id": "22222-2222222-22222222",
            "trade_id": "1111-11111-111111",
            "order_id": "0000-000000-000000",
            "trade_time": "2021-05-31T09:59:59Z",
            "trade_type": "FILL",
            "price": "10000.00",
            "size": "0.001",
            "commission": "1.25",
            "product_id": "BTC-USD",
            "sequence_timestamp": "2021-05-31T09:58:59Z",
            "liquidity_indicator": "UNKNOWN_LIQUIDITY_INDICATOR",
            "size_in_quote": False,
            "user_id": "3333-333333-3333333",
            "side": "BUY",
            "retail_portfolio_id": "4444-444444-4444444",
        }
    ],
    "cursor": "789100",
}

USER_UPDATE_DOC: dict[str, Any] = {
    "channel": "user",
    "client_id": "",
    "timestamp": "2023-02-09T20:33:57.609931463Z",
    "sequence_num": 0,
    "events": [
        {
            "type": "update",
            "orders": [
                {
                    "avg_price": "50000",
                    "cancel_reason": "",
                    "client_order_id": "XXX",
                    "completion_percentage": "100.00",
                    "contract_expiry_type": "UNKNOWN_CONTRACT_EXPIRY_TYPE",
                    "cumulative_quantity": "0.01",
                    "filled_value": "500",
                    "leaves_quantity": "0",
                    "limit_price": "50000",
                    "number_of_fills": "1",
                    "order_id": "YYY",
                    "order_side": "BUY",
                    "order_type": "Limit",
                    "outstanding_hold_amount": "0",
                    "post_only": "false",
                    "product_id": "BTC-USD",
                    "product_type": "SPOT",
                    "reject_reason": "",
                    "retail_portfolio_id": "ZZZ",
                    "risk_managed_by": "UNKNOWN_RISK_MANAGEMENT_TYPE",
                    "status": "FILLED",
                    "stop_price": "",
                    "time_in_force": "GOOD_UNTIL_CANCELLED",
                    "total_fees": "2",
                    "total_value_after_fees": "502",
                    "trigger_status": "INVALID_ORDER_TYPE",
                    "creation_time": "2024-06-21T18:29:13.909347Z",
                    "end_time": "0001-01-01T00:00:00Z",
                    "start_time": "0001-01-01T00:00:00Z",
                }
            ],
        }
    ],
}

USER_SNAPSHOT_RECORDED: dict[str, Any] = {
    "channel": "user",
    "client_id": "",
    "timestamp": "2026-04-07T14:30:06.000000Z",
    "sequence_num": 1,
    "events": [
        {
            "type": "snapshot",
            "orders": [
                {
                    "order_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
                    "client_order_id": "11111-000000-000001",
                    "cumulative_quantity": "0",
                    "leaves_quantity": "0.001",
                    "avg_price": "0",
                    "total_fees": "0",
                    "status": "OPEN",
                    "product_id": "BTC-USD",
                    "creation_time": "2026-04-07T14:29:55.123456Z",
                    "order_side": "BUY",
                    "order_type": "Limit",
                    "cancel_reason": "",
                    "reject_reason": "",
                    "total_value_after_fees": "68.90050000",
                    "contract_expiry_type": "UNKNOWN_CONTRACT_EXPIRY_TYPE",
                    "product_type": "SPOT",
                    "risk_managed_by": "UNKNOWN_RISK_MANAGEMENT_TYPE",
                    "time_in_force": "GOOD_UNTIL_CANCELLED",
                    "trigger_status": "INVALID_ORDER_TYPE",
                }
            ],
        }
    ],
}

SUBSCRIPTIONS_RECORDED: dict[str, Any] = {
    "channel": "subscriptions",
    "client_id": "",
    "timestamp": "2024-10-04T07:31:01.754118917Z",
    "sequence_num": 1,
    "events": [{"subscriptions": {"user": ["3e625b74-1c4e-5967-ad38-4d26f30d4439"]}}],
}

HEARTBEAT_RECORDED: dict[str, Any] = {
    "channel": "heartbeats",
    "client_id": "",
    "timestamp": "2024-10-04T07:04:40.825062088Z",
    "sequence_num": 1,
    "events": [
        {
            "current_time": "2024-10-04 07:04:40.820713045 +0000 UTC m=+66987.628148662",
            "heartbeat_counter": 66987,
        }
    ],
}

PRODUCT_DOC: dict[str, Any] = {
    "product_id": "BTC-USD",
    "price": "140.21",
    "price_percentage_change_24h": "9.43",
    "volume_24h": "1908432",
    "volume_percentage_change_24h": "9.43",
    "base_increment": "0.00000001",
    "quote_increment": "0.00000001",
    "quote_min_size": "0.00000001",
    "quote_max_size": "1000",
    "base_min_size": "0.00000001",
    "base_max_size": "1000",
    "base_name": "Bitcoin",
    "quote_name": "US Dollar",
    "watched": True,
    "is_disabled": False,
    "new": True,
    "status": "online",
    "cancel_only": True,
    "limit_only": True,
    "post_only": True,
    "trading_disabled": False,
    "auction_mode": True,
    "product_type": "UNKNOWN_PRODUCT_TYPE",
    "quote_currency_id": "USD",
    "base_currency_id": "BTC",
    "mid_market_price": "140.22",
    "alias": "BTC-USD",
    "alias_to": ["string"],
    "base_display_symbol": "BTC",
    "quote_display_symbol": "USD",
    "view_only": True,
    "price_increment": "0.00000001",
    "display_name": "BTC PERP",
    "product_venue": "neptune",
    "approximate_quote_24h_volume": "1908432",
}


def product(**changes: Any) -> dict[str, Any]:
    """``PRODUCT_DOC`` open for trading (the example is cancel- and view-only)."""
    item = copy.deepcopy(PRODUCT_DOC)
    item.update(cancel_only=False, view_only=False, limit_only=False, post_only=False)
    item.update(product_type="SPOT", auction_mode=False)
    item.update(changes)
    return item


BEST_BID_ASK: dict[str, Any] = {
    "pricebooks": [
        {
            "product_id": "BTC-USD",
            "bids": [{"price": "64999.50", "size": "0.25"}],
            "asks": [{"price": "65000.50", "size": "0.40"}],
            "time": "2026-06-01T12:00:00.123456789Z",
        },
        {
            "product_id": "ETH-USD",
            "bids": [{"price": "3199.90", "size": "4"}],
            "asks": [{"price": "3200.10", "size": "3"}],
            "time": "2026-06-01T12:00:00.5Z",
        },
    ]
}

PRODUCTS: dict[str, Any] = {
    "products": [
        product(price="65000.00"),
        product(product_id="ETH-USD", price="3200.00", base_currency_id="ETH"),
    ],
    "num_products": 2,
}

BREAKDOWN: dict[str, Any] = {
    "breakdown": {
        "portfolio": {"name": "Default", "uuid": PORTFOLIO, "type": "DEFAULT", "deleted": False},
        "portfolio_balances": {
            "total_balance": {"value": "1600.00", "currency": "USD"},
            "total_futures_balance": {"value": "0", "currency": "USD"},
            "total_cash_equivalent_balance": {"value": "950.00", "currency": "USD"},
            "total_crypto_balance": {"value": "650.00", "currency": "USD"},
            "futures_unrealized_pnl": {"value": "0", "currency": "USD"},
            "perp_unrealized_pnl": {"value": "0", "currency": "USD"},
        },
        "spot_positions": [
            {
                "asset": "BTC",
                "account_uuid": "btc-wallet-0000-4000-8000-000000000000",
                "total_balance_fiat": "650.00",
                "total_balance_crypto": "0.01",
                "available_to_trade_fiat": "650.00",
                "allocation": "0.40",
                "one_day_change": "0",
                "cost_basis": {"value": "600.00", "currency": "USD"},
                "asset_img_url": "",
                "is_cash": False,
            },
            {
                "asset": "USD",
                "account_uuid": "usd-wallet-0000-4000-8000-000000000000",
                "total_balance_fiat": "950.00",
                "total_balance_crypto": "950.00",
                "available_to_trade_fiat": "900.00",
                "allocation": "0.60",
                "one_day_change": "0",
                "cost_basis": {"value": "950.00", "currency": "USD"},
                "asset_img_url": "",
                "is_cash": True,
            },
        ],
        "perp_positions": [],
        "futures_positions": [],
    }
}

V2_PATH = "/v2/accounts/2bbf394c-193b-5b2a-9155-3b4732659ede/transactions/"
V2_TRANSACTIONS_DOC: dict[str, Any] = {
    "pagination": {
        "ending_before": None,
        "starting_after": None,
        "limit": 25,
        "order": "desc",
        "previous_uri": None,
        "next_uri": None,
    },
    "data": [
        {
            "id": "4117f7d6-5694-5b36-bc8f-847509850ea4",
            "type": "buy",
            "status": "pending",
            "amount": {"amount": "486.34313725", "currency": "BTC"},
            "native_amount": {"amount": "4863.43", "currency": "USD"},
            "description": None,
            "created_at": "2015-03-26T23:44:08-07:00",
            "updated_at": "2015-03-26T23:44:08-07:00",
            "resource": "transaction",
            "resource_path": V2_PATH + "4117f7d6-5694-5b36-bc8f-847509850ea4",
            "details": {"title": "Bought bitcoin", "subtitle": "using Capital One Bank"},
        },
        {
            "id": "67e0eaec-07d7-54c4-a72c-2e92826897df",
            "type": "fiat_deposit",
            "status": "completed",
            "amount": {"amount": "10.00", "currency": "USD"},
            "native_amount": {"amount": "10.00", "currency": "USD"},
            "description": None,
            "created_at": "2015-01-31T20:49:02Z",
            "updated_at": "2015-02-11T16:54:02-08:00",
            "resource": "transaction",
            "resource_path": V2_PATH + "67e0eaec-07d7-54c4-a72c-2e92826897df",
            "details": {"title": "Deposited funds", "subtitle": "From Capital One Bank"},
        },
    ],
}

ERROR_400_RECORDED: dict[str, Any] = {
    "error": "INVALID_ARGUMENT",
    "error_details": "cannot pass order_ids with other filters",
    "message": "cannot pass order_ids with other filters",
}
