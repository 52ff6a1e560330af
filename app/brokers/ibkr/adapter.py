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

Options (``options.py`` has the wire formats and their sources):

* Contracts are conids, found by the secdef walk: ``GET /iserver/secdef/search?symbol=``
  (the underlying's conid, its option ``months`` and, where IBKR sends them, the listed
  expiration dates ``opt``) -> ``GET /iserver/secdef/strikes?conid=&sectype=OPT&month=``
  -> ``GET /iserver/secdef/info?conid=&sectype=OPT&month=&strike=&right=`` (the month's
  contracts for one strike and right, weeklies included, each with its conid). Remembered
  per gateway: the search's option listing ``LISTING_TTL`` (an hour: weeklies are listed
  daily), a month's strikes ``STRIKES_TTL`` (15 minutes: strikes are added intraday when the
  underlying moves), a strike's contracts and every contract's conid ``CONTRACT_TTL`` (a
  day: a conid is fixed for the contract's life). Reverse (conid -> contract, for orders
  and executions read back) from the same memo, else ``GET /trsrv/secdef?conids=``.
* Pacing: IBKR's pacing table lists no limit of its own for the secdef endpoints (Campus
  "Pacing Limitations"; the copy in ``../shared/reference/broker-apis.md`` §6), so they
  take the global 10 requests a second like everything else (paced at
  ``ibkr_requests_per_second``); ``/iserver/marketdata/snapshot``'s own 10/s is the same
  figure. The walk is sequential so no request waits in the pacer longer than one token.
* Chain quotes: ``GET /iserver/marketdata/snapshot?conids=&fields=`` (``OPTION_FIELDS``),
  up to ``SNAPSHOT_BATCH`` conids a request; the first request for a conid only subscribes,
  so those still without bid/ask are asked again (``SNAPSHOT_ATTEMPTS``); a contract still
  without a quote is listed with ``bid``/``ask`` None, never an invented price.
* Orders: a single leg by the option's conid; a combo by ``conidex`` with the currency's
  spread conid and signed ratios, BUY, signed net price (credit negative). Same question
  chain as equities. ``POST /iserver/account/{id}/orders/whatif`` previews (after a
  snapshot of the instruments, as ibind's ``whatif_order`` says IBKR requires).
* Lifecycle: IBKR's Web API documents no expiration/exercise/assignment feed;
  ``/iserver/account/trades`` documents only executions (``side`` B|S, no event type), so
  option executions become buy/sell transactions and expirations, exercises and
  assignments are not reported by this adapter (they reach the account as position changes).
  ``POST /pa/transactions`` is no source either: one conid a request, one request per 15
  minutes, and its documented kinds are "dividend payments, buy and sell transactions,
  transfers" (ibind ``portfolio_mixin.transaction_history``;
  https://docs.rs/ib_client/1.0.0/ib_client/apis/portfolio_analyst_api/fn.pa_transactions_post.html).
  So IBKR is not swept for lifecycle events (app/services/lifecycle.py).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx

from app.brokers import errors
from app.brokers.base import (
    AssetClass,
    Balances,
    Bar,
    BarInterval,
    BrokerAccount,
    BrokerOrder,
    Capabilities,
    OptionCapabilities,
    OptionChainQuery,
    OptionContract,
    OptionExpiration,
    OptionQuote,
    OptionRight,
    OrderChanges,
    OrderListFilter,
    OrderPreview,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Position,
    PositionEffect,
    PriceEffect,
    Quote,
    Support,
    TimeInForce,
    Transaction,
    is_option_symbol,
)
from app.brokers.http import BrokerClient, HttpPool, Pacer, tls_context
from app.brokers.ibkr import auth, mapping, market_data, options
from app.brokers.ibkr.mapping import SLUG
from app.brokers.ibkr.options import Listed, OptionListing
from app.brokers.pooled_adapter import PooledAdapter
from app.brokers.rows import RowList, read_rows
from app.config import Settings
from app.security.credentials import Credentials

log = logging.getLogger(__name__)

N, U = Support.native, Support.unsupported

IBKR_CAPABILITIES = Capabilities(
    # IBKR trades nearly everything; this adapter maps US stocks and equity options.
    asset_classes={
        AssetClass.equity: N,
        AssetClass.option: N,
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
    # IBKR stock orders carry no open/close: a SELL with no long position opens a short (in
    # a margin account). ``position_effect`` is checked against the position, not sent.
    short_selling=N,
    multi_leg=N,  # combos: conidex with the spread conid
    modify=N,
    order_stream=U,  # polled by the reconciler's open-order sweep
    client_order_ids=N,
    options=OptionCapabilities(
        chain=N,  # the secdef walk (search -> strikes -> info) plus snapshots
        expirations=N,  # the search's option dates / months
        max_legs=options.MAX_LEGS,
        combo_order_types=options.COMBO_ORDER_TYPES,
        combo_time_in_force=options.COMBO_TIFS,
        greeks=N,  # snapshot fields 7308-7311, 7633
    ),
    preview=N,  # POST /iserver/account/{id}/orders/whatif
    market_data=market_data.IBKR_MARKET_DATA,  # the gateway WebSocket's smd (market_data.py)
)

SESSION_TTL = 60.0  # seconds an authenticated status + pre-flight are trusted
TICKLE_EVERY = 55.0
CONID_TTL = 86400.0
MAX_QUESTIONS = 10
SNAPSHOT_ATTEMPTS = 3
POSITIONS_PAGE = 100  # "pageSize": 100 in the recorded positions answer
LISTING_TTL = 3600.0  # an underlying's option months and dates
STRIKES_TTL = 900.0  # a month's strikes
CONTRACT_TTL = 86400.0  # a strike's contracts, a contract's conid (and back)
SNAPSHOT_BATCH = 100  # conids per snapshot request


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
        # One TLS context for the REST clients and the market WebSocket alike.
        self._tls = tls_context(verify)

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

        def account(account_id: object) -> BrokerAccount:
            if not isinstance(account_id, str) or not account_id:
                raise mapping.unknown("account id", account_id)
            masked = "****" + account_id[-4:] if len(account_id) > 4 else "****"
            name = f"IBKR {masked}{' (paper)' if paper else ''}"
            return BrokerAccount(account_id, name, masked)

        return read_rows(
            body["accounts"],
            account,
            broker=SLUG,
            kind="account",
            row_id=lambda number: "****" + str(number)[-4:],  # an account number: masked
        )

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
        result: RowList[Position] = RowList()
        for page in range(20):
            body = await self._request(
                self._api, "GET", f"/portfolio/{quote(account_ref, safe='')}/positions/{page}"
            )
            if not isinstance(body, list):
                raise mapping.unknown("positions payload", type(body).__name__)
            rows = read_rows(
                body,
                lambda item: (
                    options.option_position_from_wire(item, now)
                    if isinstance(item, dict) and item.get("assetClass") == "OPT"
                    else mapping.position_from_wire(item, now)
                ),
                broker=SLUG,
                kind="position",
                row_id=_conid_of,
            )
            result.extend(p for p in rows if p.quantity)
            result.skipped += rows.skipped
            if len(body) < POSITIONS_PAGE:
                break
        return result

    async def get_position(self, account_ref: str, symbol: str) -> Position | None:
        if is_option_symbol(symbol):
            symbol = options.order_contract(symbol).symbol  # padded or not
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
        """A stock's conid, or an option's (the secdef walk, remembered for the order)."""
        if is_option_symbol(symbol):
            await self.resolve(options.order_contract(symbol))
            return
        await self.conid(symbol)

    # --- options: the secdef walk ------------------------------------------------------

    async def _option_listing(self, underlying: str) -> OptionListing:
        """``GET /iserver/secdef/search?symbol=``: the underlying's conid and option months
        and dates, remembered ``LISTING_TTL``."""
        memo_key = ("ibkr-opt-listing", self._url, underlying)
        found = self._pool.recall(memo_key)
        if isinstance(found, OptionListing):
            return found
        body = await self._request(
            self._api, "GET", "/iserver/secdef/search", params={"symbol": underlying}
        )
        listing = options.listing_from_search(body, underlying)
        if listing is None:
            raise errors.UnknownSymbol(f"IBKR lists no options on {underlying}", broker=SLUG)
        self._pool.remember(memo_key, listing, LISTING_TTL)
        return listing

    async def _strikes(self, conid: int, month: str) -> tuple[list[Decimal], list[Decimal]]:
        """``GET /iserver/secdef/strikes``: (call strikes, put strikes), ``STRIKES_TTL``."""
        memo_key = ("ibkr-strikes", self._url, str(conid), month)
        found = self._pool.recall(memo_key)
        if isinstance(found, tuple):
            return found
        body = await self._request(
            self._api,
            "GET",
            "/iserver/secdef/strikes",
            params={"conid": str(conid), "sectype": "OPT", "month": month},
        )
        if isinstance(body, dict) and "error" in body:
            raise errors.UnknownSymbol(f"IBKR lists no strikes for {month}", broker=SLUG)
        strikes = (
            options.strikes_from_wire(body, OptionRight.call),
            options.strikes_from_wire(body, OptionRight.put),
        )
        self._pool.remember(memo_key, strikes, STRIKES_TTL)
        return strikes

    async def _info(
        self, conid: int, month: str, strike: Decimal, right: OptionRight
    ) -> list[Listed]:
        """``GET /iserver/secdef/info``: the month's contracts at one strike and right,
        ``CONTRACT_TTL``; each is remembered both ways (symbol <-> conid)."""
        wire_strike, wire_right = options.strike_param(strike), options.WIRE_RIGHTS[right]
        memo_key = ("ibkr-info", self._url, str(conid), month, wire_strike, wire_right)
        found = self._pool.recall(memo_key)
        if isinstance(found, list):
            return found
        body = await self._request(
            self._api,
            "GET",
            "/iserver/secdef/info",
            params={
                "conid": str(conid),
                "sectype": "OPT",
                "month": month,
                "strike": wire_strike,
                "right": wire_right,
            },
        )
        listed = options.listed_from_info(body)
        for item in listed:
            self._remember_listed(item)
        self._pool.remember(memo_key, listed, CONTRACT_TTL)
        return listed

    def _remember_listed(self, item: Listed) -> None:
        self._pool.remember(("ibkr-option", self._url, item.contract.symbol), item, CONTRACT_TTL)
        self._pool.remember(("ibkr-option-conid", self._url, str(item.conid)), item, CONTRACT_TTL)

    async def resolve(self, contract: OptionContract) -> Listed:
        """The contract's conid: remembered, else the walk (search -> info for its month,
        strike and right; the entry with its expiration and root)."""
        found = self._pool.recall(("ibkr-option", self._url, contract.symbol))
        if isinstance(found, Listed):
            return found
        listing = await self._option_listing(contract.underlying)
        month = options.month_code(contract.expiration)
        if month not in listing.months:
            raise errors.UnknownSymbol(f"IBKR lists no {contract.symbol}", broker=SLUG)
        for item in await self._info(
            listing.underlying_conid, month, contract.strike, contract.right
        ):
            same = item.contract
            if (
                same.expiration == contract.expiration
                and same.root == contract.root
                and same.strike == contract.strike
                and same.right is contract.right
            ):
                return item
        raise errors.UnknownSymbol(f"IBKR lists no {contract.symbol}", broker=SLUG)

    async def _contract_of(self, conid: int) -> Listed:
        """The option a conid names: remembered, else ``GET /trsrv/secdef?conids=``."""
        found = self._pool.recall(("ibkr-option-conid", self._url, str(conid)))
        if isinstance(found, Listed):
            return found
        body = await self._request(self._api, "GET", "/trsrv/secdef", params={"conids": str(conid)})
        rows = body.get("secdef") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise mapping.unknown("secdef payload", type(body).__name__)
        for row in rows:
            if isinstance(row, dict) and row.get("conid") == conid:
                item = options.contract_from_secdef(row)
                self._remember_listed(item)
                return item
        raise mapping.unknown("option conid", conid)

    async def list_option_expirations(self, underlying: str) -> list[OptionExpiration]:
        """The search's ``opt`` dates; where IBKR sends only ``months``, each month's dates
        from one strike's ``secdef/info`` (weeklies are separate entries there)."""
        listing = await self._option_listing(underlying)
        today = options.utc_today(self._now())
        if listing.dates is not None:
            return options.expirations(listing.dates, today)
        dates: list[date] = []
        for month in listing.months:
            calls, puts = await self._strikes(listing.underlying_conid, month)
            strikes, right = (calls, OptionRight.call) if calls else (puts, OptionRight.put)
            if not strikes:
                continue
            middle = strikes[len(strikes) // 2]
            found = await self._info(listing.underlying_conid, month, middle, right)
            dates.extend(item.contract.expiration for item in found)
        return options.expirations(dates, today)

    async def get_option_chain(self, query: OptionChainQuery) -> list[OptionQuote]:
        """One expiration (the nearest listed when the query names none): the month's
        strikes, narrowed by the query's right and strike range before the walk (each strike
        and right is one ``secdef/info``), then the contracts' snapshots."""
        listing = await self._option_listing(query.underlying)
        expiration = query.expiration
        if expiration is None:
            listed = await self.list_option_expirations(query.underlying)
            if not listed:
                return []
            expiration = listed[0].expiration
        month = options.month_code(expiration)
        if month not in listing.months:
            return []
        calls, puts = await self._strikes(listing.underlying_conid, month)
        wanted: list[Listed] = []
        for right, strikes in ((OptionRight.call, calls), (OptionRight.put, puts)):
            if query.right is not None and query.right is not right:
                continue
            for strike in strikes:
                if query.strike_gte is not None and strike < query.strike_gte:
                    continue
                if query.strike_lte is not None and strike > query.strike_lte:
                    continue
                found = await self._info(listing.underlying_conid, month, strike, right)
                wanted.extend(i for i in found if i.contract.expiration == expiration)
        return await self._option_quotes(wanted)

    async def _snapshot_items(self, conids: list[int], fields: str) -> dict[int, dict[str, Any]]:
        """Snapshot entries per conid, asking again (``SNAPSHOT_ATTEMPTS``) for those whose
        bid/ask have not arrived (the first request for a conid only subscribes)."""
        items: dict[int, dict[str, Any]] = {}
        for _ in range(SNAPSHOT_ATTEMPTS):
            missing = [c for c in conids if not options.has_quote(items.get(c, {}))]
            if not missing:
                break
            for start in range(0, len(missing), SNAPSHOT_BATCH):
                batch = missing[start : start + SNAPSHOT_BATCH]
                body = await self._request(
                    self._api,
                    "GET",
                    "/iserver/marketdata/snapshot",
                    params={"conids": ",".join(str(c) for c in batch), "fields": fields},
                )
                if not isinstance(body, list):
                    raise mapping.unknown("snapshot payload", type(body).__name__)
                for item in body:
                    if isinstance(item, dict) and str(item.get("conid", "")).isdigit():
                        items[int(str(item["conid"]))] = item
        return items

    async def _option_quotes(self, listed: list[Listed]) -> list[OptionQuote]:
        items = await self._snapshot_items([i.conid for i in listed], options.OPTION_FIELDS)
        now = self._now()
        return [
            options.option_quote_from_snapshot(items.get(i.conid, {}), i.contract, now)
            for i in listed
        ]

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

    async def _order_body(
        self, account_ref: str, order: OrderRequest
    ) -> tuple[dict[str, Any], list[int]]:
        """The order's wire entry and the conids it trades. Option orders are checked first
        (``options.check_option_order``: everything IBKR cannot take is refused here, before
        any request), then their contracts resolved to conids."""
        if not order.is_multi_leg and not is_option_symbol(order.symbol):
            conid = await self.conid(order.symbol)
            return mapping.order_to_wire(order, account_ref, conid), [conid]
        contracts = options.check_option_order(order, options.utc_today(self._now()))
        listed = [await self.resolve(c) for c in contracts]
        conids = [item.conid for item in listed]
        if not order.is_multi_leg:
            return options.option_order_to_wire(order, account_ref, conids[0]), conids
        currencies = {item.currency for item in listed}
        if len(currencies) != 1:
            raise errors.UnsupportedOrder("a combo's legs trade in one currency", broker=SLUG)
        body = options.combo_order_to_wire(order, account_ref, currencies.pop(), conids)
        return body, conids

    async def place_order(self, account_ref: str, order: OrderRequest) -> BrokerOrder:
        wire, _conids = await self._order_body(account_ref, order)
        if is_short_or_cover(order):
            refusal = await self._short_refusal(account_ref, order)
            if refusal is not None:
                # A retry of an order that went through (its cover filled, say) must find
                # that order, not be refused for the position it left behind.
                found = await self._adopt(account_ref, order.client_order_id)
                if found is not None:
                    return found
                raise errors.UnsupportedOrder(refusal, broker=SLUG)
        body = {"orders": [wire]}
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
        # The status answer carries no cOID; a combo's leg prices are found by it.
        self._pool.remember(
            ("ibkr-coid", self._url, str(ack["order_id"])), order.client_order_id, CONTRACT_TTL
        )
        placed = await self._read_after_write(account_ref, str(ack["order_id"]), "placed")
        return dataclasses.replace(placed, client_order_id=order.client_order_id)

    async def _short_refusal(self, account_ref: str, order: OrderRequest) -> str | None:
        """IBKR shorts by position, as Alpaca does: a stock order has no open/close field
        (``side`` BUY|SELL only; https://www.interactivebrokers.com/campus/ibkr-api-page/
        cpapi-v1/#place-order), so a SELL beyond the long position opens a short and a BUY
        while short covers. ``open``/``close`` is therefore checked against the position
        (``GET /portfolio/{id}/positions``) before anything is sent: a sell that opens needs
        no long position (it would close it instead); a buy that closes needs a short
        position of at least its quantity (it would open a long). IBKR: "if you maintain a
        long position and enter a sell order, you will close out any long positions ... and
        open a short position to the extent, if any, your sell order exceeds a long
        position"; "Short sales are not allowed in Cash type accounts"
        (https://ibkr.info/hu/node/232).

        Whether the account may short (margin, not cash) is NOT checked here: no field of
        ``/portfolio/accounts`` (``type`` is the account's holder type, ``tradingType`` is
        documented "UNI - Deprecated property"), ``/iserver/accounts`` or the summaries
        could be confirmed to say margin vs cash, so a short sale in a cash account is sent
        and IBKR's refusal (``{"error": ...}``) is the answer."""
        held = await self.get_position(account_ref, order.symbol)
        quantity = held.quantity if held is not None else Decimal(0)
        if order.side is OrderSide.buy:
            if quantity >= 0 or order.quantity > -quantity:
                return f"no short position of {order.quantity} {order.symbol} to cover"
            return None
        if quantity > 0:
            return f"a long position in {order.symbol} is held: a sell closes it, not a short"
        return None

    async def preview_order(self, account_ref: str, order: OrderRequest) -> OrderPreview:
        """``POST /iserver/account/{id}/orders/whatif`` with the order's body (places
        nothing); the instruments are snapshotted first, as IBKR asks (ibind
        ``whatif_order``). IBKR's ``error`` is a rejection in the preview, not a raise."""
        wire, conids = await self._order_body(account_ref, order)
        await self._snapshot_items(conids[:SNAPSHOT_BATCH], mapping.SNAPSHOT_FIELDS)
        answer = await self._request(
            self._api,
            "POST",
            f"/iserver/account/{quote(account_ref, safe='')}/orders/whatif",
            json={"orders": [wire]},
        )
        return options.preview_from_whatif(answer, options.order_direction(order))

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
        body = await self._modify_body(account_ref, current, changes)
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

    async def _modify_body(
        self, account_ref: str, current: BrokerOrder, changes: OrderChanges
    ) -> dict[str, Any]:
        """The whole order with the changes: a stock or an option by its conid, a combo by
        its ``conidex`` (BUY, signed net price) rebuilt from its legs."""
        quantity = changes.quantity or current.quantity
        tif = changes.time_in_force or current.time_in_force
        if current.legs:
            if quantity != quantity.to_integral_value():
                raise errors.UnsupportedOrder("combos trade whole strategy units", broker=SLUG)
            if changes.stop_price is not None:
                raise errors.UnsupportedOrder("IBKR combos here take no stop price", broker=SLUG)
            if changes.limit_price is not None and current.order_type is not OrderType.limit:
                raise errors.UnsupportedOrder("a market combo has no limit price", broker=SLUG)
            if changes.time_in_force is not None and tif not in options.COMBO_TIFS:
                raise errors.UnsupportedOrder("IBKR combos here are DAY or GTC", broker=SLUG)
            listed = [
                await self.resolve(options.order_contract(leg.symbol)) for leg in current.legs
            ]
            legs = [
                options.ComboLeg(item.conid, leg.ratio if leg.side.value == "buy" else -leg.ratio)
                for item, leg in zip(listed, current.legs, strict=True)
            ]
            body: dict[str, Any] = {
                "acctId": account_ref,
                "conidex": options.conidex(listed[0].currency, legs),
                "orderType": mapping.wire_type(current.order_type),
                "side": "BUY",
                "quantity": mapping.number(quantity),
                "tif": mapping.wire_tif(tif),
            }
            limit = changes.limit_price if changes.limit_price is not None else current.limit_price
            if current.order_type is OrderType.limit and limit is not None:
                if limit < 0:
                    raise errors.UnsupportedOrder("the net limit price is unsigned", broker=SLUG)
                sign = -1 if current.price_effect is PriceEffect.credit else 1
                body["price"] = mapping.number(sign * limit)
            return body
        extra: dict[str, Any] = {}
        if is_option_symbol(current.symbol):
            conid = (await self.resolve(options.order_contract(current.symbol))).conid
            extra["secType"] = f"{conid}:OPT"
        else:
            conid = await self.conid(current.symbol)
        body = {
            "acctId": account_ref,
            "conid": conid,
            **extra,
            "orderType": mapping.wire_type(current.order_type),
            "side": "BUY" if current.side.value == "buy" else "SELL",
            "quantity": mapping.number(quantity),
            "tif": mapping.wire_tif(tif),
        }
        body.update(
            mapping.prices_to_wire(
                current.order_type,
                changes.limit_price or current.limit_price,
                changes.stop_price or current.stop_price,
            )
        )
        return body

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
        order = mapping.order_from_status(body)
        if not isinstance(body, dict) or not options.order_conids(body):
            return order
        leg_prices: dict[int, Decimal] = {}
        if order.filled_quantity > 0 and body.get("sec_type") == "BAG":
            ref = await self._client_order_id(account_ref, order.broker_order_id)
            if isinstance(ref, str) and ref:
                leg_prices = (await self._leg_prices(account_ref)).get(ref, {})
        return await self._with_terms(order, body, leg_prices)

    async def _client_order_id(self, account_ref: str, order_id: str) -> str | None:
        """The cOID of an order, which the status answer lacks: remembered from placing,
        else the live list's ``order_ref``."""
        ref = self._pool.recall(("ibkr-coid", self._url, order_id))
        if isinstance(ref, str):
            return ref
        for row in await self._live_rows(account_ref):
            if str(row.get("orderId")) == order_id:
                found = row.get("order_ref")
                return found if isinstance(found, str) and found else None
        return None

    async def _with_terms(
        self, order: BrokerOrder, body: dict[str, Any], leg_prices: dict[int, Decimal]
    ) -> BrokerOrder:
        contracts = {
            conid: (await self._contract_of(conid)).contract for conid in options.order_conids(body)
        }
        return options.with_option_terms(order, body, contracts, leg_prices)

    async def _leg_prices(self, account_ref: str) -> dict[str, dict[int, Decimal]]:
        """Average execution price per (cOID, conid) from ``/iserver/account/trades``."""
        body = await self._request(
            self._trades,
            "GET",
            "/iserver/account/trades",
            params={"days": "7", "accountId": account_ref},
        )
        if not isinstance(body, list):
            raise mapping.unknown("trades payload", type(body).__name__)
        sums: dict[tuple[str, int], tuple[Decimal, Decimal]] = {}
        for row in body:
            if not isinstance(row, dict) or row.get("sec_type") != "OPT":
                continue
            ref, conid_text = row.get("order_ref"), str(row.get("conid", ""))
            if not isinstance(ref, str) or not conid_text.isdigit():
                continue
            conid = int(conid_text)
            size = mapping.dec(row.get("size"), "size")
            price = mapping.dec(row.get("price"), "price")
            qty, cost = sums.get((ref, conid), (Decimal(0), Decimal(0)))
            sums[(ref, conid)] = (qty + size, cost + size * price)
        result: dict[str, dict[int, Decimal]] = {}
        for (order_ref, leg_conid), (qty, cost) in sums.items():
            if qty:
                avg = (cost / qty).quantize(Decimal("0.0001"))
                result.setdefault(order_ref, {})[leg_conid] = avg
        return result

    async def _live_orders(self, account_ref: str) -> RowList[BrokerOrder]:
        """The live list as orders; option orders with their terms, combos' legs priced
        from the executions (one trades request when any combo has fills)."""
        rows = read_rows(
            await self._live_rows(account_ref),
            lambda item: (item, mapping.order_from_live(item)),
            broker=SLUG,
            kind="order",
            row_id=lambda item: item.get("orderId"),
        )
        priced: dict[str, dict[int, Decimal]] | None = None
        result: RowList[BrokerOrder] = RowList()
        result.skipped = rows.skipped
        for item, order in rows:
            if options.order_conids(item):
                prices: dict[int, Decimal] = {}
                ref = item.get("order_ref")
                if item.get("secType") == "BAG" and order.filled_quantity > 0:
                    if priced is None:
                        priced = await self._leg_prices(account_ref)
                    prices = priced.get(ref, {}) if isinstance(ref, str) else {}
                order = await self._with_terms(order, item, prices)
            result.append(order)
        return result

    async def _live_rows(self, account_ref: str) -> list[dict[str, Any]]:
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
            if not isinstance(item, dict):
                raise mapping.unknown("live order", type(item).__name__)
            if item.get("acct", account_ref) != account_ref:
                continue
            result.append(item)
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
            found[:] = [o for o in found if o.status in open_states]
        elif status == "closed":
            found[:] = [o for o in found if o.status not in open_states]
        found.sort(key=lambda o: o.created_at, reverse=True)
        del found[max(1, limit) :]
        return found

    async def order_history(
        self, account_ref: str, start: datetime | None, end: datetime | None, symbol: str | None
    ) -> list[BrokerOrder]:
        """The gateway's live-order list: this session's orders (IBKR keeps no longer
        history here; statements are outside this API)."""
        found = await self._live_orders(account_ref)
        found[:] = [
            o
            for o in found
            if (symbol is None or o.symbol == symbol)
            and (start is None or o.created_at >= start)
            and (end is None or o.created_at <= end)
        ]
        return found

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
        # Option executions need their contracts' terms (looked up first); then each row is
        # read on its own: one the gateway cannot represent is left out and counted.
        contracts: dict[str, OptionContract] = {}
        for item in body:
            if isinstance(item, dict) and item.get("sec_type") == "OPT":
                conid = str(item.get("conid", ""))
                if conid.isdigit() and conid not in contracts:
                    contracts[conid] = (await self._contract_of(int(conid))).contract

        def trade(item: Any) -> Transaction:
            if isinstance(item, dict) and item.get("sec_type") == "OPT":
                contract = contracts.get(str(item.get("conid", "")))
                if contract is None:
                    raise mapping.unknown("trade conid", item.get("conid"))
                return options.option_execution(item, contract)
            return mapping.trade_from_execution(item)

        trades = read_rows(
            body, trade, broker=SLUG, kind="transaction", row_id=lambda i: i.get("execution_id")
        )
        trades[:] = [
            t
            for t in trades
            if (type_ is None or t.type == type_)
            and (start is None or t.occurred_at >= start)
            and (end is None or t.occurred_at <= end)
        ]
        return trades

    async def get_quotes(self, symbols: list[str]) -> dict[str, Quote]:
        """``GET /iserver/marketdata/snapshot?conids=&fields=31,84,86``; the first request
        for a conid starts its subscription and may lack the fields: asked again."""
        conids: dict[int, str] = {}
        for symbol in symbols:
            try:
                if is_option_symbol(symbol):
                    listed = await self.resolve(options.order_contract(symbol))
                    conids[listed.conid] = symbol
                else:
                    conids[await self.conid(symbol)] = symbol
            except (errors.UnknownSymbol, errors.UnsupportedOrder):
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

    # --- market data (market_data.py) ----------------------------------------------------

    def market_data_session(self) -> market_data.IbkrMarketSession:
        return market_data.IbkrMarketSession(
            market_data.ws_url(self._url), self._ws_session, self._conid_of_any, tls=self._tls
        )

    async def _ws_session(self) -> str:
        """``POST /tickle``: the session id the WebSocket's cookie carries; reused while
        the last tickle is fresh, so reconnects stay within the one-per-second tickle pace."""
        memo_key = ("ibkr-ws-session", self._url)
        found = self._pool.recall(memo_key)
        if isinstance(found, str):
            return found
        body = _loads(await self._tickler.request("POST", "/tickle"))
        session = market_data.session_of(body)
        self._pool.remember(memo_key, session, TICKLE_EVERY)
        return session

    async def get_bars(
        self, symbol: str, interval: BarInterval, start: datetime, end: datetime, limit: int
    ) -> list[Bar]:
        """``GET /iserver/marketdata/history`` by the symbol's conid (market_data.get_bars)."""
        conid = await self._conid_of_any(symbol)

        async def request(path: str, params: dict[str, str]) -> Any:
            return await self._request(self._api, "GET", path, params=params)

        now = datetime.now(UTC)
        return await market_data.get_bars(request, conid, symbol, interval, start, end, limit, now)

    async def _conid_of_any(self, symbol: str) -> int:
        if is_option_symbol(symbol):
            return (await self.resolve(options.order_contract(symbol))).conid
        return await self.conid(symbol)


def is_short_or_cover(order: OrderRequest) -> bool:
    """A stock sell that opens (a short sale) or buy that closes (a cover)."""
    if order.is_multi_leg or is_option_symbol(order.symbol) or order.position_effect is None:
        return False
    opens = order.position_effect is PositionEffect.open
    return (order.side is OrderSide.sell) == opens


def _conid_of(row: object) -> object:
    return row.get("conid") if isinstance(row, dict) else "?"
