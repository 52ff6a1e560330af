"""Market data on ``WS /v1/stream`` over real sockets, from the paper market on a manual clock.

What is checked: the frames and their fields; one upstream per credential with reference
counts (the last unsubscribe releases); licensing (a user's own connection is theirs alone,
the platform's is shared); caps and every bad subscribe as an error frame that changes
nothing; gap/resubscribed relayed; a slow reader's trades never dropped silently; bars at an
interval the broker does not stream, aggregated here.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest_asyncio

from app.brokers.base import OptionContract, OptionRight
from app.streaming.config import StreamSettings
from tests.conftest import new_user
from tests.harness import settings_for_tests
from tests.streaming.market_support import CAPPED_SYMBOLS, market_registry
from tests.streaming.support import Instance, StreamClient, eventually, serve

QUEUE = 256


@pytest_asyncio.fixture(scope="module")
async def md(postgres_url: str) -> AsyncIterator[Instance]:
    settings = StreamSettings(market_queue_size=QUEUE, market_max_symbols=8)
    async with serve(settings_for_tests(postgres_url), settings, market_registry()) as instance:
        yield instance


async def _connection_of(md: Instance, user: str, account: str) -> str:
    response = await md.http.get(f"/v1/accounts/{account}", headers=md.auth(user))
    assert response.status_code == 200, response.text
    connection: str = response.json()["connection_id"]
    return connection


async def _connect(md: Instance, user: str, broker: str, *, platform: bool = False) -> str:
    """A connection of ``broker`` (a test broker whose market is the paper market); the
    user needs a paper account first (the paper adapter lists it)."""
    body: dict[str, Any] = {"broker": broker}
    if platform:
        body["options"] = {"ownership": "platform"}
    else:
        body["credentials"] = {"key": f"key-of-{user}"}
    response = await md.http.post("/v1/connections", json=body, headers=md.auth(user))
    assert response.status_code == 201, response.text
    account: str = response.json()["accounts"][0]
    return account


async def _market(
    client: StreamClient, account: str, kind: str = "market.subscribe", **channels: Any
) -> dict[str, Any]:
    await client.send({"type": kind, "account_id": account, **channels})
    return await _next(client, ("market.subscribed", "error"))


async def _next(client: StreamClient, kinds: tuple[str, ...]) -> dict[str, Any]:
    """The next message of one of ``kinds``, skipping market data and heartbeats."""
    while True:
        message = await client.recv()
        if message["type"] in kinds:
            return message


async def _current(client: StreamClient, account: str) -> dict[str, Any]:
    """The account's current set (an empty subscribe changes nothing and answers it)."""
    answer = await _market(client, account)
    assert answer["type"] == "market.subscribed", answer
    return answer


async def _advance(md: Instance, seconds: float) -> None:
    md.clock.advance(timedelta(seconds=seconds))


async def _replayed(client: StreamClient, count: int) -> list[dict[str, Any]]:
    """The ``count`` recent final bars replayed from history after ``market.subscribed``."""
    bars = [await _next(client, ("bar",)) for _ in range(count)]
    assert all(b["final"] and b["source"] in ("history", "aggregated") for b in bars), bars
    return bars


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- the frames ----------------------------------------------------------------------------


async def test_quotes_and_trades_carry_symbol_times_and_source(md: Instance) -> None:
    user = new_user("md-frames")
    account = await md.paper_account(user)
    async with md.client() as client:
        await client.auth(md.token(user))
        answer = await _market(client, account, quotes=["aapl"], trades=["AAPL"])
        assert answer == {
            "type": "market.subscribed",
            "account_id": account,
            "quotes": ["AAPL"],
            "trades": ["AAPL"],
            "bars": {},
            "greeks": [],
        }
        await _advance(md, 1)
        seen: list[dict[str, Any]] = []
        while not {"quote", "trade"} <= {m["type"] for m in seen}:
            seen.append(await client.recv())
    quote = next(m for m in seen if m["type"] == "quote")
    trade = next(m for m in seen if m["type"] == "trade")
    assert quote["symbol"] == trade["symbol"] == "AAPL"
    assert Decimal(quote["bid"]) < Decimal(quote["ask"])
    assert Decimal(trade["size"]) > 0
    for message in (quote, trade):
        assert message["source"] == "stream"
        assert _ts(message["ts"]) <= md.clock.now()  # the exchange's (paper clock's) time
        assert _ts(message["received_at"]).year >= 2026  # the gateway's own time


async def test_bars_final_and_aggregated_from_the_streamed_minute(md: Instance) -> None:
    user = new_user("md-bars")
    account = await md.paper_account(user)
    async with md.client() as client:
        await client.auth(md.token(user))
        answer = await _market(client, account, bars={"1m": ["MSFT"], "5m": ["MSFT"]})
        assert answer["bars"] == {"1m": ["MSFT"], "5m": ["MSFT"]}
        await _advance(md, 16 * 60)
        bars: list[dict[str, Any]] = []
        while sum(1 for b in bars if b["interval"] == "5m" and b["final"]) < 2:
            message = await client.recv()
            # Recent final bars replayed from history come first (tested below).
            if message["type"] == "bar" and message["source"] != "history":
                bars.append(message)
    minutes = [b for b in bars if b["interval"] == "1m"]
    fives = [b for b in bars if b["interval"] == "5m"]
    assert all(b["final"] and b["source"] == "stream" for b in minutes)
    assert all(b["source"] == "aggregated" for b in fives)
    finals = [b for b in fives if b["final"]]
    assert len({b["start"] for b in finals}) == len(finals)  # final once per window
    for five in finals:
        start = _ts(five["start"])
        parts = [m for m in minutes if start <= _ts(m["start"]) < start + timedelta(minutes=5)]
        assert len(parts) == 5
        assert five["open"] == parts[0]["open"]
        assert five["close"] == parts[-1]["close"]
        assert Decimal(five["high"]) == max(Decimal(p["high"]) for p in parts)
        assert Decimal(five["low"]) == min(Decimal(p["low"]) for p in parts)
        assert Decimal(five["volume"]) == sum(Decimal(p["volume"]) for p in parts)
        # No forming bar of a window follows its final one.
        after_final = bars[bars.index(five) + 1 :]
        assert not any(
            b["interval"] == "5m" and b["start"] == five["start"] and not b["final"]
            for b in after_final
        )


async def test_a_bar_subscription_mid_window_is_backfilled_and_its_first_bar_final(
    md: Instance,
) -> None:
    """Subscribed to 5m bars three minutes into a window: the running window is completed
    from the 1-minute history (a forming 5m bar right after ``market.subscribed``), so when
    the window ends its 5m bar is final and agrees with the history, once; no forming bar of
    that window follows it."""
    user = new_user("md-seam")
    account = await md.paper_account(user)
    now = md.clock.now()
    # Three minutes and a bit into the current 5-minute window.
    into = (now - datetime(1970, 1, 1, tzinfo=now.tzinfo)) % timedelta(minutes=5)
    await _advance(md, (timedelta(minutes=8) - into).total_seconds() + 10)
    window = md.clock.now().replace(second=0, microsecond=0) - timedelta(minutes=3)
    async with md.client() as client:
        await client.auth(md.token(user))
        answer = await _market(client, account, bars={"5m": ["NVDA"]})
        assert answer["bars"] == {"5m": ["NVDA"]}
        replayed = await _replayed(client, 10)
        assert [_ts(b["start"]) for b in replayed] == [
            window - timedelta(minutes=5 * (10 - i)) for i in range(10)
        ]
        first = await _next(client, ("bar",))
        assert first["interval"] == "5m"
        assert _ts(first["start"]) == window
        assert first["final"] is False
        await _advance(md, 3 * 60)
        bars: list[dict[str, Any]] = [first]
        while not any(b["final"] for b in bars):
            bars.append(await _next(client, ("bar",)))
        final = bars[-1]
        assert _ts(final["start"]) == window
        assert final["source"] == "aggregated"
        assert [b for b in bars if b["final"]] == [final]  # final once, and it is the last
    history = await md.http.get(
        f"/v1/accounts/{account}/bars",
        params={
            "symbol": "NVDA",
            "interval": "1m",
            "start": window.isoformat(),
            "end": (window + timedelta(minutes=5)).isoformat(),
        },
        headers=md.auth(user),
    )
    assert history.status_code == 200, history.text
    minutes = history.json()["items"]
    assert len(minutes) == 5
    assert first["open"] == minutes[0]["open"]
    assert final["open"] == minutes[0]["open"]
    assert final["close"] == minutes[-1]["close"]
    assert Decimal(final["volume"]) == sum(Decimal(m["volume"]) for m in minutes)
    assert Decimal(final["high"]) == max(Decimal(m["high"]) for m in minutes)


async def test_a_native_interval_replays_recent_final_bars_then_live_without_gap_or_duplicate(
    md: Instance,
) -> None:
    """1m is the paper market's own interval: a subscriber joining an upstream that already
    streams it gets the last 10 final minutes from history, then the live minutes, each
    minute once and none missing, while the market moves during the history read. The
    subscriber already there gets no replay again and no duplicate."""
    user = new_user("md-replay")
    account = await md.paper_account(user)
    async with md.client() as watcher, md.client() as client:
        await watcher.auth(md.token(user))
        await client.auth(md.token(user))
        assert (await _market(watcher, account, bars={"1m": ["AMZN"]}))["type"] == (
            "market.subscribed"
        )
        watched = await _replayed(watcher, 10)
        now = md.clock.now()
        into = now - now.replace(second=0, microsecond=0)
        await _advance(md, (timedelta(seconds=90) - into).total_seconds())  # mid-minute
        # Subscribe and move the market at once: live bars race the history read.
        await client.send(
            {"type": "market.subscribe", "account_id": account, "bars": {"1m": ["AMZN"]}}
        )
        await _advance(md, 45)
        answer = await _next(client, ("market.subscribed", "error"))
        assert answer["bars"] == {"1m": ["AMZN"]}
        bars: list[dict[str, Any]] = []
        await _advance(md, 3 * 60)
        last = md.clock.now().replace(second=0, microsecond=0) - timedelta(minutes=1)
        while not bars or _ts(bars[-1]["start"]) < last:
            bars.append(await _next(client, ("bar",)))
        while not watched or _ts(watched[-1]["start"]) < last:
            watched.append(await _next(watcher, ("bar",)))
    for seen in (bars, watched):
        starts = [_ts(b["start"]) for b in seen]
        assert starts == [starts[0] + timedelta(minutes=i) for i in range(len(starts))]
        assert all(b["final"] and b["interval"] == "1m" for b in seen)
    history = [b for b in bars if b["source"] == "history"]
    assert len(history) == 10
    assert bars[:10] == history  # the replay first, then only live bars
    assert all(b["source"] == "stream" for b in bars[10:])
    assert len(bars) >= 13
    assert [b for b in watched if b["source"] == "history"] == watched[:10]
    rest = await md.http.get(
        f"/v1/accounts/{account}/bars",
        params={"symbol": "AMZN", "interval": "1m", "start": history[0]["start"], "limit": 10},
        headers=md.auth(user),
    )
    assert rest.status_code == 200, rest.text
    fields = ("open", "high", "low", "close", "volume")

    def values(bar: dict[str, Any]) -> tuple[Any, ...]:
        return (_ts(bar["start"]), *(Decimal(bar[k]) for k in fields))

    assert [values(b) for b in rest.json()["items"]] == [values(b) for b in history]


# --- one upstream, reference counts ----------------------------------------------------------


async def test_one_upstream_per_credential_and_the_last_unsubscribe_releases_it(
    md: Instance,
) -> None:
    user = new_user("md-refs")
    account = await md.paper_account(user)
    key = f"paper:{await _connection_of(md, user, account)}"
    market = md.state.market
    async with md.client() as first, md.client() as second:
        await first.auth(md.token(user))
        await second.auth(md.token(user))
        await _market(first, account, quotes=["AAPL"])
        await _market(second, account, quotes=["AAPL"], trades=["MSFT"])
        assert key in market.upstream_keys()
        assert market.subscribers_of(key) == 2
        wanted = market.upstream_wanted(key)
        assert wanted is not None
        assert wanted.quotes == {"AAPL"}
        assert wanted.trades == {"MSFT"}
        # One of two leaving AAPL keeps it upstream (the other still wants it).
        answer = await _market(second, account, "market.unsubscribe", quotes=["AAPL"])
        assert answer["quotes"] == []
        assert answer["trades"] == ["MSFT"]
        wanted = market.upstream_wanted(key)
        assert wanted is not None
        assert wanted.quotes == {"AAPL"}
        # The last subscriber of AAPL leaving releases it.
        await _market(first, account, "market.unsubscribe", quotes=["AAPL"])
        wanted = market.upstream_wanted(key)
        assert wanted is not None
        assert wanted.quotes == frozenset()
        assert wanted.trades == {"MSFT"}
        metrics = (await md.http.get("/metrics")).text
        assert 'brokerage_market_upstream_sessions{broker="paper"}' in metrics
    # Both gone: the session is closed.

    async def released() -> bool:
        return key not in market.upstream_keys()

    await eventually(released)


# --- licensing -------------------------------------------------------------------------------


async def test_a_users_own_connection_serves_only_that_user(md: Instance) -> None:
    alice, bob = new_user("md-alice"), new_user("md-bob")
    await md.paper_account(alice)
    await md.paper_account(bob)
    alice_account = await _connect(md, alice, "papermd")
    bob_account = await _connect(md, bob, "papermd")
    alice_key = f"papermd:{await _connection_of(md, alice, alice_account)}"
    bob_key = f"papermd:{await _connection_of(md, bob, bob_account)}"
    market = md.state.market
    async with md.client() as a, md.client() as b:
        await a.auth(md.token(alice))
        await b.auth(md.token(bob))
        await _market(a, alice_account, quotes=["AAPL"])
        await _market(b, bob_account, quotes=["AAPL"])
        # The same symbol, two credentials: two upstream sessions, one subscriber each.
        assert {alice_key, bob_key} <= market.upstream_keys()
        assert market.subscribers_of(alice_key) == 1
        assert market.subscribers_of(bob_key) == 1
        # Bob cannot join Alice's session through her account: it is not found for him.
        refused = await _market(b, alice_account, quotes=["MSFT"])
        assert refused["type"] == "error"
        assert refused["code"] == "not_found"
        assert market.subscribers_of(alice_key) == 1
        wanted = market.upstream_wanted(alice_key)
        assert wanted is not None
        assert wanted.quotes == {"AAPL"}


async def test_the_platform_connection_is_shared_by_every_user(md: Instance) -> None:
    alice, bob = new_user("md-pa"), new_user("md-pb")
    await md.paper_account(alice)
    await md.paper_account(bob)
    alice_account = await _connect(md, alice, "papermd", platform=True)
    bob_account = await _connect(md, bob, "papermd", platform=True)
    market = md.state.market
    async with md.client() as a, md.client() as b:
        await a.auth(md.token(alice))
        await b.auth(md.token(bob))
        await _market(a, alice_account, quotes=["AAPL"])
        await _market(b, bob_account, quotes=["AAPL", "MSFT"])
        assert market.subscribers_of("papermd:platform") == 2
        wanted = market.upstream_wanted("papermd:platform")
        assert wanted is not None
        assert wanted.quotes == {"AAPL", "MSFT"}
        await _advance(md, 1)
        for client in (a, b):
            quote = await _next(client, ("quote",))
            assert quote["symbol"] in {"AAPL", "MSFT"}
        # The broker's cap counts the shared union: Bob holds 2 of 3, Alice asks for 2 more.
        refused = await _market(a, alice_account, quotes=["IBM", "NVDA"])
        assert refused["type"] == "error"
        assert refused["code"] == "too_many_symbols"
        assert str(CAPPED_SYMBOLS) in refused["detail"]
        # Nobody lost anything.
        assert (await _current(a, alice_account))["quotes"] == ["AAPL"]
        assert (await _current(b, bob_account))["quotes"] == ["AAPL", "MSFT"]
        wanted = market.upstream_wanted("papermd:platform")
        assert wanted is not None
        assert wanted.quotes == {"AAPL", "MSFT"}


# --- bad subscribe messages: an error frame, nothing changed ---------------------------------


async def test_bad_subscribe_messages_get_error_frames_and_change_nothing(md: Instance) -> None:
    user, other = new_user("md-bad"), new_user("md-other")
    account = await md.paper_account(user)
    others_account = await md.paper_account(other)
    await md.paper_account(user)
    no_market = await _connect(md, user, "papernomd")
    capped = await _connect(md, user, "papermd")
    key = f"paper:{await _connection_of(md, user, account)}"
    market = md.state.market
    cases: list[tuple[dict[str, Any], str]] = [
        ({"account_id": account, "book": ["AAPL"]}, "unknown_channel"),
        ({"account_id": account, "quotes": ["AAPL;DROP"]}, "invalid_symbol"),
        ({"account_id": account, "bars": {"2m": ["AAPL"]}}, "invalid_interval"),
        ({"account_id": account, "greeks": ["AAPL"]}, "invalid_symbol"),
        ({"account_id": account, "quotes": ["ZZZZQ"]}, "unknown_symbol"),
        ({"account_id": account, "quotes": [f"S{i}" for i in range(9)]}, "too_many_symbols"),
        ({"account_id": others_account, "quotes": ["AAPL"]}, "not_found"),
        ({"account_id": "acc_nope", "quotes": ["AAPL"]}, "not_found"),
        ({"account_id": no_market, "quotes": ["AAPL"]}, "market_data_unsupported"),
        ({"account_id": capped, "quotes": ["A", "B", "C", "D"]}, "too_many_symbols"),
        ({"account_id": account, "quotes": "AAPL"}, "validation_error"),
        ({"account_id": "acc_\u0000", "quotes": ["AAPL"]}, "validation_error"),
        ({"quotes": ["AAPL"]}, "validation_error"),
    ]
    async with md.client() as client:
        await client.auth(md.token(user))
        before = await _market(client, account, quotes=["AAPL"], trades=["MSFT"])
        wanted_before = market.upstream_wanted(key)
        for body, code in cases:
            await client.send({"type": "market.subscribe", **body})
            answer = await _next(client, ("market.subscribed", "error"))
            assert answer["type"] == "error", (body, answer)
            assert answer["code"] == code, (body, answer)
            assert answer["detail"]
            assert await _current(client, account) == before
            assert market.upstream_wanted(key) == wanted_before
        # The connection still works.
        await _advance(md, 1)
        quote = await _next(client, ("quote",))
        assert quote["symbol"] == "AAPL"


# --- faults ---------------------------------------------------------------------------------


async def test_an_upstream_gap_is_relayed_then_resubscribed(md: Instance) -> None:
    user = new_user("md-gap")
    account = await md.paper_account(user)
    before = await _metrics(md)
    async with md.client() as client:
        await client.auth(md.token(user))
        await _market(client, account, quotes=["AAPL"])
        during = await _metrics(md)
        assert during['brokerage_market_upstream_sessions{broker="paper"}'] >= 1
        assert during['brokerage_market_symbols_subscribed{broker="paper"}'] >= 1
        # More than the paper session replays: it reports a gap and resubscribes.
        await _advance(md, 2 * 3600)
        gap = await _next(client, ("market.gap",))
        resubscribed = await _next(client, ("market.resubscribed",))
        await _advance(md, 1)
        after = await _next(client, ("quote",))
    reconnects = 'brokerage_market_reconnects_total{broker="paper"}'
    assert (await _metrics(md))[reconnects] > before.get(reconnects, 0)
    assert gap["account_id"] == resubscribed["account_id"] == account
    assert gap["reason"]
    assert _ts(after["ts"]) >= _ts(gap["since"])


async def test_a_slow_reader_is_told_what_it_missed_never_silently(md: Instance) -> None:
    user = new_user("md-slow")
    account = await md.paper_account(user)
    symbols = ["AAPL", "MSFT"]
    before = await _metrics(md)
    dropped_metric = 'brokerage_market_dropped_total{broker="paper"}'
    # A reader that stops reading, as on a slow link: a small receive buffer, a client queue
    # of one frame and no compression (deflated, a burst of these frames fits in the socket
    # buffers), so the server's writes back up into its writer and the feed.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", md.port))
    async with md.client(sock=sock, max_queue=1, compression=None) as client:
        await client.auth(md.token(user))
        await _market(client, account, trades=symbols, quotes=symbols)
        # Not reading: the clock moves a queue's worth of steps at a time until the
        # server has had to drop trades for this reader (its socket is full by then: the
        # kernel's send buffer alone holds thousands of frames, so how many steps that
        # takes varies; bounded by time, not steps).
        steps = 0
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            await _advance(md, QUEUE)
            steps += QUEUE
            await asyncio.sleep(0.05)
            if (await _metrics(md)).get(dropped_metric, 0) > before.get(dropped_metric, 0):
                break
            assert asyncio.get_running_loop().time() < deadline, "no trade was ever dropped"
        seen = _Seen(symbols)
        while not seen.dropped:
            seen.add(await client.recv())
        # Then one more step, read at once: its trades arrive, after everything before.
        await _advance(md, 1)
        steps += 1
        last = md.clock.now()
        while seen.last_trades_after(last - timedelta(seconds=1)) != set(symbols):
            seen.add(await client.recv())
    trades, dropped = seen.trades, seen.dropped
    # Every trade of every step is delivered, counted in a market.resync, or in a step the
    # paper session skipped and said so (market.gap: when the clock outruns the session by
    # more than it replays, as on a loaded machine).
    assert trades + dropped + len(symbols) * seen.skipped_steps == len(symbols) * steps
    # Counted per broker: the drops, the quotes conflated in the same burst, deliveries.
    after = await _metrics(md)
    paper = '{broker="paper"}'
    assert (
        after[f"brokerage_market_dropped_total{paper}"]
        - before.get(f"brokerage_market_dropped_total{paper}", 0)
        == dropped
    )
    assert after[f"brokerage_market_conflations_total{paper}"] > before.get(
        f"brokerage_market_conflations_total{paper}", 0
    )
    assert after[f"brokerage_market_deliveries_total{paper}"] > before.get(
        f"brokerage_market_deliveries_total{paper}", 0
    )


class _Seen:
    """What a market-stream reader was told: trades, drops (``market.resync``), and steps
    the paper session skipped (``market.gap``)."""

    def __init__(self, symbols: list[str]) -> None:
        self.symbols = symbols
        self.trades = 0
        self.dropped = 0
        self.skipped_steps = 0
        self._latest: dict[str, datetime] = {}

    def add(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "trade":
            self.trades += 1
            self._latest[message["symbol"]] = _ts(message["ts"])
        elif kind == "market.resync":
            assert message["reason"] == "slow_consumer"
            assert message["since"]
            self.dropped += message["dropped"]
        elif kind == "market.gap":
            # The paper session's gap says how far the clock jumped past its last step
            # (app/paper/market_data.py): it goes on from the step the clock is in, so the
            # steps between were skipped.
            jumped = re.fullmatch(r"the paper clock jumped (\d+) steps", message["reason"])
            assert jumped is not None, message
            self.skipped_steps += int(jumped.group(1)) - 1

    def last_trades_after(self, moment: datetime) -> set[str]:
        return {symbol for symbol, ts in self._latest.items() if ts > moment}


async def _metrics(md: Instance) -> dict[str, float]:
    text = (await md.http.get("/metrics")).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("brokerage_market_"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def test_disconnecting_a_connection_ends_its_market_data(md: Instance) -> None:
    user = new_user("md-revoke")
    await md.paper_account(user)
    account = await _connect(md, user, "papermd")
    connection = await _connection_of(md, user, account)
    key = f"papermd:{connection}"
    market = md.state.market
    async with md.client() as client:
        await client.auth(md.token(user))
        await _market(client, account, quotes=["AAPL"])
        assert key in market.upstream_keys()
        response = await md.http.delete(f"/v1/connections/{connection}", headers=md.auth(user))
        assert response.status_code in (200, 204), response.text
        ended = await _next(client, ("error",))
        assert ended["code"] == "connection_broken"
        emptied = await _next(client, ("market.subscribed",))
        assert emptied["account_id"] == account
        assert emptied["quotes"] == []
        assert key not in market.upstream_keys()
        # And it cannot be subscribed again.
        refused = await _market(client, account, quotes=["AAPL"])
        assert refused["code"] == "connection_broken"


async def test_greeks_and_quotes_of_an_option_contract(md: Instance) -> None:
    user = new_user("md-greeks")
    account = await md.paper_account(user)
    options = md.state.ctx.paper_engine.options
    today = md.clock.now().date()
    contract = OptionContract(
        underlying="AAPL",
        root="AAPL",
        expiration=options.expirations("AAPL", today)[1].expiration,
        right=OptionRight.call,
        strike=options.strikes("AAPL")[20],
    )
    async with md.client() as client:
        await client.auth(md.token(user))
        # The padded OCC form is accepted and answered in the canonical (unpadded) one.
        answer = await _market(
            client, account, greeks=[contract.occ_padded], quotes=[contract.symbol]
        )
        assert answer["greeks"] == [contract.symbol]
        await _advance(md, 1)
        greeks = await _next(client, ("greeks",))
    assert greeks["symbol"] == contract.symbol
    assert greeks["source"] == "stream"
    assert 0 < Decimal(greeks["delta"]) < 1  # a call
    assert Decimal(greeks["iv"]) > 0
    assert greeks["underlying_price"] is not None


async def test_an_upstream_session_that_ends_is_replaced_and_subscribers_told(
    md: Instance,
) -> None:
    user = new_user("md-ends")
    account = await md.paper_account(user)
    key = f"paper:{await _connection_of(md, user, account)}"
    market = md.state.market
    async with md.client() as client:
        await client.auth(md.token(user))
        await _market(client, account, quotes=["AAPL"], trades=["AAPL"])
        first = market.upstream_session(key)
        assert first is not None
        await first.close()  # the upstream goes away under its subscribers
        gap = await _next(client, ("market.gap",))
        resubscribed = await _next(client, ("market.resubscribed",))
        second = market.upstream_session(key)
        assert second is not None
        assert second is not first
        await _advance(md, 1)
        trade = await _next(client, ("trade",))
    assert gap["account_id"] == resubscribed["account_id"] == account
    assert "ended" in gap["reason"]
    assert trade["symbol"] == "AAPL"


async def test_each_instance_keeps_its_own_upstream_for_a_credential(md: Instance) -> None:
    """Two instances of one deployment: a user's WebSockets on both make one upstream session
    on each (the README's "Several instances"); closing one leaves the other serving."""
    user = new_user("md-two")
    account = await md.paper_account(user)
    key = f"paper:{await _connection_of(md, user, account)}"
    settings = StreamSettings(market_queue_size=QUEUE)
    async with serve(md.settings, settings, market_registry()) as other:
        async with md.client() as here, other.client() as there:
            await here.auth(md.token(user))
            await there.auth(other.token(user))
            await _market(here, account, quotes=["AAPL"])
            await _market(there, account, quotes=["MSFT"])
            assert md.state.market.upstream_wanted(key) is not None
            assert other.state.market.upstream_wanted(key) is not None
            assert md.state.market.upstream_wanted(key).quotes == {"AAPL"}  # type: ignore[union-attr]
            assert other.state.market.upstream_wanted(key).quotes == {"MSFT"}  # type: ignore[union-attr]
            other.clock.advance(timedelta(seconds=1))
            quote = await _next(there, ("quote",))
            assert quote["symbol"] == "MSFT"


async def test_disconnecting_a_connection_ends_its_market_data_on_every_instance(
    md: Instance,
) -> None:
    """The DELETE is handled by one instance; the ``connection.revoked`` event it commits
    reaches the other through the outbox (LISTEN), which ends its subscriptions through that
    connection too (``connection_broken``, then an empty set) and closes its upstream; a
    subscription through another connection of the same user is untouched."""
    user = new_user("md-revoke-two")
    paper = await md.paper_account(user)
    account = await _connect(md, user, "papermd")
    connection = await _connection_of(md, user, account)
    key = f"papermd:{connection}"
    settings = StreamSettings(market_queue_size=QUEUE)
    async with serve(md.settings, settings, market_registry()) as other:
        async with other.client() as there:
            await there.auth(other.token(user))
            assert (await _market(there, account, quotes=["AAPL"]))["quotes"] == ["AAPL"]
            assert (await _market(there, paper, quotes=["MSFT"]))["quotes"] == ["MSFT"]
            assert key in other.state.market.upstream_keys()
            response = await md.http.delete(f"/v1/connections/{connection}", headers=md.auth(user))
            assert response.status_code in (200, 204), response.text
            async with asyncio.timeout(10):
                ended = await _next(there, ("error",))
                emptied = await _next(there, ("market.subscribed",))
            assert ended["code"] == "connection_broken"
            assert account in ended["detail"]
            assert emptied["account_id"] == account
            assert emptied["quotes"] == []

            async def released() -> bool:
                return key not in other.state.market.upstream_keys()

            await eventually(released)
            # The paper account's subscription goes on.
            assert (await _current(there, paper))["quotes"] == ["MSFT"]
            other.clock.advance(timedelta(seconds=1))
            quote = await _next(there, ("quote",))
            assert quote["symbol"] == "MSFT"
