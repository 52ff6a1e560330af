"""Options on the order path: validation before any write, capability gates, legs stored
and reported, discovery and preview (against the option stand-in broker of
``options_support``, and the paper broker, which has no options yet)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import func, select

from app.brokers.base import (
    BrokerOrderLeg,
    Fill,
    OptionCapabilities,
    OrderSide,
    OrderStatus,
    OrderType,
    OrderUpdate,
    PositionEffect,
    PriceEffect,
    Support,
    TimeInForce,
)
from app.db.models import Account, IdempotencyKey, Order, OrderEvent
from app.services.order_updates import OrderUpdateIngest
from tests.api.options_support import (
    OPTION_CAPABILITIES,
    NativePreviewAdapter,
    StandInLog,
    far_monthly,
    iron_condor,
    no_options_registry,
    occ,
    standin_registry,
)
from tests.conftest import new_user
from tests.harness import Harness, running_app, settings_for_tests

EXPIRY = far_monthly()
CALL = occ("AAPL", EXPIRY, "C", "200")
PUT = occ("AAPL", EXPIRY, "P", "180")


@dataclasses.dataclass
class StandIn:
    harness: Harness
    log: StandInLog


@pytest_asyncio.fixture(scope="module")
async def postgres_standin(postgres_url: str) -> AsyncIterator[StandIn]:
    log = StandInLog()
    async with running_app(settings_for_tests(postgres_url), standin_registry(log)) as h:
        yield StandIn(h, log)


@pytest_asyncio.fixture(scope="module")
async def sqlite_standin(sqlite_url: str) -> AsyncIterator[StandIn]:
    log = StandInLog()
    async with running_app(settings_for_tests(sqlite_url), standin_registry(log)) as h:
        yield StandIn(h, log)


@pytest_asyncio.fixture
async def no_options(db_url: str) -> AsyncIterator[Harness]:
    """A broker without options (most brokers; the paper broker's capabilities stripped)."""
    async with running_app(settings_for_tests(db_url), no_options_registry()) as h:
        yield h


@pytest.fixture
def standin(backend: str, request: pytest.FixtureRequest) -> StandIn:
    value: StandIn = request.getfixturevalue(f"{backend}_standin")
    return value


async def _written(harness: Harness, user: str) -> tuple[int, int, int]:
    async with harness.state.ctx.sessionmaker() as session:
        orders = (
            await session.execute(select(func.count()).where(Order.user_id == user))
        ).scalar_one()
        events = (
            await session.execute(
                select(func.count()).where(
                    OrderEvent.user_id == user, OrderEvent.order_id.is_not(None)
                )
            )
        ).scalar_one()
        keys = (
            await session.execute(select(func.count()).where(IdempotencyKey.user_id == user))
        ).scalar_one()
    return int(orders), int(events), int(keys)


async def _post(harness: Harness, user: str, account: str, body: Any, key: str) -> Any:
    return await harness.client.post(
        f"/v1/accounts/{account}/orders",
        json=body,
        headers=harness.auth(user, **{"Idempotency-Key": key}),
    )


def _single(**extra: Any) -> dict[str, Any]:
    body = {
        "symbol": CALL,
        "side": "buy",
        "quantity": "2",
        "order_type": "limit",
        "limit_price": "3.10",
        "position_effect": "open",
    }
    body.update(extra)
    return body


def _leg(symbol: str, side: str = "buy", ratio: Any = 1, effect: str = "open") -> dict[str, Any]:
    return {"symbol": symbol, "side": side, "ratio": ratio, "position_effect": effect}


def _vertical(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "legs": [_leg(CALL, "buy"), _leg(occ("AAPL", EXPIRY, "C", "210"), "sell")],
        "quantity": "1",
        "order_type": "limit",
        "limit_price": "3.00",
        "price_effect": "debit",
    }
    body.update(extra)
    return body


EXPIRED = occ("AAPL", date(2024, 1, 19), "C", "150")
C205 = occ("AAPL", EXPIRY, "C", "205")
C210 = occ("AAPL", EXPIRY, "C", "210")
C215 = occ("AAPL", EXPIRY, "C", "215")
MSFT_CALL = occ("MSFT", EXPIRY, "C", "400")

BAD: list[tuple[str, dict[str, Any], str]] = [
    ("malformed month", _single(symbol="AAPL261318C00150000"), "invalid_option_symbol"),
    ("malformed right", _single(symbol="AAPL261218X00150000"), "invalid_option_symbol"),
    ("zero strike", _single(symbol="AAPL261218C00000000"), "invalid_option_symbol"),
    ("expired contract", _single(symbol=EXPIRED), "option_expired"),
    ("fractional contracts", _single(quantity="1.5"), "fractional_contracts"),
    (
        "missing position_effect",
        {k: v for k, v in _single().items() if k != "position_effect"},
        "position_effect_required",
    ),
    ("price_effect on a single leg", _single(price_effect="debit"), "validation_error"),
    (
        "leg on another underlying",
        _vertical(legs=[_leg(CALL), _leg(MSFT_CALL, "sell")]),
        "mixed_underlyings",
    ),
    ("duplicate contracts", _vertical(legs=[_leg(CALL), _leg(CALL, "sell")]), "duplicate_legs"),
    (
        "same contract padded and unpadded",
        _vertical(legs=[_leg(CALL), _leg(f"AAPL  {CALL[4:]}", "sell")]),
        "duplicate_legs",
    ),
    ("ratio zero", _vertical(legs=[_leg(CALL, ratio=0), _leg(C210, "sell")]), "invalid_leg_ratio"),
    (
        "ratio negative",
        _vertical(legs=[_leg(CALL, ratio=-1), _leg(C210, "sell")]),
        "invalid_leg_ratio",
    ),
    (
        "ratios with a common factor",
        _vertical(legs=[_leg(CALL, ratio=2), _leg(C210, "sell", ratio=4)]),
        "leg_ratios_not_reduced",
    ),
    (
        "a fifth leg",
        _vertical(
            legs=[
                _leg(CALL),
                _leg(C205, "sell"),
                _leg(C210),
                _leg(C215, "sell"),
                _leg(PUT),
            ]
        ),
        "invalid_leg_count",
    ),
    ("one leg", _vertical(legs=[_leg(CALL)]), "invalid_leg_count"),
    ("no legs", _vertical(legs=[]), "invalid_leg_count"),
    (
        "credit for all buys",
        _vertical(legs=[_leg(CALL), _leg(C210)], price_effect="credit"),
        "price_effect_mismatch",
    ),
    (
        "debit for all sells",
        _vertical(legs=[_leg(CALL, "sell"), _leg(C210, "sell")], price_effect="debit"),
        "price_effect_mismatch",
    ),
    (
        "even for all buys",
        _vertical(legs=[_leg(CALL), _leg(C210)], price_effect="even", limit_price="0"),
        "price_effect_mismatch",
    ),
    (
        "limit without price_effect",
        {k: v for k, v in _vertical().items() if k != "price_effect"},
        "price_effect_required",
    ),
    ("fractional strategy units", _vertical(quantity="0.5"), "fractional_contracts"),
    ("legs and a symbol", _vertical(symbol="AAPL"), "validation_error"),
    ("legs and a side", _vertical(side="buy"), "validation_error"),
    ("an equity leg", _vertical(legs=[_leg("AAPL"), _leg(C210, "sell")]), "invalid_option_symbol"),
    (
        "a malformed leg",
        _vertical(legs=[_leg("AAPL261318C00150000"), _leg(C210, "sell")]),
        "invalid_option_symbol",
    ),
    (
        "an expired leg",
        _vertical(legs=[_leg(EXPIRED), _leg(occ("AAPL", date(2024, 1, 19), "C", "160"), "sell")]),
        "option_expired",
    ),
    (
        "a stop combo",
        _vertical(order_type="stop", stop_price="1", limit_price=None),
        "unsupported_order",
    ),
    ("an ioc combo", _vertical(time_in_force="ioc"), "unsupported_order"),
    ("missing side and symbol", {"quantity": "1", "order_type": "market"}, "validation_error"),
]


@pytest.mark.parametrize(("case", "body", "code"), BAD, ids=[c[0] for c in BAD])
async def test_bad_option_orders_write_nothing(
    standin: StandIn, case: str, body: dict[str, Any], code: str
) -> None:
    harness = standin.harness
    user = new_user()
    _, account = await harness.paper_account(user)
    key = uuid.uuid4().hex
    placed_before = len(standin.log.placed)
    response = await _post(harness, user, account, body, key)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code, response.json()
    assert await _written(harness, user) == (0, 0, 0)
    assert len(standin.log.placed) == placed_before
    # The key was not consumed: a good body with it places the order.
    retry = await _post(harness, user, account, _single(), key)
    assert retry.status_code == 201, retry.text


async def test_options_to_a_broker_without_options(no_options: Harness) -> None:
    """Single and multi-leg are unsupported_order at a broker without options, before the
    contract's own terms are looked at, and nothing is written."""
    harness = no_options
    user = new_user()
    _, account = await harness.paper_account(user)
    for body in (_single(), _vertical(), _single(symbol=EXPIRED)):
        response = await _post(harness, user, account, body, uuid.uuid4().hex)
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "unsupported_order"
    assert await _written(harness, user) == (0, 0, 0)


async def _app_with(db_url: str, **options: Any) -> Any:
    caps = dataclasses.replace(
        OPTION_CAPABILITIES,
        **{k: v for k, v in options.items() if k in ("multi_leg",)},
        options=dataclasses.replace(
            OPTION_CAPABILITIES.options,
            **{k: v for k, v in options.items() if k != "multi_leg"},
        ),
    )
    return running_app(
        settings_for_tests(db_url), standin_registry(StandInLog(), capabilities=caps)
    )


@pytest.mark.parametrize(
    ("capability", "body"),
    [
        ({"max_legs": 2}, iron_condor(EXPIRY)),
        ({"multi_leg": Support.unsupported}, _vertical()),
        ({"combo_order_types": frozenset({OrderType.market})}, _vertical()),
        ({"combo_time_in_force": frozenset({TimeInForce.gtc})}, _vertical()),
    ],
    ids=["too many legs", "no multi-leg", "no limit combos", "no day combos"],
)
async def test_the_capability_gate_refuses_combos_the_broker_cannot_take(
    db_url: str, capability: dict[str, Any], body: dict[str, Any]
) -> None:
    async with await _app_with(db_url, **capability) as harness:
        user = new_user()
        _, account = await harness.paper_account(user)
        response = await _post(harness, user, account, body, uuid.uuid4().hex)
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "unsupported_order"
        assert await _written(harness, user) == (0, 0, 0)


async def test_a_single_leg_option_order(standin: StandIn) -> None:
    harness = standin.harness
    user = new_user()
    _, account = await harness.paper_account(user)
    padded = f"AAPL  {CALL[4:]}"
    response = await _post(harness, user, account, _single(symbol=padded), uuid.uuid4().hex)
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["symbol"] == CALL  # the canonical unpadded form, whatever came in
    assert order["position_effect"] == "open"
    assert order["legs"] == []
    assert order["price_effect"] is None
    assert order["contract"] == {
        "underlying": "AAPL",
        "root": "AAPL",
        "expiration": EXPIRY.isoformat(),
        "right": "call",
        "strike": "200",
        "multiplier": "100",
        "style": "american",
    }
    sent = standin.log.placed[-1]
    assert sent.symbol == CALL
    assert sent.position_effect is PositionEffect.open
    assert sent.quantity == Decimal(2)
    assert not sent.legs


async def test_an_iron_condor_is_one_order_with_four_legs(standin: StandIn) -> None:
    harness = standin.harness
    user = new_user()
    _, account = await harness.paper_account(user)
    body = iron_condor(EXPIRY, quantity="3")
    response = await _post(harness, user, account, body, uuid.uuid4().hex)
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["symbol"] == "AAPL"
    assert order["side"] == "sell"
    assert order["price_effect"] == "credit"
    assert order["contract"] is None
    assert [(leg["symbol"], leg["side"], leg["ratio"]) for leg in order["legs"]] == [
        (leg["symbol"], leg["side"], 1) for leg in body["legs"]
    ]
    assert all(leg["filled_quantity"] == "0" for leg in order["legs"])
    sent = standin.log.placed[-1]
    assert sent.symbol == "AAPL"
    assert sent.side is OrderSide.sell
    assert sent.price_effect is PriceEffect.credit
    assert sent.limit_price == Decimal("2.10")
    assert [leg.symbol for leg in sent.legs] == [leg["symbol"] for leg in body["legs"]]
    assert sent.quantity == Decimal(3)

    # The events carry the legs.
    events = await harness.client.get("/v1/events?after=0&limit=500", headers=harness.auth(user))
    payloads = [e["order"] for e in events.json()["items"] if e["order_id"] == order["id"]]
    assert payloads
    assert all(len(p["legs"]) == 4 for p in payloads)

    # Leg fills reported by the broker land on the legs, each fill once.
    async with harness.state.ctx.sessionmaker() as session:
        row = await session.get(Order, order["id"])
        acct = await session.get(Account, account)
        assert row is not None
        assert acct is not None
        broker_order_id, ref = row.broker_order_id, acct.broker_account_ref
    assert broker_order_id is not None
    reported = standin.log.orders[broker_order_id]
    now = datetime.now(UTC)
    fills = tuple(
        Fill(f"f-{i}", Decimal(3), Decimal(p), now, leg_symbol=leg["symbol"])
        for i, (leg, p) in enumerate(
            zip(body["legs"], ["0.40", "1.20", "1.50", "0.20"], strict=True)
        )
    )
    filled = dataclasses.replace(
        reported,
        status=OrderStatus.filled,
        filled_quantity=Decimal(3),
        avg_fill_price=Decimal("2.10"),
        legs=(),
    )
    ingest = OrderUpdateIngest(harness.state.ctx.sessionmaker, "paper")
    await ingest(OrderUpdate(account_ref=ref, order=filled, occurred_at=now, fills=fills))
    await ingest(OrderUpdate(account_ref=ref, order=filled, occurred_at=now, fills=fills))
    got = (await harness.client.get(f"/v1/orders/{order['id']}", headers=harness.auth(user))).json()
    assert got["status"] == "filled"
    assert [(leg["filled_quantity"], leg["avg_fill_price"]) for leg in got["legs"]] == [
        ("3", "0.4"),
        ("3", "1.2"),
        ("3", "1.5"),
        ("3", "0.2"),
    ]
    # A broker that reports its legs' fill state in the order is taken as it is.
    legs = tuple(
        BrokerOrderLeg(
            symbol=leg["symbol"],
            side=OrderSide(leg["side"]),
            ratio=1,
            position_effect=None,
            filled_quantity=Decimal(3),
            avg_fill_price=Decimal("9"),
            broker_leg_id=f"x{i}",
        )
        for i, leg in enumerate(body["legs"])
    )
    ingest_report = dataclasses.replace(filled, legs=legs)
    async with harness.state.ctx.sessionmaker() as session:
        from app.services.order_updates import merge_broker_legs

        row = await session.get(Order, order["id"])
        assert row is not None
        assert row.legs is not None
        merged = merge_broker_legs(row.legs, ingest_report.legs)
    assert [m["avg_fill_price"] for m in merged] == ["9"] * 4
    assert [m["position_effect"] for m in merged] == ["open"] * 4


async def test_idempotency_covers_the_legs(standin: StandIn) -> None:
    harness = standin.harness
    user = new_user()
    _, account = await harness.paper_account(user)
    key = uuid.uuid4().hex
    body = iron_condor(EXPIRY)
    first = await _post(harness, user, account, body, key)
    assert first.status_code == 201, first.text
    again = await _post(harness, user, account, body, key)
    assert again.status_code == 201
    assert again.json() == first.json()
    # The same legs written padded are the same order.
    padded = iron_condor(EXPIRY)
    for leg in padded["legs"]:
        leg["symbol"] = f"AAPL  {leg['symbol'][4:]}"
    assert (await _post(harness, user, account, padded, key)).json() == first.json()
    changed = iron_condor(EXPIRY)
    changed["legs"][0]["symbol"] = occ("AAPL", EXPIRY, "P", "165")
    reused = await _post(harness, user, account, changed, key)
    assert reused.status_code == 422
    assert reused.json()["code"] == "idempotency_key_reused"
    assert (await _written(harness, user))[0] == 1


# --- discovery ------------------------------------------------------------------------


async def test_a_broker_without_a_chain_answers_a_capability_problem(
    no_options: Harness,
) -> None:
    harness = no_options
    user = new_user()
    _, account = await harness.paper_account(user)
    for path in ("expirations?underlying=AAPL", "chain?underlying=AAPL"):
        response = await harness.client.get(
            f"/v1/accounts/{account}/options/{path}", headers=harness.auth(user)
        )
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "options_chain_unsupported"


async def test_discovery_is_the_callers_own(standin: StandIn) -> None:
    harness = standin.harness
    owner, other = new_user(), new_user()
    _, account = await harness.paper_account(owner)
    response = await harness.client.get(
        f"/v1/accounts/{account}/options/chain?underlying=AAPL", headers=harness.auth(other)
    )
    assert response.status_code == 404


async def test_expirations_and_a_filtered_paged_chain(standin: StandIn) -> None:
    harness = standin.harness
    user = new_user()
    _, account = await harness.paper_account(user)
    base = f"/v1/accounts/{account}/options"
    expirations = await harness.client.get(
        f"{base}/expirations?underlying=aapl", headers=harness.auth(user)
    )
    assert expirations.status_code == 200, expirations.text
    body = expirations.json()
    assert body["underlying"] == "AAPL"
    dates = [item["expiration"] for item in body["items"]]
    assert dates == sorted(set(dates))
    assert dates[0] >= datetime.now(UTC).date().isoformat()

    first_expiry = dates[0]
    query = (
        f"{base}/chain?underlying=AAPL&expiration={first_expiry}&right=put"
        "&strike_gte=180&strike_lte=200&limit=3"
    )
    seen: list[dict[str, Any]] = []
    url = query
    while True:
        page = await harness.client.get(url, headers=harness.auth(user))
        assert page.status_code == 200, page.text
        data = page.json()
        assert len(data["items"]) <= 3
        seen.extend(data["items"])
        if data["next_cursor"] is None:
            break
        url = f"{query}&cursor={data['next_cursor']}"
    assert seen, "the stand-in lists puts between 180 and 200"
    for item in seen:
        contract = item["contract"]
        assert contract["expiration"] == first_expiry
        assert contract["right"] == "put"
        assert Decimal("180") <= Decimal(contract["strike"]) <= Decimal("200")
        assert item["source"] == "model"
        assert item["as_of"].endswith("Z")
        assert set(item["greeks"]) == {"delta", "gamma", "theta", "vega", "rho", "iv"}
        assert Decimal(item["bid"]) <= Decimal(item["ask"])
    strikes = [Decimal(i["contract"]["strike"]) for i in seen]
    assert strikes == sorted(strikes)
    assert len(set(strikes)) == len(strikes)

    too_many = await harness.client.get(
        f"{base}/chain?underlying=AAPL&limit=501", headers=harness.auth(user)
    )
    assert too_many.status_code == 422
    unknown = await harness.client.get(
        f"{base}/chain?underlying=NOTREAL", headers=harness.auth(user)
    )
    assert unknown.status_code == 422
    assert unknown.json()["code"] == "unknown_symbol"


async def test_the_chain_is_cached_per_account_for_a_short_time(standin: StandIn) -> None:
    harness = standin.harness
    user = new_user()
    _, first = await harness.paper_account(user)
    _, second = await harness.paper_account(user)
    calls = standin.log.chain_calls
    for account in (first, first, second):
        response = await harness.client.get(
            f"/v1/accounts/{account}/options/chain?underlying=MSFT&limit=1",
            headers=harness.auth(user),
        )
        assert response.status_code == 200, response.text
    assert standin.log.chain_calls == calls + 2  # one per account; the repeat was cached
    assert harness.settings.option_chain_cache_seconds == 5.0


# --- preview --------------------------------------------------------------------------


async def _preview(harness: Harness, user: str, account: str, body: Any) -> Any:
    return await harness.client.post(
        f"/v1/accounts/{account}/orders/preview", json=body, headers=harness.auth(user)
    )


async def test_equity_preview_is_an_estimate_and_writes_nothing(no_options: Harness) -> None:
    """At a broker without a preview of its own the gateway estimates."""
    harness = no_options
    user = new_user()
    _, account = await harness.paper_account(user)
    response = await _preview(
        harness,
        user,
        account,
        {
            "symbol": "AAPL",
            "side": "buy",
            "quantity": "10",
            "order_type": "limit",
            "limit_price": "150",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "estimated_cash_change": "-1500",
        "direction": "debit",
        "buying_power_change": "-1500",
        "fees": "0",
        "warnings": [response.json()["warnings"][0]],
        "rejections": [],
        "source": "estimate",
    }
    market = await _preview(
        harness,
        user,
        account,
        {"symbol": "AAPL", "side": "sell", "quantity": "2", "order_type": "market"},
    )
    assert market.status_code == 200
    assert market.json()["direction"] == "credit"
    assert Decimal(market.json()["estimated_cash_change"]) > 0
    assert await _written(harness, user) == (0, 0, 0)
    # The same validation as placing.
    bad = await _preview(harness, user, account, _single(symbol=EXPIRED))
    assert bad.status_code == 422
    assert bad.json()["code"] == "unsupported_order"


async def test_option_preview_estimates_from_the_legs(standin: StandIn) -> None:
    harness = standin.harness
    user = new_user()
    _, account = await harness.paper_account(user)
    limit = await _preview(harness, user, account, iron_condor(EXPIRY, quantity="2"))
    assert limit.status_code == 200, limit.text
    assert limit.json()["estimated_cash_change"] == "420"  # 2.10 x 2 x 100, a credit
    assert limit.json()["direction"] == "credit"
    assert limit.json()["source"] == "estimate"
    market = await _preview(
        harness, user, account, iron_condor(EXPIRY, order_type="market", limit_price=None)
    )
    assert market.status_code == 200, market.text
    assert market.json()["direction"] == "credit"  # the short strikes are dearer
    single = await _preview(harness, user, account, _single(order_type="market", limit_price=None))
    assert single.status_code == 200
    assert single.json()["direction"] == "debit"
    for bad, code in (
        (_single(symbol=EXPIRED), "option_expired"),
        (_vertical(price_effect="credit", legs=[_leg(CALL), _leg(C210)]), "price_effect_mismatch"),
    ):
        response = await _preview(harness, user, account, bad)
        assert response.status_code == 422
        assert response.json()["code"] == code
    assert await _written(harness, user) == (0, 0, 0)
    assert not [p for p in standin.log.placed if p.client_order_id.startswith("preview")]


async def test_a_native_preview_is_the_brokers(db_url: str) -> None:
    log = StandInLog()
    registry = standin_registry(log, adapter=NativePreviewAdapter)
    async with running_app(settings_for_tests(db_url), registry) as harness:
        user = new_user()
        _, account = await harness.paper_account(user)
        response = await _preview(harness, user, account, iron_condor(EXPIRY, quantity="101"))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["source"] == "broker"
        assert body["fees"] == "0.65"
        assert body["rejections"] == ["order exceeds the account's limit"]
        assert len(log.previews) == 1
        assert len(log.previews[0].legs) == 4
        assert not log.placed
        assert await _written(harness, user) == (0, 0, 0)
        # No Idempotency-Key is needed, and one given changes nothing.
        again = await harness.client.post(
            f"/v1/accounts/{account}/orders/preview",
            json=iron_condor(EXPIRY),
            headers=harness.auth(user, **{"Idempotency-Key": "k"}),
        )
        assert again.status_code == 200
        assert await _written(harness, user) == (0, 0, 0)


async def test_capabilities_show_options_and_preview(standin: StandIn) -> None:
    harness = standin.harness
    response = await harness.client.get("/v1/brokers", headers=harness.auth(new_user()))
    caps = {b["slug"]: b["capabilities"] for b in response.json()["items"]}
    for broker in caps.values():
        assert set(broker["options"]) == set(OptionCapabilities().as_dict())
        assert broker["preview"] in ("native", "emulated", "unsupported")
    assert caps["paper"]["options"]["max_legs"] == 4
    assert caps["paper"]["options"]["combo_order_types"] == ["limit", "market"]


async def test_leg_progress_before_a_whole_unit_fills_is_news(standin: StandIn) -> None:
    harness = standin.harness
    user = new_user()
    _, account = await harness.paper_account(user)
    order = (await _post(harness, user, account, iron_condor(EXPIRY), uuid.uuid4().hex)).json()
    async with harness.state.ctx.sessionmaker() as session:
        row = await session.get(Order, order["id"])
        acct = await session.get(Account, account)
        assert row is not None
        assert acct is not None
        broker_order_id, ref = row.broker_order_id, acct.broker_account_ref
    assert broker_order_id is not None
    reported = standin.log.orders[broker_order_id]

    def with_first_leg(filled: str) -> OrderUpdate:
        first = dataclasses.replace(
            reported.legs[0], filled_quantity=Decimal(filled), avg_fill_price=Decimal("0.35")
        )
        return OrderUpdate(
            account_ref=ref,
            order=dataclasses.replace(reported, legs=(first, *reported.legs[1:])),
            occurred_at=datetime.now(UTC),
        )

    async def events() -> int:
        async with harness.state.ctx.sessionmaker() as session:
            return int(
                (
                    await session.execute(
                        select(func.count()).where(OrderEvent.order_id == order["id"])
                    )
                ).scalar_one()
            )

    ingest = OrderUpdateIngest(harness.state.ctx.sessionmaker, "paper")
    before = await events()
    await ingest(with_first_leg("1"))
    assert await events() == before + 1
    await ingest(with_first_leg("1"))  # a duplicate
    await ingest(with_first_leg("0"))  # stale: fills never go backwards
    assert await events() == before + 1
    got = (await harness.client.get(f"/v1/orders/{order['id']}", headers=harness.auth(user))).json()
    assert got["status"] == "accepted"
    assert got["filled_quantity"] == "0"
    assert (got["legs"][0]["filled_quantity"], got["legs"][0]["avg_fill_price"]) == ("1", "0.35")
    assert [leg["filled_quantity"] for leg in got["legs"][1:]] == ["0", "0", "0"]


async def test_the_typed_capabilities_lose_nothing(harness: Harness) -> None:
    """GET /v1/brokers answers every broker's capabilities exactly as the registry holds
    them (the schema types them; nothing is dropped or renamed)."""
    from app.brokers.registry import default_registry

    response = await harness.client.get("/v1/brokers", headers=harness.auth(new_user()))
    assert response.status_code == 200
    shown = {b["slug"]: b["capabilities"] for b in response.json()["items"]}
    assert shown
    for spec in default_registry().all():
        if spec.slug in shown:
            assert shown[spec.slug] == spec.capabilities.as_dict(), spec.slug


async def test_an_adapter_without_the_chain_protocol_answers_a_capability_problem(
    db_url: str,
) -> None:
    from tests.api.options_support import without_chains_registry

    async with running_app(settings_for_tests(db_url), without_chains_registry()) as harness:
        user = new_user()
        _, account = await harness.paper_account(user)
        for path in ("expirations?underlying=AAPL", "chain?underlying=AAPL"):
            response = await harness.client.get(
                f"/v1/accounts/{account}/options/{path}", headers=harness.auth(user)
            )
            assert response.status_code == 422, response.text
            assert response.json()["code"] == "options_chain_unsupported"
