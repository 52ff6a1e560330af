"""One behavioural contract, run against every adapter: paper, Alpaca, Tradier, tastytrade,
Schwab, Coinbase, Robinhood crypto, Webull, Interactive Brokers, Plaid and SnapTrade (fakes).

Read-only venues (Tier C: Plaid) take the read half only. Which venues can write comes from
the registry (``Capabilities.place_orders``), and the write tests are parametrized over the
write-capable venues only, so nothing is skipped; the read-only venues get their own test
that the write half is refused without a request.

The paper venue uses the SQLite backend (the paper engine's own tests cover Postgres). Each
venue gives an adapter bound to a fresh funded account, a way to let the market move
(``settle``: the paper engine's clock and tick, the fake's matching pass), and the
instrument it trades (``Sample``): an equity for the stock brokers, a crypto pair at
Coinbase, which lists nothing else and takes market orders only immediate-or-cancel. The
contract is written against ``BrokerAdapter`` only; where brokers legitimately differ
(replace keeps the id at the paper broker, Tradier and Coinbase, makes a new one at Alpaca,
tastytrade, Schwab and SnapTrade; tastytrade answers a new order "Routed", i.e.
``submitted``, before it is ``Live``; Schwab and SnapTrade have no client order id, so an
order is found by fingerprint instead, as ``capabilities.client_order_ids`` says) both
outcomes are spelled out.

Robinhood trades crypto only: its venue names the instrument (``BTC-USD``), a quantity its
funds cover, the one time in force it takes (gtc), and says it reports no cash movements
(the API has no activity endpoint). It has no replace (``capabilities.modify`` unsupported),
which the modify test spells out. Webull's v2 API reports no cash activity either (its
transactions are its filled orders) and IBKR's gateway reports executions only; IBKR's venue
confirms the price-constraint question (o163) its far-from-market test limits raise, as a
deployment may (``ibkr_auto_confirm``). The other venues keep the equity defaults.

Options: every venue whose registry capabilities declare the option asset class runs the
options section (a single-leg order placed, read and canceled; a bought contract becomes a
position carrying its contract; a two-leg vertical as one order with its legs where
``multi_leg`` is native; the chain where ``options.chain`` is native). Contracts come from the
adapter's own chain, or from the fake's option market where the broker has no chain
(SnapTrade). Every other venue refuses an option order without a request.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.brokers import errors
from app.brokers.base import (
    AssetClass,
    BrokerAdapter,
    FingerprintLookup,
    OptionChainQuery,
    OptionContract,
    OptionRight,
    OrderChanges,
    OrderFingerprint,
    OrderLeg,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    PositionEffect,
    PriceEffect,
    Support,
    SupportsOptionChains,
    TimeInForce,
)
from app.brokers.registry import default_registry
from app.db.session import create_sessionmaker
from app.paper.adapter import PaperAdapter
from app.paper.clock import ManualClock
from app.paper.engine import PaperEngine
from app.paper.options_market import SeededOptionMarket
from app.paper.quotes import SeededQuoteSource
from tests.brokers.alpaca.support import running_fake
from tests.brokers.coinbase.support import running_fake as running_coinbase
from tests.brokers.ibkr.support import running_fake as running_ibkr
from tests.brokers.plaid.support import running_fake as running_plaid
from tests.brokers.robinhood.support import running_fake as running_robinhood
from tests.brokers.schwab.support import running_fake as running_schwab
from tests.brokers.snaptrade.support import running_fake as running_snaptrade
from tests.brokers.tastytrade.support import running_fake as running_tastytrade
from tests.brokers.tradier.support import running_fake as running_tradier
from tests.brokers.webull.support import running_fake as running_webull
from tests.conftest import new_user
from tests.harness import CLOCK_START


@dataclass(frozen=True)
class Sample:
    """What a venue trades in the contract: the symbol, a quantity that the starting cash
    buys at market, and the time in force of its market orders."""

    symbol: str
    qty: str
    market_tif: TimeInForce
    asset_class: AssetClass = AssetClass.equity
    not_held: str = "MSFT"  # a symbol the account never holds


EQUITY = Sample("AAPL", "2", TimeInForce.day)
SAMPLES = {
    "coinbase": Sample("BTC-USD", "0.01", TimeInForce.ioc, AssetClass.crypto, "ETH-USD"),
    # The paper market's smallest displayed size: one fill. Robinhood crypto takes gtc only.
    "robinhood": Sample("BTC-USD", "0.05", TimeInForce.gtc, AssetClass.crypto, "ETH-USD"),
}


@dataclass
class Venue:
    adapter: BrokerAdapter
    account_ref: str
    settle: Callable[[], Awaitable[object]]
    sample: Sample = EQUITY
    # Read-only venues: put a holding in the account at the broker (nothing can be bought
    # through the adapter). None: the position is bought with a market order.
    seed: Callable[[str, str], Awaitable[None]] | None = None
    # Read-only venues: the broker's request log, to show that refusals send nothing.
    requests: Callable[[], int] | None = None
    cash_movements: bool = True  # deposits are reported as transactions
    # Option venues without a chain endpoint: the fake's option market (expirations,
    # strikes), where the contract suite takes its contracts from.
    option_market: SeededOptionMarket | None = None


async def _ignore(_update: object) -> None:
    return None


@contextlib.asynccontextmanager
async def venue(name: str, engine: AsyncEngine, cash: str) -> AsyncIterator[Venue]:
    if name == "paper":
        clock = ManualClock(CLOCK_START)
        paper = PaperEngine(create_sessionmaker(engine), SeededQuoteSource(7), clock, _ignore)
        owner = new_user("contract")
        account = await paper.create_account(owner, Decimal(cash))

        async def tick() -> object:
            clock.advance(timedelta(seconds=1))
            return await paper.tick()

        yield Venue(PaperAdapter(paper, owner=owner), account.broker_account_id, tick)
        return
    if name == "tradier":
        async with running_tradier(cash=cash) as tradier:
            yield Venue(
                tradier.adapter(),
                tradier.account.number,
                tradier.fake.match,
                requests=lambda: len(tradier.fake.requests),
            )
        return
    if name == "tastytrade":
        async with running_tastytrade(cash=cash) as tt:
            yield Venue(
                tt.adapter(),
                tt.account.number,
                tt.fake.match,
                requests=lambda: len(tt.fake.requests),
            )
        return
    if name == "schwab":
        async with running_schwab(cash=cash) as schwab:
            yield Venue(
                schwab.adapter(),
                schwab.account.hash_value,
                schwab.fake.match,
                requests=lambda: len(schwab.fake.requests),
            )
        return
    if name == "plaid":
        async with running_plaid(cash=cash) as run:
            adapter = run.adapter()
            [account] = await adapter.list_accounts()

            async def seed(symbol: str, quantity: str) -> None:
                run.fake.hold(run.account, symbol, quantity, "190.00", cost_basis="100")

            async def nothing() -> object:
                return None

            yield Venue(
                adapter,
                account.broker_account_id,
                nothing,
                seed=seed,
                requests=lambda: len(run.fake.requests),
            )
        return
    if name == "coinbase":
        async with running_coinbase(cash=cash) as cb:
            yield Venue(
                cb.adapter(),
                cb.portfolio,
                cb.fake.match,
                SAMPLES[name],
                requests=lambda: len(cb.fake.requests),
            )
        return
    if name == "webull":
        async with running_webull(cash=cash) as wb:
            adapter = await wb.adapter()
            yield Venue(
                adapter,
                wb.account.account_id,
                wb.fake.match,
                cash_movements=False,
                requests=lambda: len(wb.fake.requests),
                # Webull has no chain endpoint: once it trades options, the options section
                # takes its contracts from the fake's option market, where it has one.
                option_market=getattr(wb.fake, "options", None),
            )
        return
    if name == "ibkr":
        async with running_ibkr(cash=cash) as ib:
            adapter = ib.adapter(ibkr_auto_confirm=["o163"])
            yield Venue(
                adapter,
                ib.account.account_id,
                ib.fake.match,
                cash_movements=False,
                requests=lambda: len(ib.fake.requests),
            )
        return
    if name == "robinhood":
        async with running_robinhood(cash=cash) as rh:
            yield Venue(
                rh.adapter(),
                rh.account.account_number,
                rh.fake.match,
                SAMPLES[name],
                cash_movements=False,
                requests=lambda: len(rh.fake.requests),
            )
        return
    if name == "snaptrade":
        async with running_snaptrade(cash=cash) as snap:
            yield Venue(
                snap.adapter(),
                snap.account.id,
                snap.fake.match,
                requests=lambda: len(snap.fake.requests),
                option_market=snap.fake.options,
            )
        return
    async with running_fake(cash=cash) as run:
        yield Venue(
            run.adapter(),
            run.account.id,
            run.fake.match,
            requests=lambda: len(run.fake.requests),
        )


def _spec_places_orders(name: str) -> bool:
    spec = _REGISTRY.get(name)
    assert spec is not None, f"no broker {name!r} in the registry"
    return spec.capabilities.place_orders


async def hold(v: Venue, quantity: str) -> None:
    """Get ``quantity`` of the venue's sample into the account: bought, or seeded at the
    broker (read-only venues)."""
    if v.seed is not None:
        await v.seed(v.sample.symbol, quantity)
        return
    placed = await v.adapter.place_order(v.account_ref, market(v.sample, qty=quantity))
    for _ in range(5):
        current = await v.adapter.get_order(v.account_ref, placed.broker_order_id)
        if current.status is OrderStatus.filled:
            return
        await v.settle()
    raise AssertionError(f"the market buy did not fill: {current.status}")


def order(
    sample: Sample,
    *,
    side: OrderSide = OrderSide.buy,
    qty: str | None = None,
    order_type: OrderType = OrderType.limit,
    limit: str | None = "1.00",
    tif: TimeInForce = TimeInForce.gtc,
) -> OrderRequest:
    return OrderRequest(
        client_order_id="bgc" + uuid.uuid4().hex[:20],
        symbol=sample.symbol,
        side=side,
        quantity=Decimal(qty or sample.qty),
        order_type=order_type,
        time_in_force=tif,
        limit_price=None if limit is None else Decimal(limit),
    )


def market(sample: Sample, *, qty: str | None = None) -> OrderRequest:
    return order(sample, qty=qty, order_type=OrderType.market, limit=None, tif=sample.market_tif)


VENUES = [
    "paper",
    "alpaca",
    "tradier",
    "tastytrade",
    "schwab",
    "coinbase",
    "robinhood",
    "webull",
    "ibkr",
    "plaid",
    "snaptrade",
]
_REGISTRY = default_registry()
# Venues whose path places orders (the write half of the contract); the rest are read-only.
WRITE_VENUES = [v for v in VENUES if _spec_places_orders(v)]
READ_ONLY_VENUES = [v for v in VENUES if v not in WRITE_VENUES]


@pytest.mark.parametrize("name", WRITE_VENUES)
async def test_a_resting_order_is_found_every_way(name: str, sqlite_engine: AsyncEngine) -> None:
    async with venue(name, sqlite_engine, "100000") as v:
        request = order(v.sample)
        submitted_at = datetime.now(UTC)
        placed = await v.adapter.place_order(v.account_ref, request)
        assert placed.status in (OrderStatus.submitted, OrderStatus.accepted)
        assert placed.filled_quantity == 0
        got = await v.adapter.get_order(v.account_ref, placed.broker_order_id)
        assert (got.broker_order_id, got.limit_price) == (placed.broker_order_id, Decimal(1))
        # Tradier: "pending" (submitted) until the market acknowledges it, as at its sandbox.
        assert got.status in (OrderStatus.submitted, OrderStatus.accepted)
        if v.adapter.capabilities.client_order_ids is Support.native:
            found = await v.adapter.find_order_by_client_id(
                v.account_ref, placed.client_order_id or ""
            )
            assert found is not None
            assert found.broker_order_id == placed.broker_order_id
            assert await v.adapter.find_order_by_client_id(v.account_ref, "bgc-none") is None
        else:
            assert isinstance(v.adapter, FingerprintLookup)
            fingerprint = OrderFingerprint.of(request, submitted_at)
            found = await v.adapter.find_order_by_fingerprint(
                v.account_ref, fingerprint, frozenset()
            )
            assert found is not None
            assert found.broker_order_id == placed.broker_order_id
            claimed = frozenset({placed.broker_order_id})
            assert (
                await v.adapter.find_order_by_fingerprint(v.account_ref, fingerprint, claimed)
                is None
            )
            with pytest.raises(errors.NotSupported):
                await v.adapter.find_order_by_client_id(v.account_ref, request.client_order_id)
        open_ids = [
            o.broker_order_id for o in await v.adapter.list_orders(v.account_ref, "open", 50)
        ]
        assert placed.broker_order_id in open_ids


@pytest.mark.parametrize("name", WRITE_VENUES)
async def test_cancel_then_cancel_again(name: str, sqlite_engine: AsyncEngine) -> None:
    async with venue(name, sqlite_engine, "100000") as v:
        placed = await v.adapter.place_order(v.account_ref, order(v.sample))
        canceled = await v.adapter.cancel_order(v.account_ref, placed.broker_order_id)
        assert canceled.status in (OrderStatus.canceled, OrderStatus.pending_cancel)
        with pytest.raises(errors.OrderNotModifiable):
            await v.adapter.cancel_order(v.account_ref, placed.broker_order_id)


@pytest.mark.parametrize("name", WRITE_VENUES)
async def test_modify_a_resting_limit(name: str, sqlite_engine: AsyncEngine) -> None:
    async with venue(name, sqlite_engine, "100000") as v:
        placed = await v.adapter.place_order(v.account_ref, order(v.sample))
        if v.adapter.capabilities.modify is Support.unsupported:  # Robinhood: no replace
            with pytest.raises(errors.NotSupported):
                await v.adapter.modify_order(
                    v.account_ref, placed.broker_order_id, OrderChanges(limit_price=Decimal("1.5"))
                )
            unchanged = await v.adapter.get_order(v.account_ref, placed.broker_order_id)
            assert (unchanged.limit_price, unchanged.status) == (Decimal(1), OrderStatus.accepted)
            return
        changed = await v.adapter.modify_order(
            v.account_ref, placed.broker_order_id, OrderChanges(limit_price=Decimal("1.50"))
        )
        assert changed.limit_price == Decimal("1.50")
        if changed.broker_order_id != placed.broker_order_id:  # replace-style brokers
            assert changed.replaces == placed.broker_order_id
            old = await v.adapter.get_order(v.account_ref, placed.broker_order_id)
            assert old.status is OrderStatus.replaced


@pytest.mark.parametrize("name", WRITE_VENUES)
async def test_a_market_buy_fills_into_a_position(name: str, sqlite_engine: AsyncEngine) -> None:
    async with venue(name, sqlite_engine, "100000") as v:
        placed = await v.adapter.place_order(v.account_ref, market(v.sample))
        for _ in range(5):
            current = await v.adapter.get_order(v.account_ref, placed.broker_order_id)
            if current.status is OrderStatus.filled:
                break
            await v.settle()
        assert current.status is OrderStatus.filled
        assert current.filled_quantity == Decimal(v.sample.qty)
        position = await v.adapter.get_position(v.account_ref, v.sample.symbol)
        assert position is not None
        assert position.quantity == Decimal(v.sample.qty)
        balances = await v.adapter.get_balances(v.account_ref)
        assert balances.cash < Decimal(100000)


@pytest.mark.parametrize("name", WRITE_VENUES)
async def test_refusals(name: str, sqlite_engine: AsyncEngine) -> None:
    async with venue(name, sqlite_engine, "100") as v:
        with pytest.raises(errors.InsufficientFunds):
            await v.adapter.place_order(v.account_ref, market(v.sample, qty="10"))
        with pytest.raises(errors.UnknownSymbol):
            await v.adapter.check_symbol("NOSUCHSYM")


# --- the read half: every venue -------------------------------------------------------


@pytest.mark.parametrize("name", VENUES)
async def test_an_unknown_order_is_not_found(name: str, sqlite_engine: AsyncEngine) -> None:
    async with venue(name, sqlite_engine, "100") as v:
        with pytest.raises(errors.OrderNotFound):
            await v.adapter.get_order(v.account_ref, "6f1b9c8e-0000-4000-8000-000000000000")
        if v.adapter.capabilities.client_order_ids is Support.unsupported:
            with pytest.raises(errors.NotSupported):  # Schwab: found by fingerprint instead
                await v.adapter.find_order_by_client_id(v.account_ref, "bgc-none")
        else:
            assert await v.adapter.find_order_by_client_id(v.account_ref, "bgc-none") is None


@pytest.mark.parametrize("name", VENUES)
async def test_a_holding_is_read_back_every_way(name: str, sqlite_engine: AsyncEngine) -> None:
    async with venue(name, sqlite_engine, "100000") as v:
        await hold(v, v.sample.qty)
        held = Decimal(v.sample.qty)
        positions = await v.adapter.get_positions(v.account_ref)
        assert [(p.symbol, p.quantity, p.asset_class) for p in positions] == [
            (v.sample.symbol, held, v.sample.asset_class)
        ]
        [position] = positions
        assert position.market_value == position.quantity * position.current_price
        assert position.as_of.tzinfo is not None
        one = await v.adapter.get_position(v.account_ref, v.sample.symbol)
        assert one is not None
        assert (one.symbol, one.quantity, one.avg_cost) == (
            v.sample.symbol,
            held,
            position.avg_cost,
        )
        assert await v.adapter.get_position(v.account_ref, v.sample.not_held) is None
        balances = await v.adapter.get_balances(v.account_ref)
        assert balances.equity >= balances.cash


@pytest.mark.parametrize("name", VENUES)
async def test_the_starting_cash_is_a_deposit(name: str, sqlite_engine: AsyncEngine) -> None:
    async with venue(name, sqlite_engine, "30000") as v:
        deposits = await v.adapter.get_transactions(v.account_ref, None, None, "deposit")
        if v.cash_movements:
            assert sum(t.amount for t in deposits) == Decimal(30000)
        else:  # the broker's API reports no cash movements at all
            assert deposits == []
        assert all(t.occurred_at.tzinfo is not None for t in deposits)
        assert await v.adapter.get_transactions(v.account_ref, None, None, "buy") == []


@pytest.mark.parametrize("name", READ_ONLY_VENUES)
async def test_a_read_only_venue_refuses_the_write_half_without_a_request(
    name: str, sqlite_engine: AsyncEngine
) -> None:
    async with venue(name, sqlite_engine, "100000") as v:
        assert v.adapter.capabilities.place_orders is False
        assert v.requests is not None
        before = v.requests()
        with pytest.raises(errors.NotSupported):
            await v.adapter.place_order(v.account_ref, order(v.sample))
        with pytest.raises(errors.NotSupported):
            await v.adapter.modify_order(v.account_ref, "x", OrderChanges(limit_price=Decimal(2)))
        with pytest.raises(errors.NotSupported):
            await v.adapter.cancel_order(v.account_ref, "x")
        with pytest.raises(errors.NotSupported):
            await v.adapter.check_symbol("AAPL")
        assert await v.adapter.list_orders(v.account_ref, "all", 10) == []
        assert v.requests() == before


@pytest.mark.parametrize("name", WRITE_VENUES)
async def test_quotes(name: str, sqlite_engine: AsyncEngine) -> None:
    async with venue(name, sqlite_engine, "100000") as v:
        quotes = await v.adapter.get_quotes([v.sample.symbol])
        quote = quotes[v.sample.symbol]
        assert isinstance(quote.bid, Decimal)
        assert quote.bid < quote.ask
        assert quote.as_of.tzinfo is not None


@pytest.mark.parametrize("name", VENUES)
async def test_the_account_and_its_starting_balances(name: str, sqlite_engine: AsyncEngine) -> None:
    async with venue(name, sqlite_engine, "25000") as v:
        accounts = await v.adapter.list_accounts()
        assert v.account_ref in [a.broker_account_id for a in accounts]
        balances = await v.adapter.get_balances(v.account_ref)
        assert (balances.cash, balances.buying_power) == (Decimal(25000), Decimal(25000))
        assert balances.currency == "USD"
        assert balances.as_of.tzinfo is not None
        assert await v.adapter.get_positions(v.account_ref) == []


@pytest.mark.parametrize("name", WRITE_VENUES)
async def test_open_and_closed_orders_are_told_apart(name: str, sqlite_engine: AsyncEngine) -> None:
    async with venue(name, sqlite_engine, "100000") as v:
        resting = await v.adapter.place_order(v.account_ref, order(v.sample))
        gone = await v.adapter.place_order(v.account_ref, order(v.sample))
        await v.adapter.cancel_order(v.account_ref, gone.broker_order_id)
        assert (await v.adapter.get_order(v.account_ref, gone.broker_order_id)).status is (
            OrderStatus.canceled
        )
        open_ids = {
            o.broker_order_id for o in await v.adapter.list_orders(v.account_ref, "open", 50)
        }
        closed_ids = {
            o.broker_order_id for o in await v.adapter.list_orders(v.account_ref, "closed", 50)
        }
        assert resting.broker_order_id in open_ids - closed_ids
        assert gone.broker_order_id in closed_ids - open_ids
        history = await v.adapter.order_history(v.account_ref, None, None, v.sample.symbol)
        assert {resting.broker_order_id, gone.broker_order_id} <= {
            o.broker_order_id for o in history
        }


@pytest.mark.parametrize("name", WRITE_VENUES)
async def test_a_fill_is_a_transaction(name: str, sqlite_engine: AsyncEngine) -> None:
    async with venue(name, sqlite_engine, "100000") as v:
        placed = await v.adapter.place_order(v.account_ref, market(v.sample))
        for _ in range(5):
            current = await v.adapter.get_order(v.account_ref, placed.broker_order_id)
            if current.status is OrderStatus.filled:
                break
            await v.settle()
        assert current.avg_fill_price is not None
        buys = await v.adapter.get_transactions(v.account_ref, None, None, "buy")
        assert [(t.symbol, t.quantity) for t in buys] == [(v.sample.symbol, Decimal(v.sample.qty))]
        assert buys[0].amount == -(Decimal(v.sample.qty) * current.avg_fill_price)
        deposits = await v.adapter.get_transactions(v.account_ref, None, None, "deposit")
        if v.cash_movements:
            assert sum(t.amount for t in deposits) == Decimal(100000)
        else:
            assert deposits == []


# --- options: every venue that declares them --------------------------------------------


def _declares_options(name: str) -> bool:
    spec = _REGISTRY.get(name)
    assert spec is not None
    caps = spec.capabilities
    return caps.asset_classes.get(AssetClass.option, Support.unsupported) is not Support.unsupported


OPTION_VENUES = [v for v in VENUES if _declares_options(v)]
NO_OPTION_VENUES = [v for v in VENUES if v not in OPTION_VENUES]
MULTI_LEG_VENUES = [
    v
    for v in OPTION_VENUES
    if (spec := _REGISTRY.get(v)) is not None and spec.capabilities.multi_leg is Support.native
]
CHAIN_VENUES = [
    v
    for v in OPTION_VENUES
    if (spec := _REGISTRY.get(v)) is not None and spec.capabilities.options.chain is Support.native
]
UNDERLYING = "AAPL"


async def _calls(v: Venue) -> list[OptionContract]:
    """Calls of one listed expiration a few weeks out, by strike: from the adapter's own
    chain where it has one, else from the fake's option market."""
    caps = v.adapter.capabilities.options
    if caps.chain is Support.native and isinstance(v.adapter, SupportsOptionChains):
        expirations = await v.adapter.list_option_expirations(UNDERLYING)
        assert expirations, "no listed expirations"
        expiration = expirations[min(2, len(expirations) - 1)].expiration
        chain = await v.adapter.get_option_chain(
            OptionChainQuery(UNDERLYING, expiration=expiration, right=OptionRight.call)
        )
        calls = [q.contract for q in chain if q.contract.expiration == expiration]
        calls = [c for c in calls if c.right is OptionRight.call]
    else:
        assert v.option_market is not None, "an option venue without a chain needs its market"
        listed = v.option_market.expirations(UNDERLYING, datetime.now(UTC).date())
        expiration = listed[min(2, len(listed) - 1)].expiration
        calls = [
            OptionContract(UNDERLYING, UNDERLYING, expiration, OptionRight.call, strike)
            for strike in v.option_market.strikes(UNDERLYING)
        ]
    calls.sort(key=lambda c: c.strike)
    assert len(calls) >= 5, calls
    return calls


def _pick_tif(allowed: frozenset[TimeInForce] | None) -> TimeInForce:
    for tif in (TimeInForce.day, TimeInForce.gtc):
        if allowed is None or tif in allowed:
            return tif
    raise AssertionError(f"no day or gtc among {allowed}")


def _option_order(
    contract: OptionContract, v: Venue, *, order_type: OrderType, limit: str | None
) -> OrderRequest:
    return OrderRequest(
        client_order_id="bgo" + uuid.uuid4().hex[:20],
        symbol=contract.symbol,
        side=OrderSide.buy,
        quantity=Decimal(1),
        order_type=order_type,
        time_in_force=_pick_tif(v.adapter.capabilities.options.single_time_in_force),
        limit_price=None if limit is None else Decimal(limit),
        position_effect=PositionEffect.open,
    )


@pytest.mark.parametrize("name", OPTION_VENUES)
async def test_a_single_leg_option_order_is_placed_read_and_canceled(
    name: str, sqlite_engine: AsyncEngine
) -> None:
    async with venue(name, sqlite_engine, "100000") as v:
        calls = await _calls(v)
        atm = calls[len(calls) // 2]
        request = _option_order(atm, v, order_type=OrderType.limit, limit="0.05")
        placed = await v.adapter.place_order(v.account_ref, request)
        assert placed.symbol == atm.symbol
        got = await v.adapter.get_order(v.account_ref, placed.broker_order_id)
        assert (got.symbol, got.side, got.quantity) == (atm.symbol, OrderSide.buy, Decimal(1))
        assert got.status in (OrderStatus.accepted, OrderStatus.submitted)
        assert got.position_effect in (PositionEffect.open, None)
        canceled = await v.adapter.cancel_order(v.account_ref, placed.broker_order_id)
        assert canceled.status in (OrderStatus.canceled, OrderStatus.pending_cancel)


@pytest.mark.parametrize("name", MULTI_LEG_VENUES)
async def test_a_vertical_is_one_order_with_two_legs(name: str, sqlite_engine: AsyncEngine) -> None:
    async with venue(name, sqlite_engine, "100000") as v:
        calls = await _calls(v)
        low, high = calls[len(calls) // 2], calls[len(calls) // 2 + 2]
        caps = v.adapter.capabilities.options
        legs = (
            OrderLeg(low.symbol, OrderSide.buy, 1, PositionEffect.open),
            OrderLeg(high.symbol, OrderSide.sell, 1, PositionEffect.open),
        )
        request = OrderRequest(
            client_order_id="bgv" + uuid.uuid4().hex[:20],
            symbol=UNDERLYING,
            side=OrderSide.buy,
            quantity=Decimal(1),
            order_type=OrderType.limit,
            time_in_force=_pick_tif(caps.combo_time_in_force),
            limit_price=Decimal("0.05"),  # a debit far below the spread's worth: it rests
            legs=legs,
            price_effect=PriceEffect.debit,
        )
        placed = await v.adapter.place_order(v.account_ref, request)
        got = await v.adapter.get_order(v.account_ref, placed.broker_order_id)
        assert sorted((leg.symbol, leg.side) for leg in got.legs) == sorted(
            [(low.symbol, OrderSide.buy), (high.symbol, OrderSide.sell)]
        )
        assert got.status in (OrderStatus.accepted, OrderStatus.submitted)
        canceled = await v.adapter.cancel_order(v.account_ref, placed.broker_order_id)
        assert canceled.status in (OrderStatus.canceled, OrderStatus.pending_cancel)


@pytest.mark.parametrize("name", OPTION_VENUES)
async def test_a_bought_contract_is_a_position_with_its_contract(
    name: str, sqlite_engine: AsyncEngine
) -> None:
    async with venue(name, sqlite_engine, "100000") as v:
        calls = await _calls(v)
        atm = calls[len(calls) // 2]
        caps = v.adapter.capabilities.options
        marketable = caps.single_order_types is None or OrderType.market in caps.single_order_types
        request = _option_order(
            atm,
            v,
            order_type=OrderType.market if marketable else OrderType.limit,
            limit=None if marketable else "500",
        )
        placed = await v.adapter.place_order(v.account_ref, request)
        for _ in range(5):
            current = await v.adapter.get_order(v.account_ref, placed.broker_order_id)
            if current.status is OrderStatus.filled:
                break
            await v.settle()
        assert current.status is OrderStatus.filled
        positions = [p for p in await v.adapter.get_positions(v.account_ref) if p.contract]
        assert [(p.symbol, p.quantity, p.asset_class) for p in positions] == [
            (atm.symbol, Decimal(1), AssetClass.option)
        ]
        assert positions[0].contract == atm


@pytest.mark.parametrize("name", CHAIN_VENUES)
async def test_the_chain_lists_the_underlyings_contracts(
    name: str, sqlite_engine: AsyncEngine
) -> None:
    async with venue(name, sqlite_engine, "100000") as v:
        assert isinstance(v.adapter, SupportsOptionChains)
        expirations = await v.adapter.list_option_expirations(UNDERLYING)
        days = [e.expiration for e in expirations]
        assert days == sorted(days)
        assert len(set(days)) == len(days)
        chain = await v.adapter.get_option_chain(
            OptionChainQuery(UNDERLYING, expiration=days[min(2, len(days) - 1)])
        )
        assert chain
        assert {q.contract.underlying for q in chain} == {UNDERLYING}
        assert {q.contract.right for q in chain} == {OptionRight.call, OptionRight.put}


@pytest.mark.parametrize("name", NO_OPTION_VENUES)
async def test_a_venue_without_options_refuses_them_before_any_request(
    name: str, sqlite_engine: AsyncEngine
) -> None:
    async with venue(name, sqlite_engine, "100000") as v:
        assert v.requests is not None
        before = v.requests()
        contract = OptionContract.parse("AAPL261218C00150000")
        single = OrderRequest(
            client_order_id="bgn" + uuid.uuid4().hex[:20],
            symbol=contract.symbol,
            side=OrderSide.buy,
            quantity=Decimal(1),
            order_type=OrderType.limit,
            time_in_force=TimeInForce.day,
            limit_price=Decimal("1.00"),
            position_effect=PositionEffect.open,
        )
        with pytest.raises((errors.UnsupportedOrder, errors.NotSupported)):
            await v.adapter.place_order(v.account_ref, single)
        assert v.requests() == before
