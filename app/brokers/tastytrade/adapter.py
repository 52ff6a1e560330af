"""The tastytrade REST adapter (Tier A, OAuth2 refresh token -> 15-minute access tokens).

One adapter per connection, bound to that connection's decrypted client secret and
refresh token. A tastytrade login can hold several accounts; ``account_ref`` is the
``account-number`` from ``GET /customers/me/accounts`` and is part of every account path.

Quirks, with their doc pages (payload quirks are in ``mapping``):

* Every request needs ``User-Agent: product/version`` or it is a 401
  (https://developer.tastytrade.com/docs/authentication/oauth2).
* A 401 means the access token expired or was revoked: a fresh token is minted from the
  refresh token and the request is sent once more (a refused request did nothing, so this
  is safe for writes too). A refused refresh token is ``AuthenticationFailed``.
* ``external-identifier`` carries our client order id. tastytrade echoes it and does NOT
  deduplicate on it, and no endpoint looks an order up by it
  (https://developer.tastytrade.com/docs/guides/idempotency-and-retries/): the lookup reads
  the live orders (today's, plus still-working older ones) and then the newest page of the
  order search. No maximum length is documented; ours are at most 34 characters.
* Cancel-replace is ``PUT /accounts/{account_number}/orders/{id}`` and answers the NEW order
  (new id, ``replaces-order-id``); only price, order type and time in force can change
  (https://developer.tastytrade.com/order-management/). A quantity change is refused before
  anything is sent.
* ``DELETE`` answers the order, usually ``Cancel Requested``; a finished order answers 422
  ``cannot_update_order``.
* ``GET /accounts/{account_number}/orders/live`` returns every order created or updated
  today whatever its status, plus older orders still working (same page, "Live Orders").

Options (``mapping`` has the wire forms):

* Discovery is ``GET /option-chains/{symbol}/nested`` (expirations, strikes, call/put OCC
  symbols; no server-side filters, so the chain is filtered here) and quotes are
  ``GET /market-data/by-type?equity-option=<padded OCC>`` (bid/ask/last, no greeks: those are
  DXLink-only, https://developer.tastytrade.com/docs/concepts/market-data/).
* A spread is one order of 2 to 4 ``Equity Option`` legs with absolute per-leg quantities and
  one unsigned ``price`` + ``price-effect``
  (https://developer.tastytrade.com/docs/guides/multi-leg-spreads/); it is modified with the
  same cancel-replace ``PUT`` (legs left out of the body, tastyware/tastytrade
  ``Account.replace_order``) and cancelled whole.
* Preview is ``POST /accounts/{account_number}/orders/dry-run`` with the placing body; a
  refused dry run (422 preflight failure) is a preview with rejections.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from app.brokers import errors
from app.brokers.base import (
    AssetClass,
    Balances,
    BrokerAccount,
    BrokerOrder,
    Capabilities,
    OptionCapabilities,
    OptionChainQuery,
    OptionExpiration,
    OptionQuote,
    OrderChanges,
    OrderLeg,
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
)
from app.brokers.http import BrokerClient, Classifier, HttpPool
from app.brokers.oauth import parse_token_response
from app.brokers.pooled_adapter import PooledAdapter
from app.brokers.rows import RowList, read_rows
from app.brokers.symbols import asset_class_of
from app.brokers.tastytrade import auth, mapping
from app.brokers.tastytrade.mapping import SLUG
from app.brokers.tastytrade.market_data import TASTYTRADE_MARKET_DATA, TastytradeMarketSession
from app.config import Settings
from app.security.credentials import Credentials

log = logging.getLogger(__name__)
T = TypeVar("T")

N, U = Support.native, Support.unsupported

TASTYTRADE_CAPABILITIES = Capabilities(
    # Futures trade at tastytrade too; this adapter maps equities, equity options and crypto
    # (one "Cryptocurrency" leg, ``BTC/USD``; https://developer.tastytrade.com/order-submission/).
    asset_classes={
        AssetClass.equity: N,
        AssetClass.option: N,
        AssetClass.crypto: N,
        AssetClass.mutual_fund: U,
    },
    order_types=dict.fromkeys(OrderType, N),
    # time-in-force values: Day, GTC, GTD, Ext, GTC Ext, Ext Overnight, GTC Ext Overnight,
    # IOC; no fill-or-kill (orders swagger, postAccountsAccountNumberOrders).
    time_in_force={
        TimeInForce.day: N,
        TimeInForce.gtc: N,
        TimeInForce.ioc: N,
        TimeInForce.fok: U,
    },
    # Fractional equity orders exist only for eligible symbols with a $5 minimum; not mapped.
    fractional=U,
    extended_hours=N,  # "Ext" / "GTC Ext"
    short_selling=N,  # a sell with nothing to close opens a short (margin accounts)
    # Spreads are one order with up to 4 Equity Option legs, one net price and price-effect
    # (https://developer.tastytrade.com/docs/guides/multi-leg-spreads/).
    multi_leg=N,
    modify=N,  # price, order type and time in force (not quantity)
    order_stream=N,
    options=OptionCapabilities(
        # GET /option-chains/{symbol}/nested: expirations with their strikes, call and put
        # symbols (https://developer.tastytrade.com/reference/instruments/getOptionChainsSymbolNested/).
        chain=N,
        expirations=N,
        max_legs=mapping.MAX_LEGS,
        # The gateway sends spreads as Market or Limit (a limit needs price + price-effect;
        # an even net price has no form, see mapping._combo_price_effect).
        combo_order_types=frozenset({OrderType.market, OrderType.limit}),
        combo_time_in_force=frozenset({TimeInForce.day, TimeInForce.gtc}),
        combo_price_effects=frozenset({PriceEffect.debit, PriceEffect.credit}),
        # REST quotes (/market-data/by-type) carry no greeks; tastytrade publishes greeks
        # only as DXLink ``Greeks`` events (docs/concepts/streaming), which this adapter
        # does not read.
        greeks=U,
        exercise=U,
    ),
    # POST /accounts/{account_number}/orders/dry-run: preflight, buying-power effect and
    # fees without routing (https://developer.tastytrade.com/reference/orders/postAccountsAccountNumberOrdersDryRun).
    preview=N,
    # DXLink: Quote, Trade, Greeks and Candle events (market_data.py); no REST bars.
    market_data=TASTYTRADE_MARKET_DATA,
    # "Notional Market" orders: ``value`` + ``value-effect``, legs without quantity
    # (orders swagger; tastyware/tastytrade ``NotionalOrder``). Market orders only.
    notional=N,
    notional_limit=U,
)

SOURCE = "brokerage-gateway"  # the ``source`` tag on our orders
PER_PAGE = 200  # ``per-page`` maximum of the order search (orders swagger)
TRANSACTIONS_PER_PAGE = 250
MAX_PAGES = 10  # pages read for one history/transactions call
QUOTES_PER_REQUEST = 100  # "Combined limit across all types is 100"
CHAIN_TTL = 60.0  # seconds a nested chain (listing, not prices) is reused per credential
ASSET_TTL = 3600.0  # seconds a tradable-equity lookup is trusted
_OPEN = frozenset(
    {
        OrderStatus.submitted,
        OrderStatus.accepted,
        OrderStatus.partially_filled,
        OrderStatus.pending_cancel,
        OrderStatus.pending_replace,
    }
)


# /market-data/by-type parameters per asset class
# (https://developer.tastytrade.com/docs/concepts/market-data/).
_QUOTE_KINDS = {
    AssetClass.equity: "equity",
    AssetClass.option: "equity-option",
    AssetClass.crypto: "cryptocurrency",
}


def _loads(response: httpx.Response) -> Any:
    return mapping.WIRE.json_body(response)


def _token_classifier(response: httpx.Response, method: str) -> errors.BrokerError | None:
    """Any 4xx from the token endpoint: the refresh token or client secret was refused."""
    error = mapping.error_of(response)
    return errors.AuthenticationFailed(
        f"tastytrade refused the refresh token: {error.reason}", broker=SLUG
    )


def replacement_client_order_id(broker_order_id: str) -> str:
    """The ``external-identifier`` of the order replacing ``broker_order_id``.

    An order is replaced at most once (its replacement carries the terms from then on), so
    this is unique, and a replacement whose answer was lost can be found by it.
    """
    return f"bgr-{broker_order_id}"[:64]


def _rows_like(source: list[T], kept: list[T]) -> RowList[T]:
    """``kept`` (filtered from ``source``) still saying how many rows ``source`` left out."""
    result: RowList[T] = RowList(kept)
    result.skipped = source.skipped if isinstance(source, RowList) else 0
    return result


def _account_row_id(item: Any) -> str:
    number = item.get("account", {}).get("account-number") if isinstance(item, dict) else None
    return _masked(str(number)) if number else "?"


def _masked(number: str) -> str:
    return "****" + number[-4:] if len(number) > 4 else "****"


class TastytradeAdapter(PooledAdapter):
    slug = SLUG
    capabilities = TASTYTRADE_CAPABILITIES

    def __init__(
        self, settings: Settings, credentials: Credentials | None, pool: HttpPool | None = None
    ) -> None:
        super().__init__(settings, pool)
        self._credentials = auth.require(credentials)
        per_minute = settings.tastytrade_requests_per_minute
        self._bucket = self._pacer(
            auth.credential_id(self._credentials),
            per_minute=per_minute,
            capacity=max(1, min(settings.tastytrade_burst, per_minute)),
        )
        self._tokens = auth.source_for(self._pool, self._credentials)

    def __repr__(self) -> str:
        return f"TastytradeAdapter(base_url={self._settings.tastytrade_base_url!r})"

    # --- transport ---------------------------------------------------------------------

    def _client(self, token: str | None, classifier: Classifier) -> BrokerClient:
        headers = {
            "User-Agent": auth.USER_AGENT,
            "Accept": "application/json",
            "Content-Type": "application/json",
        }
        if self._settings.tastytrade_api_version:
            headers["Accept-Version"] = self._settings.tastytrade_api_version
        if token is not None:
            headers["Authorization"] = auth.bearer(token)
        return self._broker_client(
            self._settings.tastytrade_base_url,
            headers=headers,
            bucket=self._bucket,
            classifier=classifier,
        )

    async def _fetch_token(self) -> tuple[str, float]:
        """``POST /oauth/token`` with the refresh token: (access token, lifetime seconds).

        Minting a token changes nothing a retry could duplicate, so a lost answer is
        Transient here, never OutcomeUnknown (an order placement waiting for its token must
        not become "unknown" because of it).
        """
        client = self._client(None, _token_classifier)
        try:
            response = await client.request(
                "POST", auth.TOKEN_PATH, json=auth.token_request(self._credentials)
            )
        except errors.OutcomeUnknown as exc:
            raise errors.Transient(
                f"no answer from tastytrade's token endpoint: {exc.reason}", broker=SLUG
            ) from None
        answer = parse_token_response(response, SLUG)
        expires_in = answer.expires_in
        return answer.access_token, float(
            auth.ACCESS_TOKEN_SECONDS if expires_in is None else expires_in
        )

    async def access_token(self) -> str:
        """A current access token (also the streamer's ``auth-token``)."""
        return await self._tokens.token(self._fetch_token)

    def invalidate_token(self, token: str) -> None:
        self._tokens.invalidate(token)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
    ) -> Any:
        """One API call with a current token; a 401 mints a new token and retries once."""
        token = await self.access_token()
        try:
            response = await self._client(token, mapping.classify).request(
                method, path, params=params, json=json
            )
        except mapping.TokenRejected:
            self._tokens.invalidate(token)
            token = await self.access_token()
            try:
                response = await self._client(token, mapping.classify).request(
                    method, path, params=params, json=json
                )
            except mapping.TokenRejected as exc:
                raise errors.AuthenticationFailed(exc.reason, broker=SLUG) from None
        return _loads(response)

    @staticmethod
    def _account_path(account_ref: str, rest: str = "") -> str:
        return f"/accounts/{quote(account_ref, safe='')}{rest}"

    # --- accounts ----------------------------------------------------------------------

    async def list_accounts(self) -> list[BrokerAccount]:
        """``GET /customers/me/accounts``: the open accounts this grant may use.

        Also how a new credential is validated before it is stored (the call mints an
        access token first, so a refused refresh token or secret fails here).
        """
        items = mapping.items_of(await self._call("GET", "/customers/me/accounts"))

        def account(item: Any) -> BrokerAccount | None:
            a = mapping.account_from_wire(item)
            if a.closed:
                return None
            return BrokerAccount(
                broker_account_id=a.number,
                name=f"tastytrade {a.name} {_masked(a.number)}",
                number_masked=_masked(a.number),
            )

        return read_rows(items, account, broker=SLUG, kind="account", row_id=_account_row_id)

    async def get_balances(self, account_ref: str) -> Balances:
        body = await self._call("GET", self._account_path(account_ref, "/balances"))
        return mapping.balances_from_wire(mapping.data_of(body), self._now())

    async def _positions(self, account_ref: str, symbol: str | None) -> list[Position]:
        params: dict[str, Any] = {"include-marks": "true"}
        if symbol is not None:
            params["symbol"] = mapping.to_wire_symbol(symbol)
        body = await self._call("GET", self._account_path(account_ref, "/positions"), params=params)
        now = self._now()

        def position(item: Any) -> Position | None:
            # None: an instrument the gateway does not model (futures, ...), or a flat row.
            mapped = mapping.position_from_wire(item, now)
            return mapped if mapped is not None and mapped.quantity != 0 else None

        return read_rows(mapping.items_of(body), position, broker=SLUG, kind="position")

    async def get_positions(self, account_ref: str) -> list[Position]:
        return await self._positions(account_ref, None)

    async def get_position(self, account_ref: str, symbol: str) -> Position | None:
        for position in await self._positions(account_ref, symbol):
            if position.symbol == symbol:
                return position
        return None

    async def check_symbol(self, symbol: str) -> None:
        """``GET /instruments/equities/{symbol}`` (or ``/instruments/equity-options/{occ}``
        for an option): unknown (404) or inactive instruments are refused, and closing-only
        equities. A tradable answer is remembered for ``ASSET_TTL``."""
        asset_class = asset_class_of(symbol)
        if asset_class is AssetClass.option:
            path = "/instruments/equity-options/" + quote(mapping.option_to_wire(symbol), safe="")
        elif asset_class is AssetClass.equity:
            path = f"/instruments/equities/{quote(mapping.to_wire_symbol(symbol), safe='')}"
        elif asset_class is AssetClass.crypto:
            # ``BTC/USD`` with its slash escaped (tastyware/tastytrade ``Cryptocurrency.get``).
            path = f"/instruments/cryptocurrencies/{quote(mapping.to_wire_symbol(symbol), safe='')}"
        else:
            raise errors.UnsupportedOrder(
                f"the gateway trades equities, equity options and crypto at tastytrade, "
                f"not {symbol}",
                broker=SLUG,
            )
        memo_key = ("tastytrade-instrument", self._settings.tastytrade_base_url, symbol)
        if self._pool.recall(memo_key) is True:
            return
        try:
            body = await self._call("GET", path)
        except (errors.UnknownSymbol, errors.OrderNotFound) as exc:
            raise errors.UnknownSymbol(f"tastytrade does not list {symbol}", broker=SLUG) from exc
        data = mapping.data_of(body)
        if not isinstance(data, dict):
            raise mapping.unknown("instrument payload", type(data).__name__)
        # An option that is closing-only can still be closed; the broker refuses an opening
        # order itself, so only an inactive option is refused here.
        closing_only = asset_class is not AssetClass.option and data.get("is-closing-only") is True
        if data.get("active") is not True or closing_only:
            raise errors.UnsupportedOrder(
                f"{symbol} is not open for trading at tastytrade", broker=SLUG
            )
        self._pool.remember(memo_key, True, ASSET_TTL)

    # --- options -----------------------------------------------------------------------

    async def _nested_chain(self, underlying: str) -> list[mapping.ChainExpiration]:
        """``GET /option-chains/{symbol}/nested``, reused for ``CHAIN_TTL`` (listings change
        once a day; prices are never cached)."""
        memo_key = (
            "tastytrade-chain",
            self._settings.tastytrade_base_url,
            auth.credential_id(self._credentials),
            underlying,
        )
        cached = self._pool.recall(memo_key)
        if isinstance(cached, list):
            return cached
        try:
            body = await self._call(
                "GET", f"/option-chains/{quote(mapping.to_wire_symbol(underlying), safe='')}/nested"
            )
        except errors.OrderNotFound as exc:
            raise errors.UnknownSymbol(
                f"tastytrade lists no options on {underlying}", broker=SLUG
            ) from exc
        chain = mapping.nested_chain_from_wire(mapping.items_of(body), underlying)
        if not chain:
            raise errors.UnknownSymbol(f"tastytrade lists no options on {underlying}", broker=SLUG)
        self._pool.remember(memo_key, chain, CHAIN_TTL)
        return chain

    async def list_option_expirations(self, underlying: str) -> list[OptionExpiration]:
        """The nested chain is the expirations list (one request, no quotes)."""
        return [e.expiration for e in await self._nested_chain(underlying)]

    async def get_option_chain(self, query: OptionChainQuery) -> list[OptionQuote]:
        """The nested chain filtered here (tastytrade's chain endpoints take no filters),
        then quotes by ``GET /market-data/by-type?equity-option=...`` 100 symbols a call."""
        contracts = [
            contract
            for expiration in await self._nested_chain(query.underlying)
            if query.expiration in (None, expiration.expiration.expiration)
            for contract in expiration.contracts
            if (query.right is None or contract.right is query.right)
            and (query.strike_gte is None or contract.strike >= query.strike_gte)
            and (query.strike_lte is None or contract.strike <= query.strike_lte)
        ]
        result: list[OptionQuote] = []
        for start in range(0, len(contracts), QUOTES_PER_REQUEST):
            chunk = contracts[start : start + QUOTES_PER_REQUEST]
            body = await self._call(
                "GET",
                "/market-data/by-type",
                params={"equity-option": [c.occ_padded for c in chunk]},
            )
            result.extend(
                mapping.option_quotes_from_wire(mapping.items_of(body), chunk, self._now())
            )
        return result

    async def preview_order(self, account_ref: str, order: OrderRequest) -> OrderPreview:
        """``POST .../orders/dry-run`` with the body placing would send. A refusal of the
        order itself (422 preflight failure, insufficient buying power, 400 validation) is a
        preview with rejections; a refused token, an unknown account or an outage raise."""
        body = mapping.order_to_wire(order, SOURCE)
        try:
            answer = await self._call(
                "POST", self._account_path(account_ref, "/orders/dry-run"), json=body
            )
        except (errors.OrderNotFound, errors.OrderNotModifiable):
            raise  # an unknown account, not a verdict on the order
        except errors.Rejected as exc:
            return mapping.rejection_preview(exc.reason)
        natural = None
        if order.order_type is OrderType.market:
            natural = await self._natural_debit(order)
        return mapping.preview_from_wire(mapping.data_of(answer), order, natural)

    async def _natural_debit(self, order: OrderRequest) -> Decimal | None:
        """A market order's price per unit from current quotes (buys at the ask, sells at the
        bid), for the preview's cash estimate; None when a quote is missing."""
        legs = order.legs or (
            OrderLeg(order.symbol, order.side, 1, order.position_effect or PositionEffect.open),
        )
        quotes = await self.get_quotes([leg.symbol for leg in legs])
        total = Decimal(0)
        for leg in legs:
            quote = quotes.get(leg.symbol)
            if quote is None:
                return None
            total += leg.ratio * (quote.ask if leg.side is OrderSide.buy else -quote.bid)
        return total

    # --- orders ------------------------------------------------------------------------

    def _modelled(self, items: list[Any]) -> RowList[BrokerOrder]:
        """Orders outside the gateway's model (futures, complex orders) are not rows of the
        list; a modelled order that cannot be mapped is skipped and counted (``read_rows``)."""

        def order(item: Any) -> BrokerOrder | None:
            return mapping.order_from_wire(item) if mapping.is_modelled(item) else None

        return read_rows(items, order, broker=SLUG, kind="order")

    async def place_order(self, account_ref: str, order: OrderRequest) -> BrokerOrder:
        body = mapping.order_to_wire(order, SOURCE)
        answer = await self._call("POST", self._account_path(account_ref, "/orders"), json=body)
        data = mapping.data_of(answer)
        placed = data.get("order") if isinstance(data, dict) else None
        return mapping.order_from_wire(placed)

    async def _raw_order(self, account_ref: str, broker_order_id: str) -> dict[str, Any]:
        path = self._account_path(account_ref, f"/orders/{quote(broker_order_id, safe='')}")
        data = mapping.data_of(await self._call("GET", path))
        if not isinstance(data, dict):
            raise mapping.unknown("order payload", type(data).__name__)
        return data

    async def get_order(self, account_ref: str, broker_order_id: str) -> BrokerOrder:
        return mapping.order_from_wire(await self._raw_order(account_ref, broker_order_id))

    async def modify_order(
        self, account_ref: str, broker_order_id: str, changes: OrderChanges
    ) -> BrokerOrder:
        """Cancel-replace: the current order is read (its exact time-in-force, extended
        hours included, is kept unless changed), then ``PUT`` with the new terms. The answer
        is the replacement (new id, ``replaces`` = this one)."""
        if changes.is_empty():
            return await self.get_order(account_ref, broker_order_id)
        if changes.quantity is not None:
            raise errors.UnsupportedOrder(
                "tastytrade cannot change an order's quantity; cancel it and place a new one",
                broker=SLUG,
            )
        current = await self._raw_order(account_ref, broker_order_id)
        body = mapping.replacement_to_wire(
            current, changes, replacement_client_order_id(broker_order_id), SOURCE
        )
        path = self._account_path(account_ref, f"/orders/{quote(broker_order_id, safe='')}")
        answer = await self._call("PUT", path, json=body)
        replacement = mapping.order_from_wire(mapping.data_of(answer))
        if replacement.replaces is None and replacement.broker_order_id != broker_order_id:
            return replace(replacement, replaces=broker_order_id)
        return replacement

    async def cancel_order(self, account_ref: str, broker_order_id: str) -> BrokerOrder:
        path = self._account_path(account_ref, f"/orders/{quote(broker_order_id, safe='')}")
        answer = await self._call("DELETE", path)
        data = answer.get("data") if isinstance(answer, dict) else None
        if isinstance(data, dict) and mapping.is_modelled(data):
            return mapping.order_from_wire(data)
        try:
            return await self.get_order(account_ref, broker_order_id)
        except errors.BrokerError as exc:
            # The cancel was accepted; only its result is unknown.
            raise errors.OutcomeUnknown(
                f"the cancel was accepted but the order could not be read: {exc.reason}",
                broker=SLUG,
            ) from exc

    async def live_orders(self, account_ref: str) -> list[BrokerOrder]:
        """``GET .../orders/live``: today's orders in any state plus older working ones."""
        body = await self._call("GET", self._account_path(account_ref, "/orders/live"))
        return self._modelled(mapping.items_of(body))

    async def _search(
        self, account_ref: str, params: dict[str, Any], limit: int
    ) -> list[BrokerOrder]:
        """``GET .../orders`` (newest first), page after page until ``limit`` orders."""
        result: RowList[BrokerOrder] = RowList()
        per_page = max(1, min(limit, PER_PAGE))
        for offset in range(MAX_PAGES):
            body = await self._call(
                "GET",
                self._account_path(account_ref, "/orders"),
                params={**params, "sort": "Desc", "per-page": per_page, "page-offset": offset},
            )
            items = mapping.items_of(body)
            rows = self._modelled(items)
            result.extend(rows)
            result.skipped += rows.skipped
            page = mapping.page_of(body)
            if len(result) >= limit or not items or page is None or page.last:
                break
        return _rows_like(result, result[:limit])

    async def find_order_by_client_id(
        self, account_ref: str, client_order_id: str
    ) -> BrokerOrder | None:
        body = await self._call("GET", self._account_path(account_ref, "/orders/live"))
        for item in mapping.items_of(body):
            if isinstance(item, dict) and item.get("external-identifier") == client_order_id:
                return mapping.order_from_wire(item)
        body = await self._call(
            "GET",
            self._account_path(account_ref, "/orders"),
            params={"sort": "Desc", "per-page": PER_PAGE, "page-offset": 0},
        )
        for item in mapping.items_of(body):
            if isinstance(item, dict) and item.get("external-identifier") == client_order_id:
                return mapping.order_from_wire(item)
        return None

    async def list_orders(
        self, account_ref: str, status: OrderListFilter, limit: int
    ) -> list[BrokerOrder]:
        limit = max(1, limit)
        if status == "open":
            live = await self.live_orders(account_ref)
            working = [o for o in live if o.status in _OPEN]
            working.sort(key=lambda o: o.created_at, reverse=True)
            return _rows_like(live, working[:limit])
        params: dict[str, Any] = {}
        if status == "closed":
            params["status[]"] = list(mapping.CLOSED_WIRE_STATUSES)
        return await self._search(account_ref, params, limit)

    async def order_history(
        self, account_ref: str, start: datetime | None, end: datetime | None, symbol: str | None
    ) -> list[BrokerOrder]:
        params: dict[str, Any] = {}
        if start is not None:
            params["start-at"] = mapping.wire_time(start)
        if end is not None:
            params["end-at"] = mapping.wire_time(end)
        if symbol is not None:
            # The search filters by underlying: an option's orders are its underlying's.
            if asset_class_of(symbol) is AssetClass.option:
                symbol = mapping.option_from_wire(symbol).underlying
            params["underlying-symbol"] = mapping.to_wire_symbol(symbol)
        return await self._search(account_ref, params, PER_PAGE * MAX_PAGES)

    async def get_transactions(
        self, account_ref: str, start: datetime | None, end: datetime | None, type_: str | None
    ) -> list[Transaction]:
        params: dict[str, Any] = {"sort": "Desc", "per-page": TRANSACTIONS_PER_PAGE}
        if start is not None:
            params["start-at"] = mapping.wire_time(start)
        if end is not None:
            params["end-at"] = mapping.wire_time(end)
        result: RowList[Transaction] = RowList()
        for offset in range(MAX_PAGES):
            body = await self._call(
                "GET",
                self._account_path(account_ref, "/transactions"),
                params={**params, "page-offset": offset},
            )
            items = mapping.items_of(body)
            rows = read_rows(items, mapping.transaction_from_wire, broker=SLUG, kind="transaction")
            result.extend(rows)
            result.skipped += rows.skipped
            page = mapping.page_of(body)
            if not items or page is None or page.last:
                break
        return _rows_like(result, [t for t in result if type_ is None or t.type == type_])

    async def get_quotes(self, symbols: list[str]) -> dict[str, Quote]:
        """``GET /market-data/by-type?equity=AAPL&equity=MSFT`` (at most 100 symbols a call;
        options as ``equity-option`` with the padded OCC symbol)."""
        result: dict[str, Quote] = {}
        for start in range(0, len(symbols), QUOTES_PER_REQUEST):
            chunk = symbols[start : start + QUOTES_PER_REQUEST]
            params: dict[str, list[str]] = {}
            for symbol in chunk:
                kind = _QUOTE_KINDS.get(asset_class_of(symbol), "equity")
                params.setdefault(kind, []).append(mapping.to_wire_symbol(symbol))
            body = await self._call("GET", "/market-data/by-type", params=params)
            result.update(mapping.quotes_from_wire(mapping.items_of(body), chunk))
        return result

    async def quote_token(self) -> tuple[str, str]:
        """``GET /api-quote-tokens``: the DXLink token and ``dxlink-url`` (24 h)."""
        data = mapping.data_of(await self._call("GET", "/api-quote-tokens"))
        token = data.get("token") if isinstance(data, dict) else None
        url = data.get("dxlink-url") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token or not isinstance(url, str) or not url:
            raise mapping.unknown(
                "quote token payload", sorted(data) if isinstance(data, dict) else None
            )
        return token, url

    def market_data_session(self) -> TastytradeMarketSession:
        """One DXLink connection (quotes, trades, greeks, candles) for this credential."""
        return TastytradeMarketSession(self.quote_token)

    def stream_order_updates(self, account_ref: str) -> AsyncIterator[OrderUpdate] | None:
        from app.brokers.tastytrade.stream import AccountStreamer

        return AccountStreamer(
            self._settings.tastytrade_streamer_url,
            account_ref,
            token=self.access_token,
            invalidate=self.invalidate_token,
            catch_up=self.live_orders,
            heartbeat_interval=self._settings.tastytrade_heartbeat_seconds,
            idle_timeout=self._settings.tastytrade_stream_idle_seconds,
        ).updates()
