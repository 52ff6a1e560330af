"""Schwab options against the fake over real HTTP: chains, single-leg and multi-leg orders
with per-leg fills, option positions, preview (with Schwab's 200-carried rejects), cancel,
replace, and fingerprint adoption that tells combos apart by their legs."""

from __future__ import annotations

import json
import uuid
from datetime import date, timedelta
from decimal import Decimal

import httpx
import pytest

from app.brokers import errors
from app.brokers.base import (
    AssetClass,
    ExpirationType,
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
    PreviewSource,
    PriceEffect,
    Support,
    SupportsOptionChains,
    SupportsOrderPreview,
    TimeInForce,
)
from app.brokers.schwab.adapter import SCHWAB_CAPABILITIES
from app.paper.options_market import SeededOptionMarket
from tests.brokers.schwab.support import Running, running_fake

B, S = OrderSide.buy, OrderSide.sell
OPEN, CLOSE = PositionEffect.open, PositionEffect.close


def expiry(run: Running, index: int = 2) -> date:
    """A listed expiration a few weeks out (the paper market the fake quotes)."""
    return run.fake.options.expirations("AAPL", run.fake.today())[index].expiration


def contract(run: Running, right: OptionRight, strike: str, index: int = 2) -> OptionContract:
    return OptionContract(
        underlying="AAPL",
        root="AAPL",
        expiration=expiry(run, index),
        right=right,
        strike=Decimal(strike),
    )


def single(
    symbol: str,
    side: OrderSide = B,
    effect: PositionEffect = OPEN,
    *,
    qty: str = "1",
    limit: str | None = None,
) -> OrderRequest:
    return OrderRequest(
        client_order_id="bg" + uuid.uuid4().hex,
        symbol=symbol,
        side=side,
        quantity=Decimal(qty),
        order_type=OrderType.limit if limit else OrderType.market,
        time_in_force=TimeInForce.day,
        limit_price=Decimal(limit) if limit else None,
        position_effect=effect,
    )


def combo(
    legs: list[OrderLeg],
    *,
    qty: str = "1",
    limit: str | None = None,
    effect: PriceEffect | None = None,
    tif: TimeInForce = TimeInForce.day,
) -> OrderRequest:
    return OrderRequest(
        client_order_id="bg" + uuid.uuid4().hex,
        symbol="AAPL",
        side=S if effect is PriceEffect.credit else B,
        quantity=Decimal(qty),
        order_type=OrderType.limit if limit is not None else OrderType.market,
        time_in_force=tif,
        limit_price=Decimal(limit) if limit is not None else None,
        legs=tuple(legs),
        price_effect=effect,
    )


def iron_condor(run: Running) -> list[OrderLeg]:
    """Short 180/185 put spread and 195/200 call spread (AAPL is near 190)."""
    return [
        OrderLeg(contract(run, OptionRight.put, "180").symbol, B, 1, OPEN),
        OrderLeg(contract(run, OptionRight.put, "185").symbol, S, 1, OPEN),
        OrderLeg(contract(run, OptionRight.call, "195").symbol, S, 1, OPEN),
        OrderLeg(contract(run, OptionRight.call, "200").symbol, B, 1, OPEN),
    ]


def last_body(run: Running, method: str, suffix: str) -> dict[str, object]:
    for m, path, _, body in reversed(run.fake.calls):
        if m == method and path.endswith(suffix):
            found: dict[str, object] = json.loads(body)
            return found
    raise AssertionError(f"no {method} {suffix}")


def test_capabilities_state_options_multi_leg_and_preview() -> None:
    caps = SCHWAB_CAPABILITIES
    assert caps.asset_classes[AssetClass.option] is Support.native
    assert caps.multi_leg is Support.native
    assert caps.preview is Support.native
    options = caps.as_dict()["options"]
    assert options == {
        "chain": "native",
        "expirations": "native",
        "max_legs": 4,
        "combo_order_types": ["limit", "market"],
        "combo_time_in_force": ["day", "gtc"],
        "combo_price_effects": ["credit", "debit", "even"],
        "single_order_types": None,
        "single_time_in_force": None,
        "greeks": "native",
        "exercise": "unsupported",
    }


async def test_expirations_from_the_expiration_chain() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        assert isinstance(adapter, SupportsOptionChains)
        found = await adapter.list_option_expirations("AAPL")
        listed = run.fake.options.expirations("AAPL", run.fake.today())
        assert found == listed
        assert {e.expiration_type for e in found} >= {
            ExpirationType.weekly,
            ExpirationType.standard,
        }
        assert run.fake.calls[-1][:3] == (
            "GET",
            "/marketdata/v1/expirationchain",
            {"symbol": "AAPL"},
        )
        with pytest.raises(errors.UnknownSymbol):
            await adapter.list_option_expirations("ZZZZ")


async def test_chain_greeks_and_iv_from_percent() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        day = expiry(run)
        query = OptionChainQuery(
            underlying="AAPL",
            expiration=day,
            right=OptionRight.call,
            strike_gte=Decimal("185"),
            strike_lte=Decimal("195"),
        )
        quotes = await adapter.get_option_chain(query)
        _, _, params, _ = run.fake.calls[-1]
        assert params == {
            "symbol": "AAPL",
            "strategy": "SINGLE",
            "contractType": "CALL",
            "fromDate": day.isoformat(),
            "toDate": day.isoformat(),
        }
        assert [q.contract.strike for q in quotes] == [
            Decimal(x) for x in ("185", "187.5", "190", "192.5", "195")
        ]
        market = SeededOptionMarket(run.fake.quotes)
        for q in quotes:
            assert q.contract.right is OptionRight.call
            assert q.contract.expiration == day
            assert q.source == "broker"
            assert q.greeks is not None
            model = market.quote(q.contract, run.fake.now())
            assert (q.bid, q.ask) == (model.bid, model.ask)
            # Schwab's volatility is a percent: 29.5 on the wire is 0.295 here.
            assert q.greeks.iv == model.greeks.iv
            assert q.greeks.iv is not None
            assert Decimal("0.05") <= q.greeks.iv < 1
            assert q.greeks.delta == model.greeks.delta
            assert q.open_interest is not None
            assert q.open_interest >= 1000
        with pytest.raises(errors.UnknownSymbol):
            await adapter.get_option_chain(OptionChainQuery(underlying="ZZZZ"))


async def test_a_single_leg_option_order_padded_and_filled() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        hash_value = run.account.hash_value
        call = contract(run, OptionRight.call, "190")
        placed = await adapter.place_order(hash_value, single(call.symbol))
        sent = last_body(run, "POST", "/orders")
        assert sent["orderLegCollection"] == [
            {
                "instruction": "BUY_TO_OPEN",
                "quantity": 1,
                "instrument": {"symbol": call.occ_padded, "assetType": "OPTION"},
            }
        ]
        assert call.occ_padded[:6] == "AAPL  "
        assert placed.symbol == call.symbol
        assert placed.position_effect is OPEN
        assert placed.legs == ()
        assert await run.fake.match() == 1
        filled = await adapter.get_order(hash_value, placed.broker_order_id)
        assert filled.status is OrderStatus.filled
        ask = run.fake.options.quote(call, run.fake.now()).ask
        assert filled.avg_fill_price == ask
        [position] = await adapter.get_positions(hash_value)
        assert position.symbol == call.symbol
        assert position.contract == call
        assert position.asset_class is AssetClass.option
        assert position.quantity == 1
        assert position.avg_cost == ask
        assert position.market_value == position.current_price * 100
        found = await adapter.get_position(hash_value, call.occ_padded)
        assert found is not None
        assert (found.symbol, found.quantity) == (call.symbol, 1)
        closing = await adapter.place_order(hash_value, single(call.symbol, S, CLOSE))
        assert last_body(run, "POST", "/orders")["orderLegCollection"][0]["instruction"] == (  # type: ignore[index]
            "SELL_TO_CLOSE"
        )
        await run.fake.match()
        assert (await adapter.get_order(hash_value, closing.broker_order_id)).status is (
            OrderStatus.filled
        )
        assert await adapter.get_positions(hash_value) == []


async def test_an_iron_condor_fills_with_four_legs_and_four_positions() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        hash_value = run.account.hash_value
        legs = iron_condor(run)
        order = combo(legs, qty="2", limit="0.05", effect=PriceEffect.credit)
        placed = await adapter.place_order(hash_value, order)
        sent = last_body(run, "POST", "/orders")
        assert sent["orderType"] == "NET_CREDIT"
        assert sent["price"] == "0.05"
        assert sent["complexOrderStrategyType"] == "IRON_CONDOR"
        assert sent["quantity"] == 2
        assert sent["orderStrategyType"] == "SINGLE"
        assert [leg["instruction"] for leg in sent["orderLegCollection"]] == [  # type: ignore[union-attr]
            "BUY_TO_OPEN",
            "SELL_TO_OPEN",
            "SELL_TO_OPEN",
            "BUY_TO_OPEN",
        ]
        assert {leg["quantity"] for leg in sent["orderLegCollection"]} == {2}  # type: ignore[union-attr]
        assert placed.status is OrderStatus.accepted
        assert placed.symbol == "AAPL"
        assert placed.side is S
        assert placed.price_effect is PriceEffect.credit
        assert placed.limit_price == Decimal("0.05")
        assert [leg.symbol for leg in placed.legs] == [leg.symbol for leg in legs]
        assert OrderFingerprint.of(order, placed.created_at).matches(placed)

        assert await run.fake.match() == 1
        filled = await adapter.get_order(hash_value, placed.broker_order_id)
        assert filled.status is OrderStatus.filled
        assert filled.filled_quantity == 2
        assert len(filled.legs) == 4
        now = run.fake.now()
        net = Decimal(0)
        for leg, want in zip(filled.legs, legs, strict=True):
            quote = run.fake.options.quote(OptionContract.parse(want.symbol), now)
            price = quote.ask if want.side is B else quote.bid
            assert (leg.symbol, leg.side, leg.ratio) == (want.symbol, want.side, 1)
            assert leg.position_effect is OPEN
            assert leg.filled_quantity == 2
            assert leg.avg_fill_price == price
            assert leg.broker_leg_id is not None
            net += price if want.side is B else -price
        assert filled.avg_fill_price == abs(net)

        positions = {p.symbol: p for p in await adapter.get_positions(hash_value)}
        assert set(positions) == {leg.symbol for leg in legs}
        for want in legs:
            position = positions[want.symbol]
            assert position.quantity == (2 if want.side is B else -2)
            assert position.contract is not None
            assert position.contract.symbol == want.symbol
            assert (position.market_value < 0) == (want.side is S)
            assert position.market_value == position.quantity * position.current_price * 100


async def test_a_debit_vertical_rests_then_cancels_whole() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        hash_value = run.account.hash_value
        legs = [
            OrderLeg(contract(run, OptionRight.call, "190").symbol, B, 1, OPEN),
            OrderLeg(contract(run, OptionRight.call, "195").symbol, S, 1, OPEN),
        ]
        placed = await adapter.place_order(
            hash_value, combo(legs, limit="0.01", effect=PriceEffect.debit, tif=TimeInForce.gtc)
        )
        sent = last_body(run, "POST", "/orders")
        assert (sent["orderType"], sent["complexOrderStrategyType"]) == ("NET_DEBIT", "VERTICAL")
        assert sent["duration"] == "GOOD_TILL_CANCEL"
        assert await run.fake.match() == 0  # a penny debit is not marketable
        replaced = await adapter.modify_order(
            hash_value, placed.broker_order_id, OrderChanges(limit_price=Decimal("0.02"))
        )
        assert replaced.replaces == placed.broker_order_id
        assert replaced.limit_price == Decimal("0.02")
        assert replaced.legs == tuple(r for r in replaced.legs)
        assert [leg.symbol for leg in replaced.legs] == [leg.symbol for leg in legs]
        assert last_body(run, "PUT", placed.broker_order_id)["orderType"] == "NET_DEBIT"
        canceled = await adapter.cancel_order(hash_value, replaced.broker_order_id)
        assert canceled.status is OrderStatus.canceled
        assert all(leg.filled_quantity == 0 for leg in canceled.legs)
        assert await adapter.get_positions(hash_value) == []


async def test_preview_accepts_with_fees_and_places_nothing() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        assert isinstance(adapter, SupportsOrderPreview)
        hash_value = run.account.hash_value
        order = combo(iron_condor(run), qty="3", limit="1.10", effect=PriceEffect.credit)
        preview = await adapter.preview_order(hash_value, order)
        assert preview.source is PreviewSource.broker
        assert preview.rejections == ()
        assert preview.direction is PriceEffect.credit
        assert preview.estimated_cash_change == Decimal("330")  # 1.10 x 3 x 100 received
        # 12 contracts: $0.65 commission and $0.02 fee each (the fake's schedule).
        assert preview.fees == Decimal("8.04")
        assert preview.buying_power_change == Decimal("-8.04")
        sent = last_body(run, "POST", "/previewOrder")
        assert sent["complexOrderStrategyType"] == "IRON_CONDOR"
        assert run.fake.order_count(run.account) == 0

        debit = await adapter.preview_order(
            hash_value, single(contract(run, OptionRight.call, "190").symbol, limit="2.50")
        )
        assert debit.direction is PriceEffect.debit
        assert debit.estimated_cash_change == Decimal("-250")
        assert debit.buying_power_change == Decimal("-250.67")


async def test_preview_answered_200_with_rejects_is_a_refusal() -> None:
    async with running_fake(cash="100") as run:
        adapter = run.adapter()
        call = contract(run, OptionRight.call, "190")
        preview = await adapter.preview_order(
            run.account.hash_value, single(call.symbol, qty="5", limit="3.00")
        )
        assert preview.rejections == (
            "You do not have enough available cash/buying power for this order.",
        )
        assert preview.estimated_cash_change == Decimal("-1500")
        assert run.fake.calls[-1][0] == "POST"  # the preview itself answered 200
        with pytest.raises(errors.InsufficientFunds):
            await adapter.place_order(
                run.account.hash_value, single(call.symbol, qty="5", limit="3.00")
            )
        assert run.fake.order_count(run.account) == 0


async def test_the_fake_refuses_a_fifth_leg_and_unpadded_symbols() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        legs = [
            *iron_condor(run),
            OrderLeg(contract(run, OptionRight.call, "205").symbol, B, 1, OPEN),
        ]
        with pytest.raises(errors.Rejected, match="at most 4 legs"):
            await adapter.place_order(run.account.hash_value, combo(legs))
        call = contract(run, OptionRight.call, "190")
        body = {
            "orderType": "MARKET",
            "session": "NORMAL",
            "duration": "DAY",
            "orderStrategyType": "SINGLE",
            "orderLegCollection": [
                {
                    "instruction": "BUY_TO_OPEN",
                    "quantity": 1,
                    "instrument": {"symbol": call.symbol, "assetType": "OPTION"},
                }
            ],
        }
        access, _ = run.fake.issue_tokens(run.login)
        async with httpx.AsyncClient(base_url=run.url) as client:
            refused = await client.post(
                f"/trader/v1/accounts/{run.account.hash_value}/orders",
                json=body,
                headers={"Authorization": f"Bearer {access}"},
            )
        assert refused.status_code == 400
        assert refused.json()["errors"] == [f"Symbol {call.symbol} is invalid"]
        assert run.fake.order_count(run.account) == 0


async def test_a_market_straddle_fills_at_the_asks() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        legs = [
            OrderLeg(contract(run, OptionRight.call, "190").symbol, B, 1, OPEN),
            OrderLeg(contract(run, OptionRight.put, "190").symbol, B, 1, OPEN),
        ]
        placed = await adapter.place_order(run.account.hash_value, combo(legs))
        sent = last_body(run, "POST", "/orders")
        assert (sent["orderType"], sent["complexOrderStrategyType"]) == ("MARKET", "STRADDLE")
        assert "price" not in sent
        assert placed.order_type is OrderType.market
        assert placed.price_effect is None
        await run.fake.match()
        filled = await adapter.get_order(run.account.hash_value, placed.broker_order_id)
        now = run.fake.now()
        asks = [run.fake.options.quote(OptionContract.parse(g.symbol), now).ask for g in legs]
        assert [g.avg_fill_price for g in filled.legs] == asks
        assert filled.avg_fill_price == sum(asks)


async def test_fingerprint_adoption_tells_combos_apart_by_a_leg() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        hash_value = run.account.hash_value
        wide = iron_condor(run)
        narrow = [*wide[:3], OrderLeg(contract(run, OptionRight.call, "197.5").symbol, B, 1, OPEN)]
        submitted = run.fake.now()
        first = combo(wide, limit="0.01", effect=PriceEffect.credit)
        second = combo(narrow, limit="0.01", effect=PriceEffect.credit)
        placed_narrow = await adapter.place_order(hash_value, second)
        placed_wide = await adapter.place_order(hash_value, first)
        found = await adapter.find_order_by_fingerprint(
            hash_value, OrderFingerprint.of(first, submitted), frozenset()
        )
        assert found is not None
        assert found.broker_order_id == placed_wide.broker_order_id
        found = await adapter.find_order_by_fingerprint(
            hash_value, OrderFingerprint.of(second, submitted), frozenset()
        )
        assert found is not None
        assert found.broker_order_id == placed_narrow.broker_order_id
        # Same legs, other direction: not the same order.
        debit = combo(wide, limit="0.01", effect=PriceEffect.debit)
        assert not OrderFingerprint.of(debit, submitted).matches(placed_wide)
        claimed = frozenset({placed_wide.broker_order_id})
        assert (
            await adapter.find_order_by_fingerprint(
                hash_value, OrderFingerprint.of(first, submitted), claimed
            )
            is None
        )


async def test_option_quotes_by_canonical_symbol() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        call = contract(run, OptionRight.call, "190")
        await adapter.check_symbol(call.symbol)
        assert run.fake.calls[-1][2]["symbols"] == call.occ_padded
        quotes = await adapter.get_quotes([call.symbol, "AAPL"])
        model = run.fake.options.quote(call, run.fake.now())
        assert quotes[call.symbol].bid == model.bid
        assert quotes[call.symbol].ask == model.ask
        assert "AAPL" in quotes
        expired = OptionContract.parse(call.symbol.replace(call.symbol[4:10], "200117"))
        with pytest.raises(errors.UnknownSymbol):
            await adapter.check_symbol(expired.symbol)
        assert expired.expiration < run.fake.today() - timedelta(days=1)


async def test_a_combo_whose_answer_is_lost_is_adopted_by_its_legs() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        hash_value = run.account.hash_value
        wide = iron_condor(run)
        other = await adapter.place_order(
            hash_value, combo(wide[:2], limit="0.01", effect=PriceEffect.credit)
        )
        order = combo(wide, limit="0.01", effect=PriceEffect.credit)
        submitted = run.fake.now()
        run.fake.faults.timeout_after_accept = 1
        run.fake.faults.hang_seconds = 2.0
        with pytest.raises(errors.OutcomeUnknown):
            await adapter.place_order(hash_value, order)
        assert [c[0] for c in run.fake.calls].count("POST") == 2  # never resent
        found = await adapter.find_order_by_fingerprint(
            hash_value, OrderFingerprint.of(order, submitted), frozenset()
        )
        assert found is not None
        assert found.broker_order_id != other.broker_order_id
        assert len(found.legs) == 4
        assert found.broker_order_id == str(max(run.account.orders))
