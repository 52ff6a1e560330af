"""A stand-in broker that takes option orders, for the gateway's option path.

The paper broker does not trade options yet (that is being built beside this work), so the
service side of options (validation, gates, storage of legs, events, discovery, preview) is
exercised against this stand-in: the paper adapter with option capabilities declared, whose
option orders are held in memory and accepted as any broker would accept them (nothing is
filled unless a test says so). Its chain is the paper option market's (``SeededOptionMarket``)
listed from today's real date, so the service's expiry check (by the service clock) agrees
with what it lists. It ignores every chain filter on purpose: the gateway must apply them.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from app.brokers.base import (
    NO_OPTIONS,
    AssetClass,
    BrokerAdapter,
    BrokerOrder,
    BrokerOrderLeg,
    Capabilities,
    OptionCapabilities,
    OptionChainQuery,
    OptionContract,
    OptionExpiration,
    OptionQuote,
    OrderPreview,
    OrderRequest,
    OrderStatus,
    OrderType,
    PreviewSource,
    PriceEffect,
    Support,
    TimeInForce,
    is_option_symbol,
)
from app.brokers.errors import UnknownSymbol
from app.brokers.registry import AdapterContext, BrokerRegistry, default_registry
from app.ids import new_id
from app.paper.adapter import PAPER_CAPABILITIES, PaperAdapter
from app.paper.engine import PaperEngine
from app.paper.options_market import SeededOptionMarket
from app.security.credentials import Credentials

OPTION_CAPABILITIES = dataclasses.replace(
    PAPER_CAPABILITIES,
    asset_classes={**PAPER_CAPABILITIES.asset_classes, AssetClass.option: Support.native},
    multi_leg=Support.native,
    options=OptionCapabilities(
        chain=Support.native,
        expirations=Support.native,
        max_legs=4,
        combo_order_types=frozenset({OrderType.market, OrderType.limit}),
        combo_time_in_force=frozenset({TimeInForce.day, TimeInForce.gtc}),
        greeks=Support.native,
    ),
    preview=Support.emulated,
)


@dataclasses.dataclass
class StandInLog:
    """What the stand-in broker was asked, across every adapter instance of a test app."""

    placed: list[OrderRequest] = dataclasses.field(default_factory=list)
    chain_calls: int = 0
    expiration_calls: int = 0
    previews: list[OrderRequest] = dataclasses.field(default_factory=list)
    orders: dict[str, BrokerOrder] = dataclasses.field(default_factory=dict)


class OptionStandInAdapter(PaperAdapter):
    capabilities = OPTION_CAPABILITIES

    def __init__(self, engine: PaperEngine, *, owner: str, log: StandInLog) -> None:
        super().__init__(engine, owner=owner)
        self._log = log
        self._market = SeededOptionMarket(engine.quote_source)
        self._paper_engine = engine

    async def check_symbol(self, symbol: str) -> None:
        if is_option_symbol(symbol):
            contract = OptionContract.parse(symbol)
            if not self._market.has_options(contract.underlying):
                raise UnknownSymbol(f"no options on {contract.underlying}")
            return
        await super().check_symbol(symbol)

    async def place_order(self, account_ref: str, order: OrderRequest) -> BrokerOrder:
        if not (order.legs or is_option_symbol(order.symbol)):
            return await super().place_order(account_ref, order)
        self._log.placed.append(order)
        now = datetime.now(UTC)
        report = BrokerOrder(
            broker_order_id=new_id("standin"),
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            quantity=order.quantity,
            filled_quantity=Decimal(0),
            avg_fill_price=None,
            order_type=order.order_type,
            time_in_force=order.time_in_force,
            status=OrderStatus.accepted,
            limit_price=order.limit_price,
            stop_price=order.stop_price,
            created_at=now,
            updated_at=now,
            position_effect=order.position_effect,
            legs=tuple(
                BrokerOrderLeg(
                    symbol=leg.symbol,
                    side=leg.side,
                    ratio=leg.ratio,
                    position_effect=leg.position_effect,
                    filled_quantity=Decimal(0),
                    avg_fill_price=None,
                    broker_leg_id=f"leg-{index}",
                )
                for index, leg in enumerate(order.legs)
            ),
            price_effect=order.price_effect,
        )
        self._log.orders[report.broker_order_id] = report
        return report

    async def list_option_expirations(self, underlying: str) -> list[OptionExpiration]:
        self._log.expiration_calls += 1
        if not self._market.has_options(underlying):
            raise UnknownSymbol(f"no options on {underlying}")
        return self._market.expirations(underlying, datetime.now(UTC).date())

    async def get_option_chain(self, query: OptionChainQuery) -> list[OptionQuote]:
        """Every listed contract of the underlying, whatever the query asks (the gateway
        filters)."""
        self._log.chain_calls += 1
        if not self._market.has_options(query.underlying):
            raise UnknownSymbol(f"no options on {query.underlying}")
        at = self._paper_engine.clock.now()
        quotes = []
        listed = [
            e.expiration
            for e in self._market.expirations(query.underlying, datetime.now(UTC).date())
        ]
        # The first three expirations, and the one asked for (where it is listed).
        wanted = listed[:3] + [e for e in listed[3:] if e == query.expiration]
        for expiration in wanted:
            for contract in self._market.contracts(query.underlying, expiration):
                q = self._market.quote(contract, at)
                quotes.append(
                    OptionQuote(
                        contract=contract,
                        bid=q.bid,
                        ask=q.ask,
                        last=q.last,
                        open_interest=None,
                        greeks=q.greeks,
                        source="model",
                        as_of=q.as_of,
                    )
                )
        return quotes


class NativePreviewAdapter(OptionStandInAdapter):
    """The stand-in with a broker preview of its own (answers like Schwab: 200 with a
    rejection when the order is too large)."""

    capabilities = dataclasses.replace(OPTION_CAPABILITIES, preview=Support.native)

    async def preview_order(self, account_ref: str, order: OrderRequest) -> OrderPreview:
        self._log.previews.append(order)
        too_big = order.quantity > 100
        return OrderPreview(
            estimated_cash_change=Decimal("-123.45"),
            direction=PriceEffect.debit,
            buying_power_change=Decimal("-123.45"),
            fees=Decimal("0.65"),
            warnings=("broker warning",),
            rejections=("order exceeds the account's limit",) if too_big else (),
            source=PreviewSource.broker,
        )


def standin_registry(
    log: StandInLog,
    *,
    capabilities: Capabilities | None = None,
    adapter: type[OptionStandInAdapter] = OptionStandInAdapter,
) -> BrokerRegistry:
    """The default registry with the paper slug served by the stand-in."""
    registry = default_registry()
    paper = registry.get("paper")
    assert paper is not None

    def factory(ctx: AdapterContext, _credentials: Credentials | None) -> BrokerAdapter:
        return adapter(ctx.paper_engine, owner=ctx.owner, log=log)

    registry.register(
        dataclasses.replace(
            paper, factory=factory, capabilities=capabilities or adapter.capabilities
        )
    )
    return registry


NO_OPTION_CAPABILITIES = dataclasses.replace(
    PAPER_CAPABILITIES,
    asset_classes={**PAPER_CAPABILITIES.asset_classes, AssetClass.option: Support.unsupported},
    multi_leg=Support.unsupported,
    options=NO_OPTIONS,
    preview=Support.emulated,
)


def no_options_registry() -> BrokerRegistry:
    """The default registry with a paper broker that declares no options at all (as the
    brokers without an option API do)."""
    registry = default_registry()
    paper = registry.get("paper")
    assert paper is not None
    registry.register(dataclasses.replace(paper, capabilities=NO_OPTION_CAPABILITIES))
    return registry


def far_monthly() -> date:
    """A listed monthly expiration a few months out (third Friday), by today's real date."""
    today = datetime.now(UTC).date()
    month = today.month + 3
    year = today.year + (month - 1) // 12
    month = (month - 1) % 12 + 1
    first = date(year, month, 1)
    return first.replace(day=1 + (4 - first.weekday()) % 7 + 14)


def occ(underlying: str, expiration: date, right: str, strike: str) -> str:
    return f"{underlying}{expiration:%y%m%d}{right}{int(Decimal(strike) * 1000):08d}"


def iron_condor(expiration: date, quantity: str = "1", **extra: Any) -> dict[str, Any]:
    """Sell the 180/200 strangle, buy the 170/210 wings on AAPL (base 190): a credit."""
    body: dict[str, Any] = {
        "legs": [
            {
                "symbol": occ("AAPL", expiration, "P", "170"),
                "side": "buy",
                "ratio": 1,
                "position_effect": "open",
            },
            {
                "symbol": occ("AAPL", expiration, "P", "180"),
                "side": "sell",
                "ratio": 1,
                "position_effect": "open",
            },
            {
                "symbol": occ("AAPL", expiration, "C", "200"),
                "side": "sell",
                "ratio": 1,
                "position_effect": "open",
            },
            {
                "symbol": occ("AAPL", expiration, "C", "210"),
                "side": "buy",
                "ratio": 1,
                "position_effect": "open",
            },
        ],
        "quantity": quantity,
        "order_type": "limit",
        "limit_price": "2.10",
        "price_effect": "credit",
        "time_in_force": "day",
    }
    body.update(extra)
    return body


class WithoutChains:
    """The paper adapter seen through a path that has no option discovery, whatever its
    capabilities claim: the two discovery methods are missing."""

    _HIDDEN = frozenset({"list_option_expirations", "get_option_chain"})

    def __init__(self, inner: PaperAdapter) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name in self._HIDDEN:
            raise AttributeError(name)
        return getattr(self._inner, name)


def without_chains_registry() -> BrokerRegistry:
    """Paper declaring a chain (its own capabilities) but with an adapter lacking it."""
    registry = default_registry()
    paper = registry.get("paper")
    assert paper is not None

    def factory(ctx: AdapterContext, _credentials: Credentials | None) -> BrokerAdapter:
        return WithoutChains(PaperAdapter(ctx.paper_engine, owner=ctx.owner))

    registry.register(dataclasses.replace(paper, factory=factory))
    return registry
