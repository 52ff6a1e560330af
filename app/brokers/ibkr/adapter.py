"""The Interactive Brokers adapter: the Client Portal Web API through the user's gateway.

One adapter per connection, bound to its gateway URL (``auth``). ``account_ref`` is the
IBKR account id (``DU...`` for paper logins); several may sit behind one login.

Quirks, with their doc pages (IBKR Campus, Client Portal Web API,
https://www.interactivebrokers.com/campus/ibkr-api-page/cpapi-v1/):

* Session first: ``/iserver/auth/status`` must say authenticated (the user logged in
  at the gateway), and ``GET /iserver/accounts`` must precede order and market-data calls
  ("pre-flight"). Both are remembered per gateway for ``SESSION_TTL``; ``POST /tickle``
  keeps the session alive (IBKR: at least once a minute), sent when the last one is older
  than ``TICKLE_EVERY`` before any other request.
* Contracts are ``conid``s: ``GET /iserver/secdef/search?symbol=`` once per symbol, then
  remembered (``CONID_TTL``).
* Placing (and modifying) may answer a question instead of an order
  (``[{"id", "message": [...], "messageIds": [...]}]``), answered with
  ``POST /iserver/reply/{id}`` and possibly followed by another. Only questions whose every
  message id is in ``settings.ibkr_auto_confirm`` are confirmed; any other is declined
  (``{"confirmed": false}``) and the order is ``Rejected`` with the question's text.
* ``cOID`` is our client order id; live orders echo it as ``order_ref``. The single-order
  status answer does not carry it.
* Strict pacing (Campus "Pacing Limitations"): 10 requests per second per gateway, and one
  per 5 seconds for ``/iserver/account/orders``, ``/iserver/account/trades`` and
  ``/portfolio/accounts``; a breach answers 429 and puts the caller in a penalty box.
  Every request takes the global bucket; those endpoints take their own bucket first
  (paced a little under IBKR's figures, ``settings.ibkr_requests_per_second`` and
  ``ibkr_slow_endpoint_seconds``).
* The first ``/iserver/account/orders`` of a session may come back empty with
  ``"snapshot": false`` while the gateway subscribes: asked once more.
* No stream here (the gateway's WebSocket ``sor`` topic is not used): open orders are
  polled by the reconciler's open-order sweep.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from app.brokers import errors
from app.brokers.base import (
    AssetClass,
    Balances,
    BrokerAccount,
    BrokerOrder,
    Capabilities,
    OrderChanges,
    OrderListFilter,
    OrderRequest,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Position,
    Quote,
    Support,
    TimeInForce,
    Transaction,
)
from app.brokers.http import BrokerClient, HttpPool, Pacer
from app.brokers.ibkr import auth, mapping
from app.brokers.ibkr.mapping import SLUG
from app.brokers.pooled_adapter import PooledAdapter
from app.config import Settings
from app.security.credentials import Credentials

log = logging.getLogger(__name__)

N, U = Support.native, Support.unsupported

IBKR_CAPABILITIES = Capabilities(
    # IBKR trades nearly everything; this adapter maps US stock orders by conid only.
    asset_classes={
        AssetClass.equity: N,
        AssetClass.option: U,
        AssetClass.crypto: U,
        AssetClass.mutual_fund: U,
    },
    order_types=dict.fromkeys(OrderType, N),
    time_in_force={
        TimeInForce.day: N,
        TimeInForce.gtc: N,
        TimeInForce.ioc: N,
        TimeInForce.fok: U,
    },
    fractional=U,
    extended_hours=N,  # outsideRTH
    short_selling=U,
    multi_leg=U,
    modify=N,
    order_stream=U,  # polled by the reconciler's open-order sweep
    client_order_ids=N,
)

SESSION_TTL = 60.0  # seconds an authenticated status + pre-flight are trusted
TICKLE_EVERY = 55.0
CONID_TTL = 86400.0
MAX_QUESTIONS = 10
SNAPSHOT_ATTEMPTS = 3
POSITIONS_PAGE = 100  # "pageSize": 100 in the recorded positions answer


def _loads(response: httpx.Response) -> Any:
    return mapping.WIRE.json_body(response)


class _Both:
    """An endpoint's own pacer, then the gateway's global one."""

    def __init__(self, endpoint: Pacer, overall: Pacer) -> None:
        self._endpoint, self._overall = endpoint, overall

    async def acquire(self, broker: str = "") -> None:
        await self._endpoint.acquire(broker)
        await self._overall.acquire(broker)


class IbkrAdapter(PooledAdapter):
    slug = SLUG
    capabilities = IBKR_CAPABILITIES

    def __init__(
        self, settings: Settings, credentials: Credentials | None, pool: HttpPool | None = None
    ) -> None:
        super().__init__(settings, pool)
        self._url = auth.base_url(credentials, settings.ibkr_gateway_hosts)
        key = auth.bucket_key(self._url)
        # Capacity one: a sliding one-second window never sees more than rate + 1.
        overall = self._pool.bucket(SLUG, key, rate=settings.ibkr_requests_per_second, capacity=1)
        verify: bool | str = settings.ibkr_gateway_ca_bundle or settings.ibkr_gateway_verify_tls

        def client(bucket: Pacer) -> BrokerClient:
            return self._broker_client(
                self._url,
                headers={"Accept": "application/json"},
                bucket=bucket,
                classifier=mapping.classify,
                verify=verify,
            )

        def slow(name: str, seconds: float) -> Pacer:
            own = self._pool.bucket(
                f"{SLUG}:{name}", key, rate=1.0 / seconds, capacity=1, max_wait=seconds + 1.0
            )
            return _Both(own, overall)

        every = settings.ibkr_slow_endpoint_seconds
        self._api = client(overall)
        self._orders_list = client(slow("orders", every))
        self._trades = client(slow("trades", every))
        self._portfolio_accounts = client(slow("portfolio-accounts", every))
        self._tickler = client(slow("tickle", 1.1))  # IBKR: one per second

    def __repr__(self) -> str:
        return "IbkrAdapter(gateway=<sealed>)"

    # --- session ---------------------------------------------------------------------

    async def auth_status(self) -> dict[str, Any]:
        """``GET /iserver/auth/status`` (the gateway takes GET or POST; GET is a read, so a
        lost answer is retried): also how a new gateway URL is validated."""
        body = _loads(await self._api.request("GET", "/iserver/auth/status"))
        if not isinstance(body, dict):
            raise mapping.unknown("auth status payload", type(body).__name__)
        if body.get("authenticated") is not True or body.get("connected") is not True:
            raise errors.AuthenticationFailed(
                "the IBKR gateway has no brokerage session; log in at the gateway",
                broker=SLUG,
            )
        if body.get("competing") is True:
            raise errors.AuthenticationFailed(
                "another IBKR session competes with the gateway's; log in again there",
                broker=SLUG,
            )
        return body

    async def keepalive(self) -> None:
        """``POST /tickle`` (IBKR asks for one at least every minute while in use)."""
        body = _loads(await self._tickler.request("POST", "/tickle"))
        status = (body.get("iserver") or {}).get("authStatus") if isinstance(body, dict) else None
        if not isinstance(status, dict) or status.get("authenticated") is not True:
            self._forget_session()
            raise errors.AuthenticationFailed(
                "the IBKR gateway's session ended; log in at the gateway", broker=SLUG
            )
        self._pool.remember(("ibkr-tickle", self._url), True, TICKLE_EVERY)

    def _forget_session(self) -> None:
        self._pool.remember(("ibkr-session", self._url), None, 0)

    async def _accounts_body(self) -> dict[str, Any]:
        body = _loads(await self._api.request("GET", "/iserver/accounts"))
        if not isinstance(body, dict) or not isinstance(body.get("accounts"), list):
            raise mapping.unknown("accounts payload", type(body).__name__)
        return body

    async def _ready(self) -> dict[str, Any]:
        """The session checks every call needs, remembered per gateway (see the module
        docstring); a tickle when the last is due."""
        memo = self._pool.recall(("ibkr-session", self._url))
        if isinstance(memo, dict):
            if self._pool.recall(("ibkr-tickle", self._url)) is not True:
                await self.keepalive()
            return memo
        await self.auth_status()
        accounts = await self._accounts_body()  # the pre-flight
        self._pool.remember(("ibkr-session", self._url), accounts, SESSION_TTL)
        self._pool.remember(("ibkr-tickle", self._url), True, TICKLE_EVERY)
        return accounts

    async def _request(self, client: BrokerClient, method: str, path: str, **kw: Any) -> Any:
        await self._ready()
        try:
            return _loads(await client.request(method, path, **kw))
        except errors.AuthenticationFailed:
            self._forget_session()
            raise

    # --- account ---------------------------------------------------------------------

    async def list_accounts(self) -> list[BrokerAccount]:
        body = await self._ready()
        paper = body.get("isPaper") is True
        result = []
        for account_id in body["accounts"]:
            if not isinstance(account_id, str) or not account_id:
                raise mapping.unknown("account id", account_id)
            masked = "****" + account_id[-4:] if len(account_id) > 4 else "****"
            name = f"IBKR {masked}{' (paper)' if paper else ''}"
            result.append(BrokerAccount(account_id, name, masked))
        return result

    async def _portfolio_ready(self) -> None:
        """``GET /portfolio/accounts`` must precede the portfolio endpoints (once a session)."""
        if self._pool.recall(("ibkr-portfolio", self._url)) is True:
            return
        await self._request(self._portfolio_accounts, "GET", "/portfolio/accounts")
        self._pool.remember(("ibkr-portfolio", self._url), True, SESSION_TTL)

    async def get_balances(self, account_ref: str) -> Balances:
        await self._portfolio_ready()
        body = await self._request(
            self._api, "GET", f"/portfolio/{quote(account_ref, safe='')}/summary"
        )
        return mapping.balances_from_summary(body, self._now())

    async def get_positions(self, account_ref: str) -> list[Position]:
        await self._portfolio_ready()
        now = self._now()
        result: list[Position] = []
        for page in range(20):
            body = await self._request(
                self._api, "GET", f"/portfolio/{quote(account_ref, safe='')}/positions/{page}"
            )
            if not isinstance(body, list):
                raise mapping.unknown("positions payload", type(body).__name__)
            result.extend(mapping.position_from_wire(item, now) for item in body)
            if len(body) < POSITIONS_PAGE:
                break
        return [p for p in result if p.quantity]

    async def get_position(self, account_ref: str, symbol: str) -> Position | None:
        return next((p for p in await self.get_positions(account_ref) if p.symbol == symbol), None)

    async def conid(self, symbol: str) -> int:
        """The stock's contract id (``GET /iserver/secdef/search``), remembered a day."""
        memo_key = ("ibkr-conid", self._url, symbol)
        found = self._pool.recall(memo_key)
        if isinstance(found, int):
            return found
        body = await self._request(
            self._api, "GET", "/iserver/secdef/search", params={"symbol": symbol}
        )
        if isinstance(body, dict) and "error" in body:
            raise errors.UnknownSymbol(f"IBKR does not list {symbol}", broker=SLUG)
        if not isinstance(body, list):
            raise mapping.unknown("secdef search payload", type(body).__name__)
        for item in body:
            if not isinstance(item, dict) or item.get("symbol") != symbol:
                continue
            sections = item.get("sections") or []
            if any(isinstance(s, dict) and s.get("secType") == "STK" for s in sections):
                conid = int(str(item.get("conid")))
                self._pool.remember(memo_key, conid, CONID_TTL)
                return conid
        raise errors.UnknownSymbol(f"IBKR does not list {symbol}", broker=SLUG)

    async def check_symbol(self, symbol: str) -> None:
        await self.conid(symbol)

    # --- orders ----------------------------------------------------------------------

    async def _answer_questions(self, body: object) -> dict[str, Any]:
        """Follow the reply chain to the order's acknowledgement (see the module docstring)."""
        allowed = set(self._settings.ibkr_auto_confirm)
        for _ in range(MAX_QUESTIONS):
            if isinstance(body, dict) and isinstance(body.get("error"), str):
                raise mapping.refusal(body["error"])
            if not isinstance(body, list) or not body or not isinstance(body[0], dict):
                raise mapping.unknown("order answer", type(body).__name__)
            first: dict[str, Any] = body[0]
            if isinstance(first.get("error"), str):
                raise mapping.refusal(first["error"])
            if "order_id" in first:
                return first
            messages = first.get("message")
            reply_id = first.get("id")
            if not isinstance(messages, list) or not isinstance(reply_id, str):
                raise mapping.unknown("order answer", sorted(first))
            question = " ".join(str(m).strip() for m in messages)
            ids = [str(i) for i in first.get("messageIds") or []]
            if not ids or not set(ids) <= allowed:
                await self._decline(reply_id)
                raise errors.Rejected(f"IBKR asked: {question}", broker=SLUG)
            log.info("confirming an IBKR order question", extra={"message_ids": ids})
            body = _loads(
                await self._api.request(
                    "POST", f"/iserver/reply/{quote(reply_id, safe='')}", json={"confirmed": True}
                )
            )
        raise errors.OutcomeUnknown("IBKR kept asking questions about the order", broker=SLUG)

    async def _decline(self, reply_id: str) -> None:
        """Discard the waiting order (``confirmed: false``). Best effort: unanswered, the
        question expires and the order is never transmitted either way."""
        try:
            await self._api.request(
                "POST", f"/iserver/reply/{quote(reply_id, safe='')}", json={"confirmed": False}
            )
        except errors.BrokerError as exc:
            log.warning("declining an IBKR question failed", extra={"reason": exc.reason})

    async def place_order(self, account_ref: str, order: OrderRequest) -> BrokerOrder:
        conid = await self.conid(order.symbol)
        body = {"orders": [mapping.order_to_wire(order, account_ref, conid)]}
        try:
            answer = await self._request(
                self._api,
                "POST",
                f"/iserver/account/{quote(account_ref, safe='')}/orders",
                json=body,
            )
            ack = await self._answer_questions(answer)
        except mapping.DuplicateClientOrderId as exc:
            found = await self._adopt(account_ref, order.client_order_id)
            if found is None:
                raise errors.Rejected(exc.reason, broker=SLUG) from exc
            return found
        placed = await self._read_after_write(account_ref, str(ack["order_id"]), "placed")
        return dataclasses.replace(placed, client_order_id=order.client_order_id)

    async def _adopt(self, account_ref: str, client_order_id: str) -> BrokerOrder | None:
        try:
            return await self.find_order_by_client_id(account_ref, client_order_id)
        except errors.BrokerError as lookup:
            raise errors.OutcomeUnknown(
                f"the cOID is in use at IBKR but its order could not be read: {lookup.reason}",
                broker=SLUG,
            ) from lookup

    async def _read_after_write(self, account_ref: str, order_id: str, what: str) -> BrokerOrder:
        try:
            return await self.get_order(account_ref, order_id)
        except errors.BrokerError as exc:
            raise errors.OutcomeUnknown(
                f"the order was {what} but could not be read: {exc.reason}", broker=SLUG
            ) from exc

    async def modify_order(
        self, account_ref: str, broker_order_id: str, changes: OrderChanges
    ) -> BrokerOrder:
        """``POST /iserver/account/{accountId}/order/{orderId}`` with the whole order (IBKR
        takes no partial change); same reply chain as placing; the id stays."""
        current = await self.get_order(account_ref, broker_order_id)
        if changes.is_empty():
            return current
        conid = await self.conid(current.symbol)
        body: dict[str, Any] = {
            "acctId": account_ref,
            "conid": conid,
            "orderType": mapping.wire_type(current.order_type),
            "side": "BUY" if current.side.value == "buy" else "SELL",
            "quantity": mapping.number(changes.quantity or current.quantity),
            "tif": mapping.wire_tif(changes.time_in_force or current.time_in_force),
        }
        body.update(
            mapping.prices_to_wire(
                current.order_type,
                changes.limit_price or current.limit_price,
                changes.stop_price or current.stop_price,
            )
        )
        answer = await self._request(
            self._api,
            "POST",
            f"/iserver/account/{quote(account_ref, safe='')}/order/"
            f"{quote(broker_order_id, safe='')}",
            json=body,
        )
        await self._answer_questions(answer)
        changed = await self._read_after_write(account_ref, broker_order_id, "changed")
        return dataclasses.replace(changed, client_order_id=current.client_order_id)

    async def cancel_order(self, account_ref: str, broker_order_id: str) -> BrokerOrder:
        body = await self._request(
            self._api,
            "DELETE",
            f"/iserver/account/{quote(account_ref, safe='')}/order/"
            f"{quote(broker_order_id, safe='')}",
        )
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            raise errors.OrderNotModifiable(body["error"], broker=SLUG)
        current = await self._read_after_write(account_ref, broker_order_id, "cancelled")
        if current.status in (OrderStatus.accepted, OrderStatus.partially_filled):
            # "Request was submitted": the cancel is on its way.
            return dataclasses.replace(current, status=OrderStatus.pending_cancel)
        return current

    async def get_order(self, account_ref: str, broker_order_id: str) -> BrokerOrder:
        body = await self._request(
            self._api,
            "GET",
            f"/iserver/account/order/status/{quote(broker_order_id, safe='')}",
        )
        if isinstance(body, dict) and "order_id" not in body and "error" in body:
            raise errors.OrderNotFound(str(body["error"]), broker=SLUG)
        return mapping.order_from_status(body)

    async def _live_orders(self, account_ref: str) -> list[BrokerOrder]:
        """``GET /iserver/account/orders`` (paced: one per 5 seconds), asked again once while
        the gateway answers an empty ``snapshot: false`` subscription reply."""
        orders: list[Any] = []
        for _ in range(2):
            body = await self._request(
                self._orders_list,
                "GET",
                "/iserver/account/orders",
                params={"accountId": account_ref},
            )
            if not isinstance(body, dict) or not isinstance(body.get("orders"), list):
                raise mapping.unknown("live orders payload", type(body).__name__)
            orders = body["orders"]
            if orders or body.get("snapshot") is not False:
                break
        result = []
        for item in orders:
            if isinstance(item, dict) and item.get("acct", account_ref) != account_ref:
                continue
            result.append(mapping.order_from_live(item))
        return result

    async def find_order_by_client_id(
        self, account_ref: str, client_order_id: str
    ) -> BrokerOrder | None:
        found = [
            o for o in await self._live_orders(account_ref) if o.client_order_id == client_order_id
        ]
        return found[0] if found else None

    async def list_orders(
        self, account_ref: str, status: OrderListFilter, limit: int
    ) -> list[BrokerOrder]:
        found = await self._live_orders(account_ref)
        open_states = (
            OrderStatus.submitted,
            OrderStatus.accepted,
            OrderStatus.partially_filled,
            OrderStatus.pending_cancel,
        )
        if status == "open":
            found = [o for o in found if o.status in open_states]
        elif status == "closed":
            found = [o for o in found if o.status not in open_states]
        found.sort(key=lambda o: o.created_at, reverse=True)
        return found[: max(1, limit)]

    async def order_history(
        self, account_ref: str, start: datetime | None, end: datetime | None, symbol: str | None
    ) -> list[BrokerOrder]:
        """The gateway's live-order list: this session's orders (IBKR keeps no longer
        history here; statements are outside this API)."""
        found = await self._live_orders(account_ref)
        return [
            o
            for o in found
            if (symbol is None or o.symbol == symbol)
            and (start is None or o.created_at >= start)
            and (end is None or o.created_at <= end)
        ]

    async def get_transactions(
        self, account_ref: str, start: datetime | None, end: datetime | None, type_: str | None
    ) -> list[Transaction]:
        """Executions of the last 7 days (``GET /iserver/account/trades?days=7``)."""
        if type_ is not None and type_ not in ("buy", "sell"):
            return []
        body = await self._request(
            self._trades,
            "GET",
            "/iserver/account/trades",
            params={"days": "7", "accountId": account_ref},
        )
        if not isinstance(body, list):
            raise mapping.unknown("trades payload", type(body).__name__)
        trades = [mapping.trade_from_execution(item) for item in body]
        return [
            t
            for t in trades
            if (type_ is None or t.type == type_)
            and (start is None or t.occurred_at >= start)
            and (end is None or t.occurred_at <= end)
        ]

    async def get_quotes(self, symbols: list[str]) -> dict[str, Quote]:
        """``GET /iserver/marketdata/snapshot?conids=&fields=31,84,86``; the first request
        for a conid starts its subscription and may lack the fields: asked again."""
        conids: dict[int, str] = {}
        for symbol in symbols:
            try:
                conids[await self.conid(symbol)] = symbol
            except errors.UnknownSymbol:
                continue
        result: dict[str, Quote] = {}
        for _ in range(SNAPSHOT_ATTEMPTS):
            wanted = [c for c, s in conids.items() if s not in result]
            if not wanted:
                break
            body = await self._request(
                self._api,
                "GET",
                "/iserver/marketdata/snapshot",
                params={
                    "conids": ",".join(str(c) for c in wanted),
                    "fields": mapping.SNAPSHOT_FIELDS,
                },
            )
            if not isinstance(body, list):
                raise mapping.unknown("snapshot payload", type(body).__name__)
            for item in body:
                if not isinstance(item, dict):
                    continue
                found = conids.get(int(str(item.get("conid"))))
                if found is None:
                    continue
                quote_ = mapping.quote_from_snapshot(item, found)
                if quote_ is not None:
                    result[found] = quote_
        return result

    def stream_order_updates(self, account_ref: str) -> AsyncIterator[OrderUpdate] | None:
        return None  # the reconciler polls open orders
