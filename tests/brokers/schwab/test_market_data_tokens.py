"""A Schwab market-data session outlives its 30-minute access token.

The streamer takes the access token at LOGIN and keeps it for the session; a reconnect after
the token expired is refused. The gateway's service then builds a new session from the
connection's refreshed credential (the token lifecycle keeps the vault's fresh) and
resubscribes: its subscribers see ``market.gap`` then ``market.resubscribed`` and data again,
not the end of their subscription. The app, its token lifecycle and the fake share one
manual clock; the streamer is the fake's real WebSocket.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from app.brokers.base import MarketDataSubscription
from app.paper.clock import ManualClock
from app.services.market_data import MarketClient
from tests.brokers.schwab.support import gateway
from tests.conftest import new_user

ACCESS = timedelta(minutes=30)
AHEAD = ACCESS - timedelta(seconds=299)  # inside the 300 s refresh-ahead window


async def _until(client: MarketClient, kind: str, within: float = 15.0) -> list[dict[str, Any]]:
    """Frames up to and including the first of type ``kind``."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(within):
        while True:
            await client.feed.wait()
            for raw in client.feed.take():
                frame = json.loads(raw)
                seen.append(frame)
                if frame["type"] == kind:
                    return seen


async def test_an_expired_access_token_renews_the_session_not_the_subscribers(
    db_url: str,
) -> None:
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    async with gateway(db_url, clock=clock) as gw:
        h, user, fake = gw.harness, new_user(), gw.schwab.fake
        connection = await gw.connect(user)
        [account_id] = connection["accounts"]
        market = h.state.market
        client = market.new_client(user)
        try:
            await market.subscribe(
                client, account_id, MarketDataSubscription(quotes=frozenset({"AAPL"}))
            )
            fake.market.publish()
            assert (await _until(client, "quote"))[-1]["symbol"] == "AAPL"

            # The refresher renews the vault's token; the session still holds the old one,
            # which then expires at Schwab. The streamer drops: the reconnect's LOGIN with
            # the old token is refused.
            clock.advance(AHEAD)
            report = await h.state.tokens.run_once()
            assert report.refreshed == 1
            clock.advance(timedelta(minutes=6))
            fake.drop_streams()

            frames = await _until(client, "market.resubscribed")
            kinds = [f["type"] for f in frames]
            assert "market.gap" in kinds
            assert kinds.index("market.gap") < kinds.index("market.resubscribed")
            assert "error" not in kinds  # nobody's subscription ended
            assert all(f["account_id"] == account_id for f in frames if f["type"] != "quote")
            fake.market.publish()
            assert (await _until(client, "quote"))[-1]["symbol"] == "AAPL"
            wanted = market.upstream_wanted(f"schwab:{connection['id']}")
            assert wanted is not None
            assert wanted.quotes == {"AAPL"}
        finally:
            await market.remove_client(client)
