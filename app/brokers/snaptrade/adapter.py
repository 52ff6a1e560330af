"""The SnapTrade adapter (Tier B: SnapTrade holds the brokerage login, we hold its user).

One adapter per connection, bound to the connection's SnapTrade user (``userId`` +
``userSecret`` from the vault) and the deployment's partner key (``clientId`` +
``consumerKey`` from the settings). Every request is signed (``auth.SignedRequests``).
Built without credentials it can only do partner-level calls (``register_user``,
``check_symbol``).

Quirks, with their doc pages:

* Orders go through the impact check: ``POST /trade/impact`` answers a ``Trade`` (valid for
  5 minutes), then ``POST /trade/{tradeId}`` places it
  (https://docs.snaptrade.com/reference/Trading/Trading_getOrderImpact). The check is a
  POST but places nothing: a lost answer is safe to retry, unlike the placement's.
* There is no client order id on this path and order records carry none: an order whose
  placement answer was lost is found by its fingerprint among the account's recent orders
  (``find_order_by_fingerprint``; ``capabilities.client_order_ids`` says so).
* Reading one order is ``POST /accounts/{id}/orders/details`` (realtime, only orders placed
  through SnapTrade): a POST that changes nothing, so a lost answer is a transient failure.
* Replace (``POST /accounts/{id}/trading/replace``) is brokerage-dependent and "the order's
  brokerage_order_id may or may not change"; when it does, the answer is the new order and
  we record which order it replaces (SnapTrade does not).
* Cancel answers the brokerage's raw response; the order's state comes from a read after.
* Order status changes are not pushed (webhooks say that something changed, not what):
  open orders are polled by reconciliation; ``GET /accounts/{id}/orders`` may serve a daily
  cache on non-realtime plans, ``recentOrders`` is always realtime (last 24 hours).
* Quotes need an account (``GET /accounts/{id}/quotes``, at most 10 symbols, "not a
  substitute for a market data provider") and carry no timestamp.

Options (``options.py`` has the wire format):

* Single- and multi-leg option orders go through ``POST /accounts/{id}/trading/options``,
  after the impact check ``POST /accounts/{id}/trading/options/impact`` (which places nothing;
  "only supported for certain enabled brokerages": where it answers 501, or 400 saying the
  brokerage does not support it, the order is placed without it). An impact whose cash
  direction contradicts the order's price effect stops the order before placement.
* Whether a linked brokerage trades options through SnapTrade is not in SnapTrade's
  ``Brokerage`` metadata (its only trading field is ``allows_trading``); SnapTrade publishes it
  as its support table (https://support.snaptrade.com/brokerages). The gateway keeps that as
  ``OPTION_BROKERAGES`` (by brokerage slug) and refuses an option order to any other
  brokerage, or to a read-only connection, before any trading request: the account's
  connection is read (``GET /accounts/{id}``, ``GET /authorizations/{id}``) and remembered.
* SnapTrade has no chain or expirations endpoint (``options.chain`` is unsupported: the chain
  answers the capability problem). Quotes of option symbols come per contract from
  ``GET /accounts/{id}/quotes/options`` (deprecated in the spec).
* An option order is read back in the V2 format (``GET /accounts/{id}/orders/details/v2/
  {brokerageOrderId}``) with its legs; lists add the option orders of ``/orders/v2``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
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
    InstitutionLink,
    OptionCapabilities,
    OrderChanges,
    OrderFingerprint,
    OrderListFilter,
    OrderPreview,
    OrderRequest,
    OrderStatus,
    OrderType,
    OrderUpdate,
    PortalLink,
    Position,
    Quote,
    RevokeOutcome,
    Support,
    TimeInForce,
    Transaction,
    is_option_symbol,
)
from app.brokers.http import HttpPool
from app.brokers.market_data.polling import PollingMarketDataSession, polling_capabilities
from app.brokers.pooled_adapter import PooledAdapter
from app.brokers.rows import RowList, read_rows
from app.brokers.snaptrade import auth, mapping, options
from app.brokers.snaptrade.mapping import SLUG
from app.config import Settings
from app.security.credentials import Credentials

log = logging.getLogger(__name__)

N, U = Support.native, Support.unsupported

SNAPTRADE_CAPABILITIES = Capabilities(
    # Equities through the impact form (``ManualTradeForm``); options through /trading/options
    # where the linked brokerage trades them (``OPTION_BROKERAGES``; others are refused by the
    # adapter before any trading request). Crypto pairs (/trading/crypto) are not mapped.
    asset_classes={
        AssetClass.equity: N,
        AssetClass.option: N,
        AssetClass.crypto: U,
        AssetClass.mutual_fund: U,
    },
    order_types=dict.fromkeys(OrderType, N),  # OrderTypeStrict: Market, Limit, Stop, StopLimit
    time_in_force=dict.fromkeys(TimeInForce, N),  # TimeInForceStrict: Day, GTC, FOK, IOC
    fractional=N,  # ``units`` "can be a decimal for fractional orders" (brokerage permitting)
    # ``notional_value``: "Can only work with `Market` for `order_type` and `Day` for
    # `time_in_force`", certain brokerages only (spec NotionalValue); no limit orders.
    notional=N,
    extended_hours=U,  # ``trading_session`` exists on /trade/place only, not the impact form
    short_selling=U,  # the impact form's action is BUY or SELL only
    multi_leg=N,  # MlegTradeForm legs[], up to 4 (Trading_getOptionImpact)
    modify=N,  # /trading/replace ("only supported on some brokerages": others refuse it)
    order_stream=U,  # no stream: webhooks say something changed, reconciliation polls
    client_order_ids=U,  # reconciliation by fingerprint
    options=OptionCapabilities(
        chain=U,  # no chain endpoint in the spec: options_chain_unsupported
        expirations=U,
        max_legs=options.MAX_LEGS,
        # MlegOrderTypeStrict: MARKET, LIMIT, STOP_LOSS_MARKET, STOP_LOSS_LIMIT
        combo_order_types=frozenset(OrderType),
        combo_time_in_force=frozenset(TimeInForce),  # TimeInForceStrict
        greeks=U,  # only per contract through the deprecated option quote, no chain
    ),
    preview=N,  # option orders: /trading/options/impact; equities: /trade/impact
    # No market stream (webhooks only): quotes polled from /accounts/{id}/quotes (10 symbols
    # a call) every 30 s. The 250 requests a minute are per clientId, shared by every user
    # of the deployment (https://docs.snaptrade.com/docs/rate-limiting): one session spends
    # 2 a minute (an option contract is one call each: at most 20), so 100 polling users
    # stay under the budget; the shared pacer spaces the rest.
    market_data=polling_capabilities(30.0, max_symbols=10),
)

# Brokerages (SnapTrade slugs) whose accounts trade options through SnapTrade. SnapTrade's
# ``Brokerage`` object has no such flag; this follows its support table by hand
# (https://support.snaptrade.com/brokerages; unconfirmed, kept small on purpose: an option
# order to a brokerage not listed is refused, never sent to find out).
OPTION_BROKERAGES = frozenset({"SCHWAB"})
LINK_TTL = 3600.0  # seconds an account's connection (brokerage, trade or read) is trusted
# Words of SnapTrade's 400 when the brokerage has no option impact (spec: "Invalid request,
# or option impact is not supported for this brokerage"; the exact text is undocumented).
_NO_IMPACT = ("not supported", "unsupported")

SYMBOL_TTL = 3600.0  # seconds a ticker -> universal symbol id answer is trusted
PORTAL_LIFETIME = timedelta(minutes=5)  # "the returned URL expires in 5 minutes"
QUOTE_BATCH = 10  # "Returns a maximum of 10 quotes"
ORDER_DAYS = 30  # the orders endpoint's default window; at most 90
MAX_ORDER_DAYS = 90
ACTIVITY_PAGE = 1000
MAX_ACTIVITY_PAGES = 20
# Fingerprint lookup: SnapTrade's (and the brokerage's) clock may run a little behind ours,
# and the brokerage enters the order within the placement's timeout after our commit.
FINGERPRINT_SKEW = timedelta(seconds=30)
FINGERPRINT_WINDOW = timedelta(minutes=5)
_TERMINAL = frozenset(
    {
        OrderStatus.filled,
        OrderStatus.canceled,
        OrderStatus.rejected,
        OrderStatus.expired,
        OrderStatus.replaced,
    }
)


def _loads(response: httpx.Response) -> Any:
    return mapping.WIRE.json_body(response, ints_as_decimal=True)


def _path(template: str, *ids: str) -> str:
    return template.format(*(quote(i, safe="") for i in ids))


class SnaptradeAdapter(PooledAdapter):
    slug = SLUG
    capabilities = SNAPTRADE_CAPABILITIES
    fingerprint_window = FINGERPRINT_WINDOW

    def __init__(
        self,
        settings: Settings,
        credentials: Credentials | None,
        pool: HttpPool | None = None,
        *,
        clock: Callable[[], float] | None = None,
        option_brokerages: frozenset[str] = OPTION_BROKERAGES,
    ) -> None:
        super().__init__(settings, pool)
        self._credentials = credentials
        self._option_brokerages = option_brokerages
        key = auth.partner_key(settings)
        per_minute = settings.snaptrade_requests_per_minute
        self._api = self._broker_client(
            settings.snaptrade_base_url,
            headers={"Accept": "application/json"},
            bucket=self._pacer(auth.bucket_key(key), per_minute=per_minute),
            classifier=mapping.classify,
            retry_after_from=mapping.retry_after,
            auth=auth.SignedRequests(key) if clock is None else auth.SignedRequests(key, clock),
        )
        self._quote_account: str | None = None

    def __repr__(self) -> str:
        return f"SnaptradeAdapter(base_url={self._settings.snaptrade_base_url!r})"

    def _user(self, **extra: str) -> dict[str, str]:
        return {**auth.user_params(self._credentials), **extra}

    async def _get(self, path: str, **params: str) -> Any:
        return _loads(await self._api.request("GET", path, params=self._user(**params)))

    async def _read_post(self, path: str, body: Mapping[str, Any]) -> Any:
        """A POST that changes nothing: an answer lost on the way is a transient failure."""
        try:
            response = await self._api.request("POST", path, params=self._user(), json=body)
        except errors.OutcomeUnknown as exc:
            raise errors.Transient(
                f"no answer from SnapTrade to a read ({exc.reason})", broker=SLUG
            ) from exc
        return _loads(response)

    # --- aggregator: users, portal, links --------------------------------------------------

    async def register_user(self, user_ref: str) -> Credentials:
        """``POST /snapTrade/registerUser``: a new SnapTrade user and its generated secret.

        A lost answer is ``OutcomeUnknown``: the user may exist with a secret we never saw
        (it then holds no connection and is never used again).
        """
        response = await self._api.request(
            "POST", "/snapTrade/registerUser", json={"userId": user_ref}
        )
        body = _loads(response)
        if not isinstance(body, dict) or body.get("userId") != user_ref:
            raise mapping.unknown("registerUser answer", type(body).__name__)
        secret = body.get("userSecret")
        if not isinstance(secret, str) or not secret:
            raise mapping.unknown("userSecret", "<missing>")
        return auth.check_credentials({auth.USER_ID: user_ref, auth.USER_SECRET: secret})

    async def delete_user(self) -> None:
        """``DELETE /snapTrade/deleteUser``: the user and every connection it holds (queued
        at SnapTrade, confirmed by a USER_DELETED webhook)."""
        user_id = self._user()["userId"]
        await self._api.request("DELETE", "/snapTrade/deleteUser", params={"userId": user_id})

    async def revoke(self) -> RevokeOutcome:
        """Disconnect: the SnapTrade user goes, and with it every brokerage login it held
        (``DELETE /snapTrade/deleteUser``; SnapTrade has no narrower revoke for a user)."""
        await self.delete_user()
        return RevokeOutcome.revoked

    async def portal_link(self, *, institution: str | None, reconnect: str | None) -> PortalLink:
        """``POST /snapTrade/login``: the Connection Portal URL (valid 5 minutes).

        ``trade-if-available``: a trading connection where the brokerage allows it through
        SnapTrade, read-only otherwise (Fidelity). ``reconnect`` re-links a disabled
        connection instead of making a new one (docs/fix-broken-connections.md). The browser
        comes back to ``snaptrade_redirect_url`` (``customRedirect``) when it is set.
        """
        body: dict[str, Any] = {"connectionType": "trade-if-available"}
        if institution is not None:
            body["broker"] = institution
        if reconnect is not None:
            body["reconnect"] = reconnect
        if self._settings.snaptrade_redirect_url:
            body["customRedirect"] = self._settings.snaptrade_redirect_url
        started = self._now()
        answer = await self._read_post("/snapTrade/login", body)
        url = answer.get("redirectURI") if isinstance(answer, dict) else None
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            # The other documented answer is an encrypted one, for users registered with an
            # SSH public key: we never register users that way.
            raise mapping.unknown("login answer", type(answer).__name__)
        session = answer.get("sessionId")
        return PortalLink(
            url=url,
            expires_at=started + PORTAL_LIFETIME,
            session_id=session if isinstance(session, str) else None,
        )

    async def links(self) -> list[InstitutionLink]:
        """``GET /authorizations`` and ``GET /accounts``: each brokerage login and its accounts."""
        authorizations = await self._get("/authorizations")
        accounts = await self._get("/accounts")
        return mapping.links_from_wire(authorizations, accounts)

    # --- accounts ------------------------------------------------------------------------

    async def list_accounts(self) -> list[BrokerAccount]:
        body = await self._get("/accounts")
        if not isinstance(body, list):
            raise mapping.unknown("accounts payload", type(body).__name__)
        return read_rows(
            body,
            lambda item: mapping.account_from_wire(item) if mapping.is_listed(item) else None,
            broker=SLUG,
            kind="account",
        )

    async def get_balances(self, account_ref: str) -> Balances:
        account = await self._get(_path("/accounts/{}", account_ref))
        total, currency = mapping.account_total(account)
        currency = currency or "USD"
        cash, buying_power, currency = mapping.cash_and_buying_power(
            await self._get(_path("/accounts/{}/balances", account_ref)), currency
        )
        if total is None:
            # No brokerage-reported total: cash plus the market value of the positions.
            positions = await self.get_positions(account_ref)
            total = cash + sum((p.market_value for p in positions), Decimal(0))
        return mapping.balances(cash, buying_power, currency, total, self._now())

    async def get_positions(self, account_ref: str) -> list[Position]:
        body = await self._get(_path("/accounts/{}/positions/all", account_ref))
        positions, _ = mapping.positions_from_wire(body, self._now())
        return positions

    async def get_position(self, account_ref: str, symbol: str) -> Position | None:
        if is_option_symbol(symbol):  # padded or not: positions carry the unpadded form
            symbol = mapping.contract_of(symbol).symbol
        for position in await self.get_positions(account_ref):
            if position.symbol == symbol:
                return position
        return None

    async def _universal_symbol_id(self, symbol: str) -> str:
        """``GET /symbols/{ticker}``: SnapTrade's id of the ticker (the impact form takes
        ids only). Remembered for ``SYMBOL_TTL``; unknown tickers are not."""
        memo = ("snaptrade-symbol", self._settings.snaptrade_base_url, symbol)
        found = self._pool.recall(memo)
        if isinstance(found, str):
            return found
        try:
            response = await self._api.request("GET", _path("/symbols/{}", symbol))
        except errors.OrderNotFound as exc:
            raise errors.UnknownSymbol(f"SnapTrade does not list {symbol}", broker=SLUG) from exc
        universal_id = mapping.universal_symbol_id(_loads(response), symbol)
        if universal_id is None:
            raise errors.UnknownSymbol(f"SnapTrade does not list {symbol}", broker=SLUG)
        self._pool.remember(memo, universal_id, SYMBOL_TTL)
        return universal_id

    async def check_symbol(self, symbol: str) -> None:
        """An equity: ``GET /symbols/{ticker}``. An option contract: SnapTrade has no
        contract lookup (no chain), so the symbol is parsed (``UnknownSymbol`` when it is no
        OCC symbol) and the user must hold at least one trading link at a brokerage that
        trades options (``UnsupportedOrder`` otherwise); the account's own brokerage is
        checked by ``check_order``."""
        if not is_option_symbol(symbol):
            await self._universal_symbol_id(symbol)
            return
        try:
            mapping.contract_of(symbol)
        except errors.UnknownBrokerValue as exc:
            raise errors.UnknownSymbol(f"{symbol} is not an option contract", broker=SLUG) from exc
        links = await self._get("/authorizations")
        if not any(
            link.trading and link.institution_slug.upper() in self._option_brokerages
            for link in mapping.links_from_wire(links, [])
        ):
            raise errors.UnsupportedOrder(
                "none of this user's SnapTrade connections trades options", broker=SLUG
            )

    async def check_order(self, account_ref: str, order: OrderRequest) -> None:
        """Before anything is written: an option order's form and the account's brokerage
        (``SupportsOrderCheck``); reads only. Equity orders are checked by the impact."""
        if options.is_option_order(order):
            options.mleg_form(order)
            await self._check_option_link(account_ref)
        else:
            mapping.refuse_short_sale(order)

    # --- orders --------------------------------------------------------------------------

    async def place_order(self, account_ref: str, order: OrderRequest) -> BrokerOrder:
        """Impact check, then placement of the checked trade.

        The check may refuse (insufficient funds, a symbol the brokerage does not trade):
        nothing was placed. Only the placement's own lost answer is ``OutcomeUnknown``.
        Option orders (one leg or several) take the option path (``_place_option``).
        """
        if options.is_option_order(order):
            return await self._place_option(account_ref, order)
        mapping.refuse_short_sale(order)  # before any request
        universal_id = await self._universal_symbol_id(order.symbol)
        form = mapping.impact_form(account_ref, order, universal_id)
        try:
            impact = await self._api.request(
                "POST", "/trade/impact", params=self._user(), json=form
            )
        except errors.OutcomeUnknown as exc:
            raise errors.Transient(
                f"the order check did not answer; nothing was placed ({exc.reason})",
                broker=SLUG,
            ) from exc
        trade = mapping.trade_id(_loads(impact))
        # wait_to_confirm (the default, sent explicitly): SnapTrade checks the order's status
        # before answering, so the answer is less often PENDING.
        placed = await self._api.request(
            "POST",
            _path("/trade/{}", trade),
            params=self._user(),
            json={"wait_to_confirm": True},
        )
        return mapping.order_from_wire(_loads(placed), notional=order.notional)

    async def _check_option_link(self, account_ref: str) -> None:
        """Refuse (``UnsupportedOrder``) an option order to an account whose connection is
        read-only or whose brokerage does not trade options through SnapTrade."""
        memo = ("snaptrade-link", self._settings.snaptrade_base_url, account_ref)
        found = self._pool.recall(memo)
        if not isinstance(found, tuple):
            account = await self._get(_path("/accounts/{}", account_ref))
            link_id = account.get("brokerage_authorization") if isinstance(account, dict) else None
            if not isinstance(link_id, str) or not link_id:
                raise mapping.unknown("brokerage_authorization", link_id)
            authorization = await self._get(_path("/authorizations/{}", link_id))
            link = mapping.links_from_wire([authorization], [])[0]
            found = (link.institution_slug.upper(), link.trading, link.institution)
            self._pool.remember(memo, found, LINK_TTL)
        slug, trading, name = found
        if not trading:
            raise errors.UnsupportedOrder(
                f"this {name} connection through SnapTrade is read-only", broker=SLUG
            )
        if slug not in self._option_brokerages:
            raise errors.UnsupportedOrder(
                f"{name} does not trade options through SnapTrade", broker=SLUG
            )

    async def _option_impact(self, account_ref: str, form: dict[str, Any]) -> Any | None:
        """``POST /accounts/{id}/trading/options/impact``: the impact, or None where the
        brokerage offers none. Places nothing: a lost answer is a transient failure."""
        try:
            response = await self._api.request(
                "POST",
                _path("/accounts/{}/trading/options/impact", account_ref),
                params=self._user(),
                json=form,
            )
        except errors.NotSupported:
            return None  # 501: the deprecated answer of a brokerage without impact
        except errors.Rejected as exc:
            if any(s in exc.reason.lower() for s in _NO_IMPACT) and not isinstance(
                exc, errors.InsufficientFunds
            ):
                return None
            raise
        except errors.OutcomeUnknown as exc:
            raise errors.Transient(
                f"the order impact did not answer; nothing was placed ({exc.reason})",
                broker=SLUG,
            ) from exc
        return _loads(response)

    async def _place_option(self, account_ref: str, order: OrderRequest) -> BrokerOrder:
        form = options.mleg_form(order)  # refuses what the form cannot carry, before any call
        await self._check_option_link(account_ref)
        impact = await self._option_impact(account_ref, form)
        if impact is not None:
            said = options.impact_direction(impact)
            wanted = options.order_direction(order)
            if said is not None and wanted is not None and said is not wanted:
                raise errors.UnsupportedOrder(
                    f"the order says {wanted.value} but SnapTrade's impact is a "
                    f"{said.value}; nothing was placed",
                    broker=SLUG,
                )
        placed = await self._api.request(
            "POST",
            _path("/accounts/{}/trading/options", account_ref),
            params=self._user(),
            json=form,
        )
        return options.placed_from_wire(_loads(placed), order)

    async def preview_order(self, account_ref: str, order: OrderRequest) -> OrderPreview:
        """The broker's impact, placing nothing: ``/trading/options/impact`` for an option
        order; for an equity order ``/trade/impact`` (its cash effect is the drop in the
        account's cash it reports, ``combined_remaining_balance.cash``, against the cash of
        ``/balances``; the Trade it creates expires unused after 5 minutes)."""
        if options.is_option_order(order):
            form = options.mleg_form(order)
            await self._check_option_link(account_ref)
            impact = await self._option_impact(account_ref, form)
            if impact is None:
                raise errors.NotSupported(
                    "this brokerage has no option order impact through SnapTrade", broker=SLUG
                )
            return options.preview_from_impact(impact, order)
        universal_id = await self._universal_symbol_id(order.symbol)
        account = await self._get(_path("/accounts/{}", account_ref))
        _, currency = mapping.account_total(account)
        cash, _, _ = mapping.cash_and_buying_power(
            await self._get(_path("/accounts/{}/balances", account_ref)), currency or "USD"
        )
        impact = await self._read_post(
            "/trade/impact", mapping.impact_form(account_ref, order, universal_id)
        )
        return mapping.equity_preview(impact, cash, order)

    async def modify_order(
        self, account_ref: str, broker_order_id: str, changes: OrderChanges
    ) -> BrokerOrder:
        """``POST /accounts/{id}/trading/replace`` with the whole order (the form needs it).

        A single-leg option order is replaced by its OCC symbol and option action ("Use the
        OCC symbol to replace an option order", spec ``ManualTradeReplaceForm``) and read
        back in the V2 format; a multi-leg order cannot be expressed in that form and is
        refused (``UnsupportedOrder``) before any request.
        """
        current = await self.get_order(account_ref, broker_order_id)
        if changes.is_empty():
            return current
        response = await self._api.request(
            "POST",
            _path("/accounts/{}/trading/replace", account_ref),
            params=self._user(),
            json=mapping.replace_form(current, changes),
        )
        answer = _loads(response)
        new_id = answer.get("brokerage_order_id") if isinstance(answer, dict) else None
        replaces = broker_order_id if new_id not in (None, broker_order_id) else None
        if options.is_option_record(answer) and isinstance(new_id, str):
            try:
                replaced = await self._get_order_v2(account_ref, new_id)
            except errors.BrokerError as exc:
                raise errors.OutcomeUnknown(
                    f"the replace was accepted but the new order could not be read: {exc.reason}",
                    broker=SLUG,
                ) from exc
            return dataclasses.replace(replaced, replaces=replaces)
        return mapping.order_from_wire(answer, replaces=replaces)

    async def cancel_order(self, account_ref: str, broker_order_id: str) -> BrokerOrder:
        await self._api.request(
            "POST",
            _path("/accounts/{}/trading/cancel", account_ref),
            params=self._user(),
            json={"brokerage_order_id": broker_order_id},
        )
        try:
            return await self.get_order(account_ref, broker_order_id)
        except errors.BrokerError as exc:
            # The cancel was accepted; only its result is unknown.
            raise errors.OutcomeUnknown(
                f"the cancel was accepted but the order could not be read: {exc.reason}",
                broker=SLUG,
            ) from exc

    async def get_order(self, account_ref: str, broker_order_id: str) -> BrokerOrder:
        """``POST /accounts/{id}/orders/details``; an option order (its record names an
        ``option_symbol``, or the V1 detail refuses it: "only works for single-leg orders")
        is read again in the V2 format with its legs."""
        try:
            body = await self._read_post(
                _path("/accounts/{}/orders/details", account_ref),
                {"brokerage_order_id": broker_order_id},
            )
        except errors.Rejected as exc:
            if isinstance(exc, errors.OrderNotFound):
                raise
            return await self._get_order_v2(account_ref, broker_order_id)
        if options.is_option_record(body):
            return await self._get_order_v2(account_ref, broker_order_id)
        return mapping.order_from_wire(body)

    async def _get_order_v2(self, account_ref: str, broker_order_id: str) -> BrokerOrder:
        body = await self._get(
            _path("/accounts/{}/orders/details/v2/{}", account_ref, broker_order_id)
        )
        return options.order_v2_from_wire(body)

    async def _option_orders(self, account_ref: str, *, days: int) -> RowList[BrokerOrder]:
        """The option orders of ``GET /accounts/{id}/orders/v2`` (V1 lists leave them out)."""
        try:
            body = await self._get(
                _path("/accounts/{}/orders/v2", account_ref), state="all", days=str(days)
            )
        except errors.NotSupported:
            return RowList()
        return options.orders_v2_from_wire(body)

    async def find_order_by_client_id(
        self, account_ref: str, client_order_id: str
    ) -> BrokerOrder | None:
        raise errors.NotSupported(
            "SnapTrade orders carry no client order id; they are found by fingerprint",
            broker=SLUG,
        )

    async def find_order_by_fingerprint(
        self, account_ref: str, fingerprint: OrderFingerprint, claimed: frozenset[str]
    ) -> BrokerOrder | None:
        """The order SnapTrade placed for a submit whose answer was lost, if any.

        Candidates come from the realtime ``recentOrders`` (last 24 hours, every state),
        or the orders list where that endpoint is not enabled for this client: same
        fingerprint, placed from ``FINGERPRINT_SKEW`` before the submit to
        ``FINGERPRINT_WINDOW`` after it, not ``claimed`` by another order of ours. Of
        several, the one placed closest to the submit wins.
        """
        start = fingerprint.submitted_at - FINGERPRINT_SKEW
        end = fingerprint.submitted_at + FINGERPRINT_WINDOW
        if fingerprint.legs or is_option_symbol(fingerprint.symbol):
            recent = await self._option_orders(account_ref, days=1)
        else:
            recent = await self._recent_orders(account_ref)
        if fingerprint.quantity == 0 and not fingerprint.legs:
            # A dollar-amount order: SnapTrade's records carry no amount and show the shares
            # once filled, so it is matched on everything but size; of several such orders
            # none is taken (the outcome stays unknown rather than adopting the wrong one).
            dollar = [
                o
                for o in recent
                if (o.symbol, o.side, o.order_type, o.time_in_force)
                == (
                    fingerprint.symbol,
                    fingerprint.side,
                    fingerprint.order_type,
                    fingerprint.time_in_force,
                )
                and o.broker_order_id not in claimed
                and start <= o.created_at <= end
            ]
            if len(dollar) > 1:
                raise errors.Transient(
                    "several SnapTrade orders could be this dollar-amount order; not adopting",
                    broker=SLUG,
                )
            return dollar[0] if dollar else None
        candidates = [
            o
            for o in recent
            if fingerprint.matches(o)
            and o.broker_order_id not in claimed
            and start <= o.created_at <= end
        ]
        if not candidates:
            return None
        if len(candidates) > 1:
            log.warning(
                "several SnapTrade orders match an unknown submit; taking the nearest in time",
                extra={"broker": SLUG, "candidates": len(candidates)},
            )
        return min(
            candidates,
            key=lambda o: (abs(o.created_at - fingerprint.submitted_at), o.broker_order_id),
        )

    async def _recent_orders(self, account_ref: str) -> RowList[BrokerOrder]:
        try:
            body = await self._get(
                _path("/accounts/{}/recentOrders", account_ref), only_executed="false"
            )
        except errors.NotSupported:
            return await self._orders(account_ref, "all", days=1)
        orders = body.get("orders") if isinstance(body, dict) else None
        return mapping.orders_from_wire(orders, "recentOrders payload")

    async def _orders(self, account_ref: str, state: str, *, days: int) -> RowList[BrokerOrder]:
        """Equity orders from the V1 list and, where the brokerage trades options, option
        orders (with their legs) from the V2 list."""
        body = await self._get(
            _path("/accounts/{}/orders", account_ref), state=state, days=str(days)
        )
        orders = mapping.orders_from_wire(body)
        if mapping.has_option_records(body):
            option_orders = await self._option_orders(account_ref, days=days)
            orders.extend(option_orders)
            orders.skipped += option_orders.skipped
        orders.sort(key=lambda o: (o.created_at, o.broker_order_id), reverse=True)
        return orders

    async def list_orders(
        self, account_ref: str, status: OrderListFilter, limit: int
    ) -> list[BrokerOrder]:
        """``GET /accounts/{id}/orders`` over the last 30 days (its default window)."""
        orders = await self._orders(
            account_ref, "open" if status == "open" else "all", days=ORDER_DAYS
        )
        if status == "open":
            orders[:] = [o for o in orders if o.status not in _TERMINAL]
        elif status == "closed":
            orders[:] = [o for o in orders if o.status in _TERMINAL]
        del orders[max(1, limit) :]
        return orders

    async def order_history(
        self, account_ref: str, start: datetime | None, end: datetime | None, symbol: str | None
    ) -> list[BrokerOrder]:
        """Orders placed in [start, end] (SnapTrade keeps at most the last 90 days)."""
        days = MAX_ORDER_DAYS
        if start is not None:
            elapsed = (self._now() - start).total_seconds() / 86400
            days = min(MAX_ORDER_DAYS, max(1, math.ceil(elapsed)))
        orders = await self._orders(account_ref, "all", days=days)
        orders[:] = [
            o
            for o in orders
            if (start is None or o.created_at >= start)
            and (end is None or o.created_at <= end)
            and (symbol is None or o.symbol == symbol)
        ]
        return orders

    # --- transactions and quotes ------------------------------------------------------------

    async def get_transactions(
        self, account_ref: str, start: datetime | None, end: datetime | None, type_: str | None
    ) -> list[Transaction]:
        """``GET /accounts/{id}/activities`` (daily data; newest first), every page."""
        params: dict[str, str] = {"limit": str(ACTIVITY_PAGE)}
        if start is not None:
            params["startDate"] = start.astimezone(UTC).date().isoformat()
        if end is not None:
            params["endDate"] = end.astimezone(UTC).date().isoformat()
        result: RowList[Transaction] = RowList()
        offset = 0
        for _ in range(MAX_ACTIVITY_PAGES):
            body = await self._get(
                _path("/accounts/{}/activities", account_ref), **params, offset=str(offset)
            )
            page, total = mapping.transactions_from_wire(body)
            result.extend(page)
            result.skipped += page.skipped
            raw = body.get("data") if isinstance(body, dict) else None
            count = len(raw) if isinstance(raw, list) else 0
            offset += count
            if count < ACTIVITY_PAGE or (total is not None and offset >= total):
                break
        if type_ is not None:
            result[:] = [t for t in result if t.type == type_]
        return result

    async def get_quotes(self, symbols: list[str]) -> dict[str, Quote]:
        """``GET /accounts/{id}/quotes?use_ticker=true`` through the user's first account
        (quotes are asked of an account's brokerage), 10 symbols at a time."""
        if not symbols:
            return {}
        account = await self._quote_account_ref()
        quotes: dict[str, Quote] = {}
        equities = [s for s in symbols if not is_option_symbol(s)]
        for symbol in (s for s in symbols if is_option_symbol(s)):
            # One contract per request (deprecated: "will cease to return data as of
            # October 1, 2026"); a contract SnapTrade does not know (404) is left out.
            try:
                body = await self._get(
                    _path("/accounts/{}/quotes/options", account),
                    symbol=options.wire_symbol(symbol),
                )
            except errors.OrderNotFound:
                continue
            quotes[symbol] = options.option_quote_from_wire(body, symbol, self._now())
        for i in range(0, len(equities), QUOTE_BATCH):
            batch = equities[i : i + QUOTE_BATCH]
            body = await self._get(
                _path("/accounts/{}/quotes", account),
                symbols=",".join(batch),
                use_ticker="true",
            )
            quotes.update(mapping.quotes_from_wire(body, batch, self._now()))
        return quotes

    async def _quote_account_ref(self) -> str:
        if self._quote_account is None:
            accounts = await self.list_accounts()
            if not accounts:
                raise errors.NotSupported("no SnapTrade account to ask for quotes", broker=SLUG)
            self._quote_account = accounts[0].broker_account_id
        return self._quote_account

    def stream_order_updates(self, account_ref: str) -> AsyncIterator[OrderUpdate] | None:
        return None  # SnapTrade pushes webhooks, not order streams

    def market_data_session(self) -> PollingMarketDataSession:
        """Quotes polled through ``get_quotes`` (``capabilities.market_data``)."""
        return PollingMarketDataSession(self, batch_size=QUOTE_BATCH)
