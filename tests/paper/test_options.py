"""The paper broker's options against a real database (Postgres and SQLite), on a manual clock.

Prices come from the seeded option model (``SeededOptionMarket``); the tests read the same
model to know what a fill must cost, so every expected figure is computed, never guessed.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from app.brokers import errors as broker_errors
from app.brokers.base import (
    AssetClass,
    OptionChainQuery,
    OptionContract,
    OptionRight,
    OrderChanges,
    OrderLeg,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    OrderUpdate,
    PositionEffect,
    PriceEffect,
    SupportsOptionChains,
    SupportsOrderPreview,
    TimeInForce,
)
from app.db.session import SessionMaker
from app.paper.adapter import PaperAdapter
from app.paper.clock import ManualClock
from app.paper.engine import PaperEngine
from app.paper.options_market import EXPIRY_TIME_UTC, SeededOptionMarket
from app.paper.quotes import SeededQuoteSource
from tests.conftest import new_user

START = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)  # a Monday
FRIDAY = date(2026, 11, 27)  # that week's weekly expiration
EXPIRY = datetime.combine(FRIDAY, EXPIRY_TIME_UTC)
SEED = 7
HUNDRED = Decimal(100)
MARKET = SeededOptionMarket(SeededQuoteSource(SEED))


class Recorder:
    def __init__(self) -> None:
        self.updates: list[OrderUpdate] = []

    async def __call__(self, update: OrderUpdate) -> None:
        self.updates.append(update)

    def of(self, account: str) -> list[OrderUpdate]:
        """What was heard about ``account`` (the ticker serves every account in the database)."""
        return [u for u in self.updates if u.account_ref == account]


def make_engine(sessionmaker: SessionMaker) -> tuple[PaperEngine, ManualClock, Recorder]:
    clock = ManualClock(START)
    sink = Recorder()
    return PaperEngine(sessionmaker, SeededQuoteSource(SEED), clock, sink), clock, sink


async def funded(engine: PaperEngine, cash: str = "100000") -> tuple[str, str]:
    owner = new_user("opt")
    account = await engine.create_account(owner, Decimal(cash))
    return owner, account.broker_account_id


def occ(right: OptionRight, strike: str, expiration: date = FRIDAY, root: str = "AAPL") -> str:
    return OptionContract(
        underlying=root, root=root, expiration=expiration, right=right, strike=Decimal(strike)
    ).symbol


def call(strike: str) -> str:
    return occ(OptionRight.call, strike)


def put(strike: str) -> str:
    return occ(OptionRight.put, strike)


def model(symbol: str, at: datetime = START) -> tuple[Decimal, Decimal]:
    quote = MARKET.quote(OptionContract.parse(symbol), at)
    return quote.bid, quote.ask


def single(
    symbol: str,
    side: OrderSide,
    effect: PositionEffect,
    quantity: str = "1",
    order_type: OrderType = OrderType.market,
    limit: Decimal | None = None,
) -> OrderRequest:
    return OrderRequest(
        client_order_id="c" + uuid.uuid4().hex,
        symbol=symbol,
        side=side,
        quantity=Decimal(quantity),
        order_type=order_type,
        time_in_force=TimeInForce.day,
        limit_price=limit,
        position_effect=effect,
    )


def combo(
    legs: list[tuple[str, OrderSide]],
    quantity: int = 1,
    order_type: OrderType = OrderType.market,
    limit: Decimal | None = None,
    effect: PriceEffect | None = None,
    tif: TimeInForce = TimeInForce.day,
) -> OrderRequest:
    return OrderRequest(
        client_order_id="c" + uuid.uuid4().hex,
        symbol="AAPL",
        side=OrderSide.sell if effect is PriceEffect.credit else OrderSide.buy,
        quantity=Decimal(quantity),
        order_type=order_type,
        time_in_force=tif,
        limit_price=limit,
        legs=tuple(OrderLeg(s, side, 1, PositionEffect.open) for s, side in legs),
        price_effect=effect,
    )


def net_credit(legs: list[tuple[str, OrderSide]], at: datetime = START) -> Decimal:
    total = Decimal(0)
    for symbol, side in legs:
        bid, ask = model(symbol, at)
        total += bid if side is OrderSide.sell else -ask
    return total


def spot(at: datetime) -> Decimal:
    return SeededQuoteSource(SEED).quote("AAPL", at).mid


def strike_near(target: Decimal, *, above: bool) -> str:
    strikes = MARKET.strikes("AAPL")
    found = (
        min(s for s in strikes if s >= target) if above else max(s for s in strikes if s <= target)
    )
    return str(found)


# AAPL trades near 187 at START in this seed.
BEAR_CALL = [(call("190"), OrderSide.sell), (call("195"), OrderSide.buy)]
IRON_CONDOR = [
    (put("180"), OrderSide.buy),
    (put("185"), OrderSide.sell),
    (call("190"), OrderSide.sell),
    (call("195"), OrderSide.buy),
]


# --- discovery and quotes ------------------------------------------------------------------


async def test_the_adapter_declares_and_serves_option_discovery_and_preview(
    sessionmaker: SessionMaker,
) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, _account = await funded(engine)
    adapter = PaperAdapter(engine, owner=owner)
    assert isinstance(adapter, SupportsOptionChains)
    assert isinstance(adapter, SupportsOrderPreview)
    caps = adapter.capabilities
    assert caps.supports_asset(AssetClass.option)
    assert caps.options.max_legs == 4
    assert caps.options.combo_order_types == {OrderType.market, OrderType.limit}
    assert caps.options.combo_time_in_force == {TimeInForce.day, TimeInForce.gtc}

    expirations = await adapter.list_option_expirations("AAPL")
    assert expirations[0].expiration == FRIDAY
    assert [e.expiration for e in expirations] == sorted(e.expiration for e in expirations)

    chain = await adapter.get_option_chain(
        OptionChainQuery(
            "AAPL",
            expiration=FRIDAY,
            right=OptionRight.put,
            strike_gte=Decimal(180),
            strike_lte=Decimal(190),
        )
    )
    assert [q.contract.strike for q in chain] == [180, Decimal("182.5"), 185, Decimal("187.5"), 190]
    for q in chain:
        assert q.contract.right is OptionRight.put
        assert q.contract.expiration == FRIDAY
        assert q.source == "model"
        assert q.bid is not None
        assert q.ask is not None
        assert q.bid < q.ask
        assert q.greeks is not None
        assert q.greeks.delta is not None
        assert q.greeks.delta < 0
        assert (q.bid, q.ask) == model(q.contract.symbol)
    with pytest.raises(broker_errors.UnknownSymbol):
        await adapter.list_option_expirations("BTC-USD")


async def test_quotes_and_symbol_checks_answer_listed_unexpired_contracts_only(
    sessionmaker: SessionMaker,
) -> None:
    engine, clock, _sink = make_engine(sessionmaker)
    owner, _account = await funded(engine)
    adapter = PaperAdapter(engine, owner=owner)
    symbol = call("190")
    padded = OptionContract.parse(symbol).occ_padded

    quotes = await adapter.get_quotes([symbol, "AAPL"])
    assert (quotes[symbol].bid, quotes[symbol].ask) == model(symbol)
    assert quotes[symbol].symbol == symbol
    await adapter.check_symbol(symbol)
    await adapter.check_symbol(padded)
    for unlisted in (call("191"), occ(OptionRight.call, "190", date(2026, 11, 26)), "AAPL261127C"):
        with pytest.raises(broker_errors.UnknownSymbol):
            await adapter.check_symbol(unlisted)
    clock.set(EXPIRY)
    with pytest.raises(broker_errors.UnknownSymbol, match="expired"):
        await adapter.check_symbol(symbol)


# --- single-leg ------------------------------------------------------------------------------


async def test_a_long_call_round_trip_moves_premium_times_100_and_counts_for_paper_first(
    sessionmaker: SessionMaker,
) -> None:
    engine, clock, _sink = make_engine(sessionmaker)
    owner, account = await funded(engine)
    symbol = call("190")
    _bid, ask = model(symbol)

    bought = await engine.place(
        owner, account, single(symbol, OrderSide.buy, PositionEffect.open, "2")
    )

    assert (bought.status, bought.avg_fill_price) == (OrderStatus.filled, ask)
    assert bought.position_effect is PositionEffect.open
    balances = await engine.balances(owner, account)
    assert balances.cash == Decimal(100000) - 2 * ask * HUNDRED
    [position] = await engine.positions(owner, account)
    assert position.contract == OptionContract.parse(symbol)
    assert position.asset_class is AssetClass.option
    assert position.quantity == 2
    assert position.market_value == position.current_price * 2 * HUNDRED
    assert await engine.cycles_completed(owner) == 0

    clock.advance(timedelta(minutes=5))
    later_bid, _ = model(symbol, clock.now())
    sold = await engine.place(
        owner, account, single(symbol, OrderSide.sell, PositionEffect.close, "2")
    )

    assert (sold.status, sold.avg_fill_price) == (OrderStatus.filled, later_bid)
    assert await engine.positions(owner, account) == []
    assert (await engine.balances(owner, account)).cash == Decimal(100000) + 2 * (
        later_bid - ask
    ) * HUNDRED
    assert await engine.cycles_completed(owner) == 1
    kinds = [t.type for t in await engine.transactions(owner, account, None, None, None)]
    assert kinds == ["deposit", "buy", "sell"]


async def test_closing_more_than_is_held_is_refused_with_a_clear_reason(
    sessionmaker: SessionMaker,
) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await funded(engine)
    symbol = call("190")
    await engine.place(owner, account, single(symbol, OrderSide.buy, PositionEffect.open, "1"))

    with pytest.raises(broker_errors.InsufficientFunds, match=r"cannot close 2 .*1 held long"):
        await engine.place(
            owner, account, single(symbol, OrderSide.sell, PositionEffect.close, "2")
        )
    with pytest.raises(broker_errors.InsufficientFunds, match="0 held short"):
        await engine.place(owner, account, single(symbol, OrderSide.buy, PositionEffect.close, "1"))
    with pytest.raises(broker_errors.UnsupportedOrder, match="whole contracts"):
        await engine.place(
            owner, account, single(symbol, OrderSide.buy, PositionEffect.open, "0.5")
        )
    [position] = await engine.positions(owner, account)
    assert position.quantity == 1


async def test_a_resting_option_limit_fills_when_crossed_and_a_close_holds_its_contracts(
    sessionmaker: SessionMaker,
) -> None:
    engine, clock, sink = make_engine(sessionmaker)
    owner, account = await funded(engine)
    symbol = call("190")
    await engine.place(owner, account, single(symbol, OrderSide.buy, PositionEffect.open, "1"))
    bid, _ask = model(symbol)
    far = bid + Decimal(50)

    resting = await engine.place(
        owner,
        account,
        single(symbol, OrderSide.sell, PositionEffect.close, "1", OrderType.limit, far),
    )
    assert resting.status is OrderStatus.accepted
    with pytest.raises(broker_errors.InsufficientFunds, match="not already being closed"):
        await engine.place(
            owner, account, single(symbol, OrderSide.sell, PositionEffect.close, "1")
        )

    modified = await engine.modify(
        owner, account, resting.broker_order_id, OrderChanges(limit_price=bid)
    )
    assert (modified.status, modified.avg_fill_price) == (OrderStatus.filled, bid)
    assert await engine.positions(owner, account) == []
    clock.advance(timedelta(seconds=1))
    await engine.tick()
    assert sink.of(account) == []


# --- cover ------------------------------------------------------------------------------


async def test_a_naked_short_call_is_refused_as_uncovered_and_nothing_is_written(
    sessionmaker: SessionMaker,
) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await funded(engine, "1000000")

    with pytest.raises(broker_errors.UncoveredOption, match="uncovered short call on AAPL"):
        await engine.place(owner, account, single(call("200"), OrderSide.sell, PositionEffect.open))
    # Opening the wrong way on a held contract is refused too (legs are never netted).
    await engine.place(owner, account, single(call("200"), OrderSide.buy, PositionEffect.open))
    with pytest.raises(broker_errors.Rejected, match="held long"):
        await engine.place(owner, account, single(call("200"), OrderSide.sell, PositionEffect.open))
    assert [o.symbol for o in await engine.list_orders(owner, account, "all", 10)] == [call("200")]


async def test_a_covered_call_pledges_100_shares_which_can_then_not_be_sold(
    sessionmaker: SessionMaker,
) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await funded(engine)
    await engine.place(
        owner,
        account,
        OrderRequest(
            client_order_id="shares",
            symbol="AAPL",
            side=OrderSide.buy,
            quantity=Decimal(150),
            order_type=OrderType.market,
            time_in_force=TimeInForce.day,
        ),
    )
    [shares] = await engine.positions(owner, account)
    assert shares.quantity == 150  # displayed size at START covers it in one fill
    with pytest.raises(broker_errors.UncoveredOption, match="200 shares"):
        await engine.place(
            owner, account, single(call("200"), OrderSide.sell, PositionEffect.open, "2")
        )

    sold = await engine.place(
        owner, account, single(call("200"), OrderSide.sell, PositionEffect.open)
    )
    assert sold.status is OrderStatus.filled
    sell_shares = OrderRequest(
        client_order_id="sell-shares",
        symbol="AAPL",
        side=OrderSide.sell,
        quantity=Decimal(51),
        order_type=OrderType.market,
        time_in_force=TimeInForce.day,
    )
    with pytest.raises(broker_errors.InsufficientFunds, match="50 available"):
        await engine.place(owner, account, sell_shares)
    balances = await engine.balances(owner, account)
    assert balances.buying_power == balances.cash  # shares cover it: no cash held


async def test_a_cash_secured_put_holds_strike_times_100_and_is_refused_without_the_cash(
    sessionmaker: SessionMaker,
) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await funded(engine, "20000")
    symbol = put("180")
    bid, _ask = model(symbol)

    with pytest.raises(broker_errors.InsufficientFunds, match="36000"):
        await engine.place(owner, account, single(symbol, OrderSide.sell, PositionEffect.open, "2"))
    order = await engine.place(owner, account, single(symbol, OrderSide.sell, PositionEffect.open))

    assert (order.status, order.avg_fill_price) == (OrderStatus.filled, bid)
    balances = await engine.balances(owner, account)
    assert balances.cash == Decimal(20000) + bid * HUNDRED
    assert balances.buying_power == balances.cash - Decimal(18000)
    [position] = await engine.positions(owner, account)
    assert position.quantity == -1
    assert position.market_value == -position.current_price * HUNDRED


async def test_a_credit_spread_is_covered_by_its_own_long_leg_and_holds_its_maximum_loss(
    sessionmaker: SessionMaker,
) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await funded(engine, "10000")
    credit = net_credit(BEAR_CALL)
    assert credit > 0

    order = await engine.place(owner, account, combo(BEAR_CALL, 2))

    assert order.status is OrderStatus.filled
    assert (order.avg_fill_price, order.price_effect) == (credit, PriceEffect.credit)
    balances = await engine.balances(owner, account)
    assert balances.cash == Decimal(10000) + 2 * credit * HUNDRED
    width_hold = 2 * Decimal(5) * HUNDRED
    assert balances.buying_power == balances.cash - width_hold
    assert Decimal(10000) - balances.buying_power == width_hold - 2 * credit * HUNDRED  # max loss
    positions = {p.symbol: p.quantity for p in await engine.positions(owner, account)}
    assert positions == {call("190"): -2, call("195"): 2}
    # Closing the long leg alone would leave the short call naked.
    with pytest.raises(broker_errors.UncoveredOption):
        await engine.place(
            owner, account, single(call("195"), OrderSide.sell, PositionEffect.close, "2")
        )


async def test_preview_reports_cash_buying_power_and_rejections_and_places_nothing(
    sessionmaker: SessionMaker,
) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await funded(engine, "10000")
    adapter = PaperAdapter(engine, owner=owner)
    credit = net_credit(BEAR_CALL)

    preview = await adapter.preview_order(account, combo(BEAR_CALL, 2))
    assert preview.direction is PriceEffect.credit
    assert preview.estimated_cash_change == 2 * credit * HUNDRED
    assert preview.buying_power_change == 2 * credit * HUNDRED - 1000
    assert (preview.fees, preview.rejections, preview.source.value) == (0, (), "broker")

    naked = await adapter.preview_order(
        account, single(call("200"), OrderSide.sell, PositionEffect.open)
    )
    assert naked.rejections
    assert "uncovered short call" in naked.rejections[0]
    too_big = await adapter.preview_order(
        account, single(put("180"), OrderSide.sell, PositionEffect.open)
    )
    assert too_big.rejections
    assert "insufficient buying power" in too_big.rejections[0]
    equity = await adapter.preview_order(
        account,
        OrderRequest(
            "p", "AAPL", OrderSide.buy, Decimal(10), OrderType.limit, TimeInForce.day, Decimal(150)
        ),
    )
    assert (equity.estimated_cash_change, equity.direction) == (Decimal(-1500), PriceEffect.debit)
    assert await engine.list_orders(owner, account, "all", 10) == []


# --- multi-leg ----------------------------------------------------------------------------


async def test_an_iron_condor_fills_with_four_legs_into_four_positions(
    sessionmaker: SessionMaker,
) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await funded(engine)
    adapter = PaperAdapter(engine, owner=owner)
    credit = net_credit(IRON_CONDOR)
    assert credit > 0

    order = await adapter.place_order(
        account, combo(IRON_CONDOR, 3, OrderType.limit, credit, PriceEffect.credit)
    )

    assert order.status is OrderStatus.filled
    assert order.symbol == "AAPL"
    assert len(order.legs) == 4
    for leg, (symbol, side) in zip(order.legs, IRON_CONDOR, strict=True):
        bid, ask = model(symbol)
        assert (leg.symbol, leg.side, leg.filled_quantity) == (symbol, side, 3)
        assert leg.avg_fill_price == (bid if side is OrderSide.sell else ask)
    assert (await adapter.get_order(account, order.broker_order_id)).legs == order.legs
    fills = await engine.fills(owner, account)
    assert sorted(f.symbol for f in fills) == sorted(s for s, _ in IRON_CONDOR)
    positions = {p.symbol: p.quantity for p in await adapter.get_positions(account)}
    assert positions == {
        put("180"): 3,
        put("185"): -3,
        call("190"): -3,
        call("195"): 3,
    }
    balances = await adapter.get_balances(account)
    assert balances.cash == Decimal(100000) + 3 * credit * HUNDRED
    assert balances.buying_power == balances.cash - 3 * 5 * HUNDRED  # one side's width


async def test_a_resting_combo_is_modified_then_canceled_as_one_order(
    sessionmaker: SessionMaker,
) -> None:
    engine, clock, _sink = make_engine(sessionmaker)
    owner, account = await funded(engine, "10000")
    credit = net_credit(BEAR_CALL)
    hopeful = credit + Decimal(3)

    order = await engine.place(
        owner,
        account,
        combo(BEAR_CALL, 1, OrderType.limit, hopeful, PriceEffect.credit, TimeInForce.gtc),
    )
    assert order.status is OrderStatus.accepted
    assert order.legs[0].filled_quantity == 0
    held = await engine.balances(owner, account)
    assert held.buying_power == Decimal(10000) - (Decimal(500) - hopeful * HUNDRED)

    bigger = await engine.modify(
        owner,
        account,
        order.broker_order_id,
        OrderChanges(quantity=Decimal(2), limit_price=hopeful + 1),
    )
    assert (bigger.status, bigger.quantity, bigger.limit_price) == (
        OrderStatus.accepted,
        2,
        hopeful + 1,
    )
    clock.advance(timedelta(seconds=1))
    await engine.tick()
    canceled = await engine.cancel(owner, account, order.broker_order_id)
    assert canceled.status is OrderStatus.canceled
    after = await engine.balances(owner, account)
    assert (after.cash, after.buying_power) == (Decimal(10000), Decimal(10000))
    assert await engine.fills(owner, account) == []


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    strikes=st.lists(
        st.sampled_from([Decimal(s) for s in range(170, 215, 5)]),
        min_size=2,
        max_size=4,
        unique=True,
    ),
    rights=st.lists(st.sampled_from(list(OptionRight)), min_size=4, max_size=4),
    sides=st.lists(st.sampled_from(list(OrderSide)), min_size=4, max_size=4),
    quantity=st.integers(min_value=1, max_value=5),
    limit_offset=st.none() | st.decimals(min_value=-2, max_value=2, places=2),
    seconds=st.integers(min_value=0, max_value=3600),
)
async def test_a_multi_leg_fill_is_all_or_nothing_and_moves_cash_by_net_times_quantity_times_100(
    sessionmaker: SessionMaker,
    strikes: list[Decimal],
    rights: list[OptionRight],
    sides: list[OrderSide],
    quantity: int,
    limit_offset: Decimal | None,
    seconds: int,
) -> None:
    engine, clock, _sink = make_engine(sessionmaker)
    clock.set(START + timedelta(seconds=seconds))
    owner, account = await funded(engine, "1000000")
    legs = [
        (occ(right, str(strike)), side)
        for strike, right, side in zip(strikes, rights, sides, strict=False)
    ]
    market = net_credit(legs, clock.now())
    if limit_offset is None:
        request = combo(legs, quantity)
    else:
        wanted = market + limit_offset
        effect = (
            PriceEffect.credit
            if wanted > 0
            else PriceEffect.debit
            if wanted < 0
            else PriceEffect.even
        )
        request = combo(legs, quantity, OrderType.limit, abs(wanted), effect)

    try:
        order = await engine.place(owner, account, request)
    except broker_errors.UncoveredOption:
        event("uncovered")
        assert await engine.list_orders(owner, account, "all", 10) == []
        assert await engine.positions(owner, account) == []
        return
    event(f"{order.status.value}, {'market' if limit_offset is None else 'limit'}")
    cash = (await engine.balances(owner, account)).cash
    fills = await engine.fills(owner, account)
    positions = {p.symbol: p.quantity for p in await engine.positions(owner, account)}
    if order.status is OrderStatus.filled:
        assert limit_offset is None or limit_offset <= 0
        assert sorted(f.symbol for f in fills) == sorted(s for s, _ in legs)
        assert all(f.quantity == quantity for f in fills)
        assert cash - Decimal(1000000) == market * quantity * HUNDRED
        assert positions == {
            s: quantity if side is OrderSide.buy else -quantity for s, side in legs
        }
        for leg in order.legs:
            assert leg.filled_quantity == quantity
    else:
        assert order.status is OrderStatus.accepted
        assert limit_offset is not None
        assert limit_offset > 0
        assert (fills, positions, cash) == ([], {}, Decimal(1000000))
        assert all(leg.filled_quantity == 0 for leg in order.legs)


async def test_combo_shapes_the_paper_broker_cannot_take_are_refused(
    sessionmaker: SessionMaker,
) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await funded(engine)
    five = [*IRON_CONDOR, (call("215"), OrderSide.buy)]
    with pytest.raises(broker_errors.UnsupportedOrder, match="2 to 4 legs"):
        await engine.place(owner, account, combo(five))
    msft = [
        (call("200"), OrderSide.buy),
        (occ(OptionRight.call, "420", root="MSFT"), OrderSide.sell),
    ]
    with pytest.raises(broker_errors.UnsupportedOrder, match="every leg must be on AAPL"):
        await engine.place(owner, account, combo(msft))
    with pytest.raises(broker_errors.UnsupportedOrder, match="day or gtc"):
        await engine.place(owner, account, combo(BEAR_CALL, tif=TimeInForce.ioc))
    with pytest.raises(broker_errors.UnsupportedOrder, match="price_effect"):
        await engine.place(
            owner, account, combo(BEAR_CALL, order_type=OrderType.limit, limit=Decimal(1))
        )


# --- expiration -------------------------------------------------------------------------


async def test_at_expiry_otm_expires_worthless_itm_call_is_exercised_and_short_put_assigned(
    sessionmaker: SessionMaker,
) -> None:
    engine, clock, sink = make_engine(sessionmaker)
    owner, account = await funded(engine, "200000")
    settle_price = spot(EXPIRY)
    itm_call = call(strike_near(settle_price - 5, above=False))
    otm_call = call(strike_near(settle_price + 5, above=True))
    itm_put = put(strike_near(settle_price + 5, above=True))
    for symbol, side, quantity in (
        (itm_call, OrderSide.buy, "2"),
        (otm_call, OrderSide.buy, "1"),
        (itm_put, OrderSide.sell, "1"),
    ):
        await engine.place(owner, account, single(symbol, side, PositionEffect.open, quantity))
    before = await engine.balances(owner, account)
    assert before.buying_power < before.cash  # the put's cash is held
    cycles = await engine.cycles_completed(owner)

    clock.set(EXPIRY - timedelta(seconds=1))
    await engine.tick()
    assert sink.of(account) == []
    clock.set(EXPIRY + timedelta(minutes=3))
    await engine.tick()

    call_strike = OptionContract.parse(itm_call).strike
    put_strike = OptionContract.parse(itm_put).strike
    positions = {p.symbol: p for p in await engine.positions(owner, account)}
    assert list(positions) == ["AAPL"]
    assert positions["AAPL"].quantity == 300  # 2 calls exercised + 1 put assigned
    after = await engine.balances(owner, account)
    assert after.cash == before.cash - 200 * call_strike - 100 * put_strike
    assert after.buying_power == after.cash
    kinds = {
        (t.type, t.symbol, t.amount)
        for t in await engine.transactions(owner, account, None, None, None)
        if t.type.startswith("option_")
    }
    assert kinds == {
        ("option_exercise", itm_call, Decimal(0)),
        ("option_exercise", "AAPL", -200 * call_strike),
        ("option_expiration", otm_call, Decimal(0)),
        ("option_assignment", itm_put, Decimal(0)),
        ("option_assignment", "AAPL", -100 * put_strike),
    }
    heard = {u.order.symbol: u for u in sink.of(account)}
    assert set(heard) == {itm_call, otm_call, itm_put}
    assert heard[itm_call].order.status is OrderStatus.filled
    assert {(f.leg_symbol, f.quantity, f.price) for f in heard[itm_call].fills} == {
        (itm_call, 2, 0),
        ("AAPL", 200, call_strike),
    }
    assert await engine.cycles_completed(owner) == cycles + 3
    # Settling is done once: the next tick finds nothing.
    clock.advance(timedelta(seconds=1))
    await engine.tick()
    assert len(sink.of(account)) == 3


async def test_a_covered_call_in_the_money_at_expiry_is_assigned_against_its_shares(
    sessionmaker: SessionMaker,
) -> None:
    engine, clock, sink = make_engine(sessionmaker)
    owner, account = await funded(engine)
    await engine.place(
        owner,
        account,
        OrderRequest(
            "shares", "AAPL", OrderSide.buy, Decimal(100), OrderType.market, TimeInForce.day
        ),
    )
    strike = strike_near(spot(EXPIRY) - 5, above=False)
    await engine.place(owner, account, single(call(strike), OrderSide.sell, PositionEffect.open))
    cash = (await engine.balances(owner, account)).cash

    clock.set(EXPIRY)
    await engine.tick()

    assert await engine.positions(owner, account) == []
    assert (await engine.balances(owner, account)).cash == cash + 100 * Decimal(strike)
    [update] = sink.of(account)
    assert update.order.side is OrderSide.buy
    assert {f.leg_symbol for f in update.fills} == {call(strike), "AAPL"}


async def test_an_exercise_the_account_cannot_pay_for_settles_in_cash_at_intrinsic_value(
    sessionmaker: SessionMaker,
) -> None:
    engine, clock, sink = make_engine(sessionmaker)
    owner, account = await funded(engine, "2000")
    settle_price = spot(EXPIRY)
    symbol = call(strike_near(settle_price - 5, above=False))
    strike = OptionContract.parse(symbol).strike
    bought = await engine.place(owner, account, single(symbol, OrderSide.buy, PositionEffect.open))
    assert bought.status is OrderStatus.filled
    cash = (await engine.balances(owner, account)).cash
    assert cash < strike * HUNDRED  # exercising would overdraw the account

    clock.set(EXPIRY)
    await engine.tick()

    assert await engine.positions(owner, account) == []
    value = (settle_price - strike) * HUNDRED
    assert (await engine.balances(owner, account)).cash == cash + value
    kind = "option_cash_settlement"
    [settlement] = await engine.transactions(owner, account, None, None, kind)
    assert (settlement.symbol, settlement.amount) == (symbol, value)
    [update] = sink.of(account)
    assert update.order.avg_fill_price == settle_price - strike


async def test_a_working_order_on_an_expiring_contract_expires_with_it(
    sessionmaker: SessionMaker,
) -> None:
    engine, clock, sink = make_engine(sessionmaker)
    owner, account = await funded(engine)
    order = await engine.place(
        owner,
        account,
        OrderRequest(
            client_order_id="gtc",
            symbol=call("240"),
            side=OrderSide.buy,
            quantity=Decimal(1),
            order_type=OrderType.limit,
            time_in_force=TimeInForce.gtc,
            limit_price=Decimal("0.01"),
            position_effect=PositionEffect.open,
        ),
    )
    if order.status is OrderStatus.filled:
        pytest.skip("the far call traded at a cent in this seed")
    clock.set(EXPIRY)
    await engine.tick()
    [update] = sink.of(account)
    assert update.order.status is OrderStatus.expired
    balances = await engine.balances(owner, account)
    assert balances.buying_power == balances.cash == Decimal(100000)


# --- restart safety -------------------------------------------------------------------------


async def test_option_state_survives_a_restart_and_a_new_engine_settles_it(
    sessionmaker: SessionMaker,
) -> None:
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await funded(engine, "50000")
    credit = net_credit(BEAR_CALL)
    await engine.place(owner, account, combo(BEAR_CALL, 1))
    resting = await engine.place(
        owner,
        account,
        combo(
            IRON_CONDOR,
            1,
            OrderType.limit,
            net_credit(IRON_CONDOR) + 5,
            PriceEffect.credit,
            TimeInForce.gtc,
        ),
    )
    assert resting.status is OrderStatus.accepted
    expected = await engine.balances(owner, account)

    restarted, clock, sink = make_engine(sessionmaker)  # a new process: nothing in memory
    assert await restarted.balances(owner, account) == expected
    assert {p.symbol for p in await restarted.positions(owner, account)} == {
        call("190"),
        call("195"),
    }
    assert (await restarted.get_order(owner, account, resting.broker_order_id)).legs == resting.legs

    clock.set(EXPIRY + timedelta(hours=1))
    await restarted.tick()
    # Both calls of the spread finish out of the money (AAPL settles near 188): worthless.
    assert await restarted.positions(owner, account) == []
    statuses = {u.order.broker_order_id: u.order.status for u in sink.of(account)}
    assert statuses[resting.broker_order_id] is OrderStatus.expired
    balances = await restarted.balances(owner, account)
    assert balances.buying_power == balances.cash
    assert balances.cash == Decimal(50000) + credit * HUNDRED


async def test_a_resting_close_is_modified_and_canceled_with_its_contracts_held_and_given_back(
    sessionmaker: SessionMaker,
) -> None:
    """Modify and cancel of an option order write the order, the held contracts and the
    fill through the same Core writes as placement: what a close holds moves with it."""
    engine, _clock, _sink = make_engine(sessionmaker)
    owner, account = await funded(engine)
    symbol = call("190")
    bought = await engine.place(
        owner, account, single(symbol, OrderSide.buy, PositionEffect.open, "3")
    )
    assert bought.status is OrderStatus.filled
    bid, ask = model(symbol)
    assert bid > Decimal("0.01")  # a sell limited at 0.01 crosses
    far = (ask * 3).quantize(Decimal("0.01"))

    def close(quantity: str, limit: Decimal) -> OrderRequest:
        return single(
            symbol, OrderSide.sell, PositionEffect.close, quantity, OrderType.limit, limit
        )

    first = await engine.place(owner, account, close("2", far))
    assert first.status is OrderStatus.accepted
    with pytest.raises(broker_errors.Rejected):  # 3 held, 2 of them held for the close
        await engine.place(owner, account, close("2", far))
    smaller = await engine.modify(
        owner, account, first.broker_order_id, OrderChanges(quantity=Decimal(1))
    )
    assert (smaller.status, smaller.quantity) == (OrderStatus.accepted, 1)
    second = await engine.place(owner, account, close("2", far))  # 2 free now
    assert second.status is OrderStatus.accepted
    canceled = await engine.cancel(owner, account, second.broker_order_id)
    assert canceled.status is OrderStatus.canceled
    third = await engine.place(owner, account, close("2", far))  # given back by the cancel
    await engine.cancel(owner, account, third.broker_order_id)

    crossed = await engine.modify(
        owner, account, first.broker_order_id, OrderChanges(limit_price=Decimal("0.01"))
    )
    assert (crossed.status, crossed.filled_quantity) == (OrderStatus.filled, 1)
    [position] = await engine.positions(owner, account)
    assert position.quantity == 2
    assert len(await engine.fills(owner, account)) == 2
    rest = await engine.place(owner, account, close("2", far))  # both left are free
    assert rest.status is OrderStatus.accepted
