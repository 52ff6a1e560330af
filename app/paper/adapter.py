"""The paper broker behind the same ``BrokerAdapter`` contract as every live broker.

One adapter instance is bound to one owner (the connection's user): every call is scoped
to that owner's paper accounts, so a paper account id from another user is simply unknown.
Market data (``market_data_session``, ``get_bars``) is the paper market's, the same for
every owner (``app.paper.market_data``).
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

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
    OptionExpiration,
    OptionQuote,
    OrderChanges,
    OrderListFilter,
    OrderPreview,
    OrderRequest,
    OrderType,
    OrderUpdate,
    Position,
    Quote,
    Support,
    TimeInForce,
    Transaction,
)
from app.db.deferred import DeferredWrites
from app.db.paper_lock import LockedPaperRows
from app.paper.engine import COMBO_ORDER_TYPES, COMBO_TIME_IN_FORCE, MAX_LEGS, PaperEngine
from app.paper.market_data import (
    PAPER_MARKET_DATA,
    PaperMarketData,
    PaperMarketDataSession,
    history_bars,
)

PAPER_CAPABILITIES = Capabilities(
    asset_classes={
        AssetClass.equity: Support.native,
        AssetClass.crypto: Support.native,
        AssetClass.option: Support.native,
        AssetClass.mutual_fund: Support.unsupported,
    },
    order_types=dict.fromkeys(OrderType, Support.native),
    time_in_force=dict.fromkeys(TimeInForce, Support.native),
    fractional=Support.native,
    extended_hours=Support.native,
    # Margin paper accounts sell short (sell + position_effect open); cash accounts refuse.
    short_selling=Support.native,
    multi_leg=Support.native,
    modify=Support.native,
    # Paper fills reach the order events through the engine's sink, not an adapter stream.
    order_stream=Support.emulated,
    options=OptionCapabilities(
        chain=Support.native,
        expirations=Support.native,
        max_legs=MAX_LEGS,
        combo_order_types=COMBO_ORDER_TYPES,
        combo_time_in_force=COMBO_TIME_IN_FORCE,
        greeks=Support.native,
    ),
    preview=Support.native,
    # Dollar-amount market orders; a limit order takes a quantity.
    notional=Support.native,
    notional_limit=Support.unsupported,
    market_data=PAPER_MARKET_DATA,
)

# One market-data view (and its bar cache) per engine, shared by every owner's adapter.
_MARKETS: weakref.WeakKeyDictionary[PaperEngine, PaperMarketData] = weakref.WeakKeyDictionary()


def paper_market_data(engine: PaperEngine) -> PaperMarketData:
    found = _MARKETS.get(engine)
    if found is None:
        found = _MARKETS[engine] = PaperMarketData(engine.quote_source, engine.options)
    return found


class PaperAdapter:
    slug = "paper"
    capabilities = PAPER_CAPABILITIES

    def __init__(self, engine: PaperEngine, *, owner: str) -> None:
        self._engine = engine
        self._owner = owner

    def __repr__(self) -> str:
        return f"PaperAdapter(owner={self._owner!r})"

    async def list_accounts(self) -> list[BrokerAccount]:
        return await self._engine.list_accounts(self._owner)

    async def get_balances(self, account_ref: str) -> Balances:
        return await self._engine.balances(self._owner, account_ref)

    async def get_positions(self, account_ref: str) -> list[Position]:
        return await self._engine.positions(self._owner, account_ref)

    async def get_position(self, account_ref: str, symbol: str) -> Position | None:
        return await self._engine.position(self._owner, account_ref, symbol)

    async def check_symbol(self, symbol: str) -> None:
        self._engine.check_symbol(symbol)

    async def place_order(self, account_ref: str, order: OrderRequest) -> BrokerOrder:
        return await self._engine.place(self._owner, account_ref, order)

    async def modify_order(
        self, account_ref: str, broker_order_id: str, changes: OrderChanges
    ) -> BrokerOrder:
        return await self._engine.modify(self._owner, account_ref, broker_order_id, changes)

    async def cancel_order(self, account_ref: str, broker_order_id: str) -> BrokerOrder:
        return await self._engine.cancel(self._owner, account_ref, broker_order_id)

    # The paper broker's books are in our database: the order service places, changes and
    # cancels through these, inside its own transaction (the order row, the idempotency
    # record and the events commit with the paper books, all or nothing).

    async def place_order_in(
        self,
        session: AsyncSession,
        account_ref: str,
        order: OrderRequest,
        *,
        deferred: DeferredWrites | None = None,
        locked: LockedPaperRows | None = None,
    ) -> BrokerOrder:
        return await self._engine.place(
            self._owner, account_ref, order, session=session, deferred=deferred, locked=locked
        )

    async def modify_order_in(
        self,
        session: AsyncSession,
        account_ref: str,
        broker_order_id: str,
        changes: OrderChanges,
    ) -> BrokerOrder:
        return await self._engine.modify(
            self._owner, account_ref, broker_order_id, changes, session=session
        )

    async def cancel_order_in(
        self, session: AsyncSession, account_ref: str, broker_order_id: str
    ) -> BrokerOrder:
        return await self._engine.cancel(self._owner, account_ref, broker_order_id, session=session)

    async def get_order(self, account_ref: str, broker_order_id: str) -> BrokerOrder:
        return await self._engine.get_order(self._owner, account_ref, broker_order_id)

    async def find_order_by_client_id(
        self, account_ref: str, client_order_id: str
    ) -> BrokerOrder | None:
        return await self._engine.find_by_client_id(self._owner, account_ref, client_order_id)

    async def list_orders(
        self, account_ref: str, status: OrderListFilter, limit: int
    ) -> list[BrokerOrder]:
        return await self._engine.list_orders(self._owner, account_ref, status, limit)

    async def order_history(
        self, account_ref: str, start: datetime | None, end: datetime | None, symbol: str | None
    ) -> list[BrokerOrder]:
        return await self._engine.history(self._owner, account_ref, start, end, symbol)

    async def get_transactions(
        self, account_ref: str, start: datetime | None, end: datetime | None, type_: str | None
    ) -> list[Transaction]:
        return await self._engine.transactions(self._owner, account_ref, start, end, type_)

    async def get_quotes(self, symbols: list[str]) -> dict[str, Quote]:
        return await self._engine.quotes(symbols)

    async def list_option_expirations(self, underlying: str) -> list[OptionExpiration]:
        return self._engine.option_expirations(underlying)

    async def get_option_chain(self, query: OptionChainQuery) -> list[OptionQuote]:
        return await self._engine.option_chain(query)

    async def preview_order(self, account_ref: str, order: OrderRequest) -> OrderPreview:
        return await self._engine.preview(self._owner, account_ref, order)

    def market_data_session(self) -> PaperMarketDataSession:
        return PaperMarketDataSession(paper_market_data(self._engine), self._engine.clock)

    async def get_bars(
        self, symbol: str, interval: BarInterval, start: datetime, end: datetime, limit: int
    ) -> list[Bar]:
        market = paper_market_data(self._engine)
        return await history_bars(
            market, symbol, interval, start, end, limit, self._engine.clock.now()
        )

    def stream_order_updates(self, account_ref: str) -> AsyncIterator[OrderUpdate] | None:
        return None

    async def close(self) -> None:
        return None
