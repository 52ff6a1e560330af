"""Options discovery (expirations, chains) and order preview, read through an account's adapter.

Discovery goes through the adapter's optional ``SupportsOptionChains``. A broker path without
it (``capabilities.options.chain`` / ``expirations`` ``unsupported``, or an adapter that does
not implement the protocol) answers 422 ``options_chain_unsupported``, never an empty list.
Whatever the broker returns, the service applies every filter of the query again (brokers
that cannot filter return more), orders the contracts by (expiration, strike, call before
put) and pages them with a keyset cursor: ``limit`` defaults to 100, at most 500.

Results are kept per account for ``option_chain_cache_seconds`` (default 5 s): quotes are
licensed to the credential that fetched them, so nothing is shared across accounts, and a
page walk within that time reads one consistent chain.

Preview (``POST /v1/accounts/{id}/orders/preview``) runs the same validation and gates as a
placement, except the ones that guard sending an order (kill-switches, paper-first: a preview
is a read) and writes nothing: no order row, no idempotency key, no event, no audit entry.
It uses the broker's own preview where ``capabilities.preview`` is ``native`` and the adapter
implements ``SupportsOrderPreview``; otherwise the gateway estimates from quotes
(``source: estimate``): the limit price where the order has one, else the quote's mid, times
quantity (times the contract multiplier and each leg's ratio for options), signed by side;
fees 0 (unknown), the buying-power change equal to the cash change for a debit, unknown
(null) for a credit (margin depends on the account).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from app import errors
from app.brokers import errors as broker_errors
from app.brokers.base import (
    BrokerAdapter,
    OptionChainQuery,
    OptionContract,
    OptionExpiration,
    OptionQuote,
    OptionRight,
    OrderPreview,
    OrderSide,
    OrderType,
    PreviewSource,
    PriceEffect,
    Quote,
    Support,
    SupportsOptionChains,
    SupportsOrderPreview,
)
from app.brokers.registry import BrokerSpec
from app.brokers.symbols import normalize_symbol
from app.db.models import Account, Connection
from app.db.repositories.connections import AccountRepository
from app.ids import new_id
from app.schemas.common import decode_cursor, encode_cursor
from app.schemas.options import (
    ExpirationList,
    ExpirationOut,
    OptionChain,
    OptionQuoteOut,
    OrderPreviewOut,
)
from app.schemas.orders import OrderCreate
from app.services.broker_errors import to_app_error
from app.services.clock import utcnow
from app.services.context import ServiceContext, ensure_usable
from app.services.orders import (
    check_at_broker,
    check_option_terms,
    market_today,
    order_request_for_body,
    order_symbol,
    quantity_is_fractional,
)
from app.services.pretrade import check_order

T = TypeVar("T")

DEFAULT_CHAIN_LIMIT = 100
MAX_CHAIN_LIMIT = 500
_CACHE_ENTRIES = 128
_ZERO = Decimal(0)
_TWO = Decimal(2)
_ESTIMATE_WARNING = (
    "estimated by the gateway from current quotes (this broker has no order preview); "
    "fees and margin are not included"
)


@dataclass(frozen=True, slots=True)
class ChainFilter:
    underlying: str
    expiration: date | None
    right: OptionRight | None
    strike_gte: Decimal | None
    strike_lte: Decimal | None

    def query(self) -> OptionChainQuery:
        return OptionChainQuery(
            underlying=self.underlying,
            expiration=self.expiration,
            right=self.right,
            strike_gte=self.strike_gte,
            strike_lte=self.strike_lte,
        )

    def keeps(self, contract: OptionContract) -> bool:
        return (
            contract.underlying == self.underlying
            and (self.expiration is None or contract.expiration == self.expiration)
            and (self.right is None or contract.right is self.right)
            and (self.strike_gte is None or contract.strike >= self.strike_gte)
            and (self.strike_lte is None or contract.strike <= self.strike_lte)
        )


def _sort_key(contract: OptionContract) -> tuple[date, Decimal, int]:
    return (contract.expiration, contract.strike, 0 if contract.right is OptionRight.call else 1)


def _encode_chain_cursor(contract: OptionContract) -> str:
    key = _sort_key(contract)
    return encode_cursor(key[0].isoformat(), format(key[1], "f"), str(key[2]))


def _decode_chain_cursor(cursor: str) -> tuple[date, Decimal, int]:
    expiration, strike, right = decode_cursor(cursor, size=3)
    try:
        return date.fromisoformat(expiration), Decimal(strike), int(right)
    except (ValueError, ArithmeticError) as exc:
        raise errors.InvalidCursor() from exc


class DiscoveryCache:
    """Per-account results for a short time; bounded (oldest out first). Per process: each
    instance keeps its own, which a few seconds of staleness allows."""

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[tuple[Any, ...], tuple[float, Any]] = OrderedDict()

    async def get_or_load(self, key: tuple[Any, ...], load: Callable[[], Awaitable[T]]) -> T:
        now = self._clock()
        found = self._entries.get(key)
        if found is not None and found[0] > now:
            value: T = found[1]
            return value
        value = await load()
        if self._ttl > 0:
            self._entries[key] = (now + self._ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > _CACHE_ENTRIES:
                self._entries.popitem(last=False)
        return value


class OptionsService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._cache = DiscoveryCache(ctx.settings.option_chain_cache_seconds)

    # --- discovery -------------------------------------------------------------------

    async def expirations(
        self, *, user_id: str, account_id: str, underlying: str
    ) -> ExpirationList:
        symbol = _underlying(underlying)

        async def load(adapter: SupportsOptionChains) -> list[OptionExpiration]:
            return await adapter.list_option_expirations(symbol)

        found = await self._discover(user_id, account_id, ("expirations", symbol), load)
        today = market_today(utcnow())
        unique = {e.expiration: e for e in found if e.expiration >= today}
        return ExpirationList(
            underlying=symbol,
            items=[
                ExpirationOut(expiration=e.expiration, expiration_type=e.expiration_type)
                for e in sorted(unique.values(), key=lambda e: e.expiration)
            ],
        )

    async def chain(
        self,
        *,
        user_id: str,
        account_id: str,
        wanted: ChainFilter,
        limit: int,
        cursor: str | None,
    ) -> OptionChain:
        wanted = ChainFilter(
            underlying=_underlying(wanted.underlying),
            expiration=wanted.expiration,
            right=wanted.right,
            strike_gte=wanted.strike_gte,
            strike_lte=wanted.strike_lte,
        )
        after = _decode_chain_cursor(cursor) if cursor is not None else None
        if not 1 <= limit <= MAX_CHAIN_LIMIT:
            raise errors.ValidationFailed(f"limit is 1 to {MAX_CHAIN_LIMIT}")

        async def load(adapter: SupportsOptionChains) -> list[OptionQuote]:
            return await adapter.get_option_chain(wanted.query())

        found = await self._discover(user_id, account_id, ("chain", wanted), load)
        unique = {q.contract.symbol: q for q in found if wanted.keeps(q.contract)}
        ordered = sorted(unique.values(), key=lambda q: _sort_key(q.contract))
        if after is not None:
            ordered = [q for q in ordered if _sort_key(q.contract) > after]
        page = ordered[:limit]
        next_cursor = _encode_chain_cursor(page[-1].contract) if len(ordered) > limit else None
        return OptionChain(
            underlying=wanted.underlying,
            items=[OptionQuoteOut.of(q) for q in page],
            next_cursor=next_cursor,
        )

    async def _discover(
        self,
        user_id: str,
        account_id: str,
        what: tuple[Any, ...],
        load: Callable[[SupportsOptionChains], Awaitable[T]],
    ) -> T:
        async def work() -> T:
            async with self._ctx.sessionmaker() as session:
                account, connection = await _owned(session, user_id, account_id)
                if connection.status == "revoked":
                    raise errors.ConnectionBroken("the connection was disconnected")
                spec = self._ctx.spec_for(connection)
                _ensure_chain(spec, what[0])
                adapter = await self._ctx.adapter_for(session, connection, for_order=False)
            if not isinstance(adapter, SupportsOptionChains):
                raise errors.OptionsChainUnsupported(
                    f"{spec.name} offers no option chain through this gateway"
                )
            chains = adapter

            async def fetch() -> T:
                try:
                    return await load(chains)
                except broker_errors.BrokerError as exc:
                    raise to_app_error(exc) from exc

            return await self._cache.get_or_load((account.id, *what), fetch)

        return await self._ctx.with_fresh_tokens(work)

    # --- preview ---------------------------------------------------------------------

    async def preview(self, *, user_id: str, account_id: str, body: OrderCreate) -> OrderPreviewOut:
        return await self._ctx.with_fresh_tokens(
            lambda: self._preview(user_id=user_id, account_id=account_id, body=body)
        )

    async def _preview(
        self, *, user_id: str, account_id: str, body: OrderCreate
    ) -> OrderPreviewOut:
        async with self._ctx.sessionmaker() as session:
            account, connection = await _owned(session, user_id, account_id)
            ensure_usable(connection)
            spec = self._ctx.spec_for(connection)
            if account.tier == "C" or not spec.capabilities.place_orders:
                raise errors.ReadOnlyAccount()
            if not account.can_trade:
                raise errors.ConnectionBroken("this account does not accept orders")
            # No kill-switch and no paper-first gate: a preview sends nothing.
            check_order(
                spec.capabilities,
                symbol=order_symbol(body),
                order_type=body.order_type,
                time_in_force=body.time_in_force,
                quantity_is_fractional=quantity_is_fractional(body),
                extended_hours=body.extended_hours,
                legs=len(body.legs or ()),
                price_effect=body.price_effect,
                notional=body.notional is not None,
                short_sale=body.is_short_sale,
            )
            check_option_terms(body, utcnow())
            adapter = await self._ctx.adapter_for(session, connection, for_order=False)
        request = order_request_for_body(body, new_id("preview"))
        try:
            await check_at_broker(adapter, account.broker_account_ref, body)
            if spec.capabilities.preview is Support.native and isinstance(
                adapter, SupportsOrderPreview
            ):
                preview = await adapter.preview_order(account.broker_account_ref, request)
            else:
                preview = await _estimate(adapter, body)
        except broker_errors.BrokerError as exc:
            raise to_app_error(exc) from exc
        return OrderPreviewOut.of(preview)


async def _owned(
    session: AsyncSession, user_id: str, account_id: str
) -> tuple[Account, Connection]:
    found = await AccountRepository.for_user(session, user_id).get_with_connection(account_id)
    if found is None:
        raise errors.NotFound("no such account")
    return found


def _underlying(text: str) -> str:
    symbol = normalize_symbol(text)
    if not symbol or len(symbol) > 10 or not all(c.isalnum() or c in "./" for c in symbol):
        raise errors.ValidationFailed("underlying must be a listed symbol such as AAPL")
    return symbol


def _ensure_chain(spec: BrokerSpec, what: str) -> None:
    options = spec.capabilities.options
    support = options.expirations if what == "expirations" else options.chain
    if support is Support.unsupported:
        raise errors.OptionsChainUnsupported(
            f"{spec.name} offers no option {'expirations' if what == 'expirations' else 'chain'}"
            " through this gateway"
        )


# --- the gateway's own estimate ----------------------------------------------------------


def _mid(bid: Decimal | None, ask: Decimal | None, last: Decimal | None) -> Decimal | None:
    if bid is not None and ask is not None and bid > 0 and ask > 0:
        return (bid + ask) / _TWO
    return last if last is not None and last > 0 else None


async def _option_prices(
    adapter: BrokerAdapter, contracts: list[OptionContract]
) -> dict[str, tuple[Decimal, Decimal]]:
    """Mid price and multiplier per contract: from the chain where the broker has one
    (exact filters), else from its quotes with the standard multiplier."""
    prices: dict[str, tuple[Decimal, Decimal]] = {}
    if isinstance(adapter, SupportsOptionChains):
        for contract in contracts:
            found = await adapter.get_option_chain(
                OptionChainQuery(
                    underlying=contract.underlying,
                    expiration=contract.expiration,
                    right=contract.right,
                    strike_gte=contract.strike,
                    strike_lte=contract.strike,
                )
            )
            for quote in found:
                if quote.contract.symbol == contract.symbol:
                    mid = _mid(quote.bid, quote.ask, quote.last)
                    if mid is not None:
                        prices[contract.symbol] = (mid, quote.contract.multiplier)
    missing = [c for c in contracts if c.symbol not in prices]
    if missing:
        quotes = await adapter.get_quotes([c.symbol for c in missing])
        for contract in missing:
            q = quotes.get(contract.symbol)
            mid = _mid(q.bid, q.ask, q.last) if q is not None else None
            if mid is not None:
                prices[contract.symbol] = (mid, contract.multiplier)
    return prices


async def _estimate(adapter: BrokerAdapter, body: OrderCreate) -> OrderPreview:
    """Signed from the account's side: negative when cash leaves it."""
    qty = body.quantity
    if body.notional is not None:
        # A dollar-amount order moves that amount (at most), whatever the price.
        change = body.notional if body.order_side is OrderSide.sell else -body.notional
    elif body.legs is not None:
        if body.limit_price is not None and body.price_effect is not None:
            net = body.limit_price * qty * _multiplier(body)
            change = {
                PriceEffect.debit: -net,
                PriceEffect.credit: net,
                PriceEffect.even: _ZERO,
            }[body.price_effect]
        else:
            prices = await _option_prices(adapter, body.contracts())
            change = _ZERO
            for leg in body.legs:
                if leg.symbol not in prices:
                    raise errors.BrokerUnavailable(f"no quote for {leg.symbol} to estimate from")
                mid, multiplier = prices[leg.symbol]
                amount = leg.ratio * qty * mid * multiplier
                change += amount if leg.side is OrderSide.sell else -amount
    else:
        contracts = body.contracts()
        multiplier = Decimal(1)
        price: Decimal | None = body.limit_price
        if price is None and body.order_type is OrderType.stop:
            price = body.stop_price
        if contracts:
            prices = await _option_prices(adapter, contracts)
            found = prices.get(contracts[0].symbol)
            multiplier = found[1] if found is not None else contracts[0].multiplier
            if price is None and found is not None:
                price = found[0]
        elif price is None:
            symbol = order_symbol(body)
            quotes: dict[str, Quote] = await adapter.get_quotes([symbol])
            q = quotes.get(symbol)
            price = _mid(q.bid, q.ask, q.last) if q is not None else None
        if price is None:
            raise errors.BrokerUnavailable("no quote to estimate the order from")
        amount = qty * price * multiplier
        change = amount if body.order_side is OrderSide.sell else -amount
    change = change.quantize(Decimal("0.01"))
    direction = (
        PriceEffect.debit if change < 0 else PriceEffect.credit if change > 0 else PriceEffect.even
    )
    return OrderPreview(
        estimated_cash_change=change,
        direction=direction,
        buying_power_change=change if change < 0 else None,
        fees=_ZERO,
        warnings=(_ESTIMATE_WARNING,),
        rejections=(),
        source=PreviewSource.estimate,
    )


def _multiplier(body: OrderCreate) -> Decimal:
    """The contracts' multiplier (the standard 100 unless the symbols say otherwise; legs
    of one order share it)."""
    contracts = body.contracts()
    return contracts[0].multiplier if contracts else Decimal(1)
