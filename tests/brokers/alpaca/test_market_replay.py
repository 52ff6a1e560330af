"""End to end over real sockets: a gateway ``WS /v1/stream`` subscriber to Alpaca's 1-minute
bars (its native interval) against the fake Alpaca, reached only through its URL settings.

The fake's stream is driven by the test (``publish``), so the seam is exact: the bar of the
minute that just ended is in the history replay and then arrives again from the stream; the
subscriber gets it once, then the later minutes, none missing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from app.streaming.config import StreamSettings
from tests.brokers.alpaca.support import running_fake
from tests.conftest import new_user
from tests.harness import settings_for_tests
from tests.streaming.support import Instance, StreamClient, eventually, serve


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def _bar(client: StreamClient) -> dict[str, Any]:
    while True:
        message = await client.recv()
        if message["type"] == "bar":
            return message
        assert message["type"] in ("heartbeat", "quote", "trade"), message


async def _alpaca_account(gw: Instance, user: str, key_id: str, secret: str) -> str:
    response = await gw.http.post(
        "/v1/connections",
        json={"broker": "alpaca", "credentials": {"api_key_id": key_id, "api_secret_key": secret}},
        headers=gw.auth(user),
    )
    assert response.status_code == 201, response.text
    account: str = response.json()["accounts"][0]
    return account


async def test_alpaca_minute_bars_replay_history_then_live_each_minute_once(
    postgres_url: str,
) -> None:
    async with running_fake() as run:
        settings = settings_for_tests(
            postgres_url, alpaca_trading_url=run.url, alpaca_data_url=run.url
        )
        async with serve(settings, StreamSettings(market_bar_replay=5)) as gw:
            run.fake.clock = gw.clock.now  # one clock for the gateway and the fake broker
            market = run.fake.market
            now = gw.clock.now()
            into = now - now.replace(second=0, microsecond=0)
            gw.clock.advance(timedelta(seconds=90) - into)  # 30 s into a minute
            minute = gw.clock.now().replace(second=0, microsecond=0)
            # The fake's stream is 40 s behind: its next bar is the one that just ended.
            market.cursor = market.data.step_at(gw.clock.now() - timedelta(seconds=40))
            user = new_user("alpaca-replay")
            account = await _alpaca_account(gw, user, run.account.key_id, run.account.secret)
            async with gw.client() as client:
                await client.auth(gw.token(user))
                await client.send(
                    {"type": "market.subscribe", "account_id": account, "bars": {"1m": ["AAPL"]}}
                )
                answer = await client.recv_type("market.subscribed")
                assert answer["bars"] == {"1m": ["AAPL"]}
                replay = [await _bar(client) for _ in range(5)]

                async def subscribed_upstream() -> bool:
                    return any("AAPL" in c.subs["bars"] for c in market.live("stocks"))

                await eventually(subscribed_upstream)
                # Past two more minute ends: the stream sends minute-1 (replayed), minute,
                # minute+1.
                end = minute + timedelta(minutes=2, seconds=1)
                market.publish(market.data.step_at(end) - market.cursor)
                live = [await _bar(client) for _ in range(2)]
    assert [_ts(b["start"]) for b in replay] == [
        minute - timedelta(minutes=5 - i) for i in range(5)
    ]
    assert all(b["final"] and b["source"] == "history" for b in replay)
    assert [_ts(b["start"]) for b in live] == [minute, minute + timedelta(minutes=1)]
    assert all(b["final"] and b["source"] == "stream" for b in live)
    # The replay is the broker's own history: the same bar the stream sent for that minute.
    expected = market.data.minute_bar("AAPL", minute - timedelta(minutes=1))
    assert expected is not None
    assert Decimal(replay[-1]["close"]) == expected.close
    assert Decimal(replay[-1]["volume"]) == expected.volume
