"""The Plaid Investments adapter (Tier C, read-only import) and Plaid's link calls.

``PlaidApi`` makes one Plaid call: ``POST <path>`` with a JSON body that carries the
deployment's ``client_id`` and ``secret`` (https://plaid.com/docs/api/#api-access). It serves
the link flow (``/link/token/create``, ``/item/public_token/exchange``,
``/institutions/get_by_id``, ``/item/remove``) and webhook verification
(``/webhook_verification_key/get``). ``PlaidAdapter`` is one connection's read view, bound
to its Item's access token:

* accounts and balances: ``/accounts/get`` (investment-type accounts only);
* positions: ``/investments/holdings/get``;
* transactions: ``/investments/transactions/get`` (paged by ``count``/``offset``).

The write half (place, modify, cancel, symbol checks) raises ``NotSupported``; the service
layer never gets that far, because the vault refuses a ``no_order_write`` credential to
every order path. There are no orders at Plaid: order reads answer "none".

Every Plaid read is a ``POST``: they are sent ``safe`` (retried, and a 5xx or a lost
answer is ``Transient``), while ``/item/public_token/exchange`` and ``/item/remove`` are
writes (sent once; a lost answer is ``OutcomeUnknown``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from app.brokers import errors
from app.brokers.base import (
    AssetClass,
    Balances,
    BrokerAccount,
    BrokerOrder,
    Capabilities,
    MarketDataCapabilities,
    OptionContract,
    OrderChanges,
    OrderListFilter,
    OrderRequest,
    OrderType,
    OrderUpdate,
    Position,
    Quote,
    RevokeOutcome,
    Support,
    TimeInForce,
    Transaction,
    is_option_symbol,
)
from app.brokers.http import BrokerClient, HttpPool, Pacer
from app.brokers.plaid import auth, mapping
from app.brokers.plaid.mapping import SLUG
from app.brokers.pooled_adapter import PooledAdapter
from app.brokers.rows import RowList, read_rows
from app.config import Settings
from app.security.credentials import Credentials

log = logging.getLogger(__name__)

U = Support.unsupported

PLAID_CAPABILITIES = Capabilities(
    asset_classes=dict.fromkeys(AssetClass, U),
    order_types=dict.fromkeys(OrderType, U),
    time_in_force=dict.fromkeys(TimeInForce, U),
    fractional=U,
    extended_hours=U,
    short_selling=U,
    multi_leg=U,
    modify=U,
    order_stream=U,
    place_orders=False,
    # Plaid has no quotes to stream or poll (``get_quotes`` is NotSupported): no
    # market-data channel, so subscribers get ``market_data_unsupported``.
    market_data=MarketDataCapabilities(),
)

READ_ONLY = "Linked accounts are read-only: Plaid imports holdings, it does not trade"
# /investments/transactions/get: ``count`` 1..500 (spec), 24 months of history at most
# (https://plaid.com/docs/api/products/investments/#investmentstransactionsget).
TRANSACTIONS_PER_PAGE = 500
MAX_PAGES = 10
HISTORY = timedelta(days=730)
CLIENT_PER_MINUTE = 400  # /institutions/get_by_id's per-client limit, the lowest used here


def _loads(response: httpx.Response) -> dict[str, Any]:
    body = mapping.WIRE.json_body(response)
    if not isinstance(body, dict):
        raise mapping.unknown("response body", type(body).__name__)
    return body


def _text(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value:
        raise mapping.unknown(field, value)
    return value


@dataclass(frozen=True, slots=True)
class Exchanged:
    access_token: str
    item_id: str


class PlaidApi:
    """Plaid calls made with the deployment's client credentials (plus an access token where
    the call is about an Item). ``pacer`` paces them: per Item for an adapter, per client
    otherwise."""

    def __init__(self, settings: Settings, pool: HttpPool, pacer: Pacer | None = None) -> None:
        self._settings = settings
        self._pool = pool
        self._pacer = pacer or pool.bucket(
            SLUG,
            auth.client_key(settings),
            rate=CLIENT_PER_MINUTE / 60.0,
            capacity=20,
        )

    def __repr__(self) -> str:
        return f"PlaidApi(base_url={self._settings.plaid_url!r})"

    def _client(self) -> BrokerClient:
        return BrokerClient(
            self._pool,
            broker=SLUG,
            base_url=self._settings.plaid_url,
            headers={"Content-Type": "application/json", "Plaid-Version": auth.API_VERSION},
            bucket=self._pacer,
            classifier=mapping.classify,
        )

    async def call(self, path: str, body: dict[str, Any], *, safe: bool = True) -> dict[str, Any]:
        """``POST path`` with the client credentials added; the parsed JSON answer.

        Raises the broker error tree: ``ReauthorizationRequired`` (ITEM_LOGIN_REQUIRED),
        ``AuthenticationFailed`` (access token gone), ``RateLimitExceeded`` (429),
        ``Transient`` (5xx, institution down, product not ready), ``Rejected`` (other 4xx),
        ``OutcomeUnknown`` for a write whose answer was lost.
        """
        payload = {**auth.client_body(self._settings), **body}
        response = await self._client().request("POST", path, json=payload, safe=safe)
        return _loads(response)

    # --- the link flow -------------------------------------------------------------------

    async def create_link_token(self, client_user_id: str, webhook: str | None) -> tuple[str, str]:
        """``/link/token/create`` for the investments product: (link_token, expiration)."""
        body: dict[str, Any] = {
            "client_name": self._settings.plaid_client_name[:30],  # "Maximum length of 30"
            "language": self._settings.plaid_language,
            "country_codes": list(self._settings.plaid_country_codes),
            "user": {"client_user_id": client_user_id},
            "products": ["investments"],
        }
        if webhook is not None:
            body["webhook"] = webhook
        answer = await self.call("/link/token/create", body)
        return _text(answer, "link_token"), _text(answer, "expiration")

    async def exchange_public_token(self, public_token: str) -> Exchanged:
        """``/item/public_token/exchange``: the Item's access token and id (a write: the
        public token is used up, so a lost answer is ``OutcomeUnknown``)."""
        answer = await self.call(
            "/item/public_token/exchange", {"public_token": public_token}, safe=False
        )
        return Exchanged(
            access_token=_text(answer, "access_token"), item_id=_text(answer, "item_id")
        )

    async def institution_name(self, institution_id: str) -> str:
        """``/institutions/get_by_id``: the institution's display name."""
        answer = await self.call(
            "/institutions/get_by_id",
            {
                "institution_id": institution_id,
                "country_codes": list(self._settings.plaid_country_codes),
            },
        )
        institution = answer.get("institution")
        if not isinstance(institution, dict):
            raise mapping.unknown("institution payload", type(institution).__name__)
        return _text(institution, "name")

    async def remove_item(self, access_token: str) -> None:
        """``/item/remove``: the access token stops working and Plaid stops billing the Item."""
        await self.call("/item/remove", {"access_token": access_token}, safe=False)

    async def webhook_key(self, kid: str) -> dict[str, Any]:
        """``/webhook_verification_key/get``: the JWK that verifies webhooks signed by ``kid``."""
        answer = await self.call("/webhook_verification_key/get", {"key_id": kid})
        key = answer.get("key")
        if not isinstance(key, dict):
            raise mapping.unknown("verification key payload", type(key).__name__)
        return key


class PlaidAdapter(PooledAdapter):
    """One Linked connection (one Plaid Item): the read half of ``BrokerAdapter``."""

    slug = SLUG
    capabilities = PLAID_CAPABILITIES

    def __init__(
        self, settings: Settings, credentials: Credentials | None, pool: HttpPool | None = None
    ) -> None:
        super().__init__(settings, pool)
        self._credentials = auth.require(credentials)
        per_minute = settings.plaid_requests_per_minute
        bucket = self._pacer(
            auth.item_key(self._credentials),
            per_minute=per_minute,
            capacity=max(1, min(settings.plaid_burst, per_minute)),
        )
        self.api = PlaidApi(settings, self._pool, bucket)

    def __repr__(self) -> str:
        return f"PlaidAdapter(base_url={self._settings.plaid_url!r})"

    @property
    def item_id(self) -> str:
        return self._credentials[auth.ITEM_ID]

    async def revoke(self) -> RevokeOutcome:
        """``/item/remove`` (https://plaid.com/docs/api/items/#itemremove): Plaid stops the
        Item (and billing it); its access token dies."""
        await self.api.remove_item(self._credentials[auth.ACCESS_TOKEN])
        return RevokeOutcome.revoked

    async def _item_call(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.api.call(
            path, {"access_token": self._credentials[auth.ACCESS_TOKEN], **(body or {})}
        )

    # --- accounts ----------------------------------------------------------------------

    async def linked_accounts(self) -> tuple[str, str | None, list[BrokerAccount]]:
        """``/accounts/get``: (institution id, the Item's institution name if Plaid gave it,
        the investment accounts). Other account types of the Item are left out."""
        body = await self._item_call("/accounts/get")
        institution = mapping.institution_of(body)
        item = body.get("item")
        name = item.get("institution_name") if isinstance(item, dict) else None
        listed = mapping.accounts_of(body)
        accounts: RowList[BrokerAccount] = RowList(
            mapping.broker_account(institution, a) for a in listed if a.is_investment
        )
        accounts.skipped = listed.skipped
        return institution, name if isinstance(name, str) and name else None, accounts

    async def list_accounts(self) -> list[BrokerAccount]:
        return (await self.linked_accounts())[2]

    async def get_balances(self, account_ref: str) -> Balances:
        """``/accounts/get``; where the institution gives no ``available`` cash, the cash
        holdings from ``/investments/holdings/get`` stand in."""
        account_id = mapping.account_id_of(account_ref)
        body = await self._item_call("/accounts/get")
        account = mapping.find_account(mapping.accounts_of(body), account_id)
        cash = None
        if account.available is None:
            cash = mapping.cash_of(await self._item_call("/investments/holdings/get"), account_id)
        return mapping.balances_from_wire(account, cash, self._now())

    async def get_positions(self, account_ref: str) -> list[Position]:
        account_id = mapping.account_id_of(account_ref)
        body = await self._item_call("/investments/holdings/get")
        mapping.find_account(mapping.accounts_of(body), account_id)
        positions, skipped = mapping.positions_from_wire(body, account_id, self._now())
        if skipped:
            log.info(
                "Plaid holdings the gateway does not model (options, bonds, untyped) left out",
                extra={"broker": SLUG, "count": skipped},
            )
        return positions

    async def get_position(self, account_ref: str, symbol: str) -> Position | None:
        if is_option_symbol(symbol):  # padded or not: positions carry the unpadded form
            symbol = OptionContract.parse(symbol).symbol
        for position in await self.get_positions(account_ref):
            if position.symbol == symbol:
                return position
        return None

    async def get_transactions(
        self, account_ref: str, start: datetime | None, end: datetime | None, type_: str | None
    ) -> list[Transaction]:
        """``/investments/transactions/get`` over [start, end] (dates; at most 24 months
        back, Plaid's history limit), newest first, up to ``MAX_PAGES`` pages."""
        account_id = mapping.account_id_of(account_ref)
        last: date = (end or self._now()).astimezone(UTC).date()
        first: date = (start.astimezone(UTC).date()) if start else last - HISTORY
        result: RowList[Transaction] = RowList()
        offset = 0
        for _ in range(MAX_PAGES):
            body = await self._item_call(
                "/investments/transactions/get",
                {
                    "start_date": first.isoformat(),
                    "end_date": last.isoformat(),
                    "options": {
                        "account_ids": [account_id],
                        "count": TRANSACTIONS_PER_PAGE,
                        "offset": offset,
                    },
                },
            )
            items = body.get("investment_transactions")
            total = body.get("total_investment_transactions")
            if not isinstance(items, list) or isinstance(total, bool) or not isinstance(total, int):
                raise mapping.unknown("investment transactions payload", sorted(body))
            securities = mapping.securities_of(body)
            page = read_rows(
                (i for i in items if isinstance(i, dict) and i.get("account_id") == account_id),
                functools.partial(mapping.transaction_from_wire, securities=securities),
                broker=SLUG,
                kind="transaction",
                row_id=lambda item: item.get("investment_transaction_id"),
            )
            result.extend(page)
            result.skipped += page.skipped
            offset += len(items)
            if not items or offset >= total:
                break
        if start is not None:
            result[:] = [t for t in result if t.occurred_at >= mapping.start_of(first)]
        if type_ is not None:
            result[:] = [t for t in result if t.type == type_]
        result.sort(key=lambda t: t.occurred_at, reverse=True)
        return result

    async def get_quotes(self, symbols: list[str]) -> dict[str, Quote]:
        raise errors.NotSupported("Plaid has no market data", broker=SLUG)

    # --- orders: none at Plaid ------------------------------------------------------------

    async def check_symbol(self, symbol: str) -> None:
        raise errors.NotSupported(READ_ONLY, broker=SLUG)

    async def place_order(self, account_ref: str, order: OrderRequest) -> BrokerOrder:
        raise errors.NotSupported(READ_ONLY, broker=SLUG)

    async def modify_order(
        self, account_ref: str, broker_order_id: str, changes: OrderChanges
    ) -> BrokerOrder:
        raise errors.NotSupported(READ_ONLY, broker=SLUG)

    async def cancel_order(self, account_ref: str, broker_order_id: str) -> BrokerOrder:
        raise errors.NotSupported(READ_ONLY, broker=SLUG)

    async def get_order(self, account_ref: str, broker_order_id: str) -> BrokerOrder:
        raise errors.OrderNotFound("no orders exist on a Linked account", broker=SLUG)

    async def find_order_by_client_id(
        self, account_ref: str, client_order_id: str
    ) -> BrokerOrder | None:
        return None

    async def list_orders(
        self, account_ref: str, status: OrderListFilter, limit: int
    ) -> list[BrokerOrder]:
        return []

    async def order_history(
        self, account_ref: str, start: datetime | None, end: datetime | None, symbol: str | None
    ) -> list[BrokerOrder]:
        return []

    def stream_order_updates(self, account_ref: str) -> AsyncIterator[OrderUpdate] | None:
        return None
