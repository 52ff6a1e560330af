"""Schwab through the generic OAuth machinery, end to end, on Postgres and SQLite.

Connect in a browser (GET /v1/oauth/schwab/authorize -> the fake's authorize page -> the
callback), trade through the gateway, then let the token lifecycle keep the grant alive
against the fake: refresh ahead of the 30-minute expiry, announce the 7-day limit a day
ahead (``connection.expiring``), and break the connection (``connection.broken``) at the
limit or when Schwab answers that the grant is dead. One manual clock drives the app's
OAuth flow, its token lifecycle and the fake's token lifetimes; nothing sleeps.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

from sqlalchemy import select

from app.db.models import Account
from app.paper.clock import ManualClock
from tests.brokers.oauth.support import connection_events, connection_row, stored_credentials
from tests.brokers.schwab.support import CLIENT_ID, REDIRECT_URI, Gateway, gateway
from tests.conftest import new_user

ACCESS = timedelta(minutes=30)
AHEAD = ACCESS - timedelta(seconds=299)  # inside the 300 s refresh-ahead window
EXPIRED = ACCESS + timedelta(seconds=1)


def _clock() -> ManualClock:
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


def _z(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _refreshes(gw: Gateway) -> list[tuple[str, str]]:
    """(status, error) of every refresh the fake answered."""
    return [
        (r["status"], r["error"])
        for r in gw.schwab.fake.token_requests
        if r["grant_type"] == "refresh_token"
    ]


async def _balances(gw: Gateway, user: str, account_id: str) -> Any:
    h = gw.harness
    return await h.client.get(f"/v1/accounts/{account_id}/balances", headers=h.auth(user))


async def test_connect_trade_and_refresh_against_the_fake(db_url: str) -> None:
    clock = _clock()
    async with gateway(db_url, clock=clock) as gw:
        h, user, fake = gw.harness, new_user(), gw.schwab.fake
        connected_at = clock.now()
        connection = await gw.connect(user)

        assert (connection["broker"], connection["status"], connection["display"]) == (
            "schwab",
            "active",
            "Connected: Schwab",
        )
        assert (connection["tier"], connection["label"], connection["ownership"]) == (
            "A",
            "Live",
            "byob",
        )
        assert connection["expires_at"] == _z(connected_at + ACCESS)
        assert connection["refresh_expires_at"] == _z(connected_at + timedelta(days=7))
        # One code exchange, as schwab-py makes it: no PKCE verifier, our exact redirect URI.
        [exchange] = [c for c in fake.calls if c[1] == "/v1/oauth/token"]
        form = {k: v[0] for k, v in parse_qs(exchange[3].decode()).items()}
        assert set(form) == {"grant_type", "code", "redirect_uri"}
        assert (form["grant_type"], form["redirect_uri"]) == ("authorization_code", REDIRECT_URI)
        assert fake.token_requests == [
            {"grant_type": "authorization_code", "status": "200", "error": ""}
        ]

        # The accounts are Schwab's, addressed by hashValue.
        [account_id] = connection["accounts"]
        async with h.state.ctx.sessionmaker() as session:
            account = (
                await session.execute(select(Account).where(Account.id == account_id))
            ).scalar_one()
        assert account.broker_account_ref == gw.schwab.account.hash_value
        assert account.number_masked == "****" + gw.schwab.account.number[-4:]
        stored = await stored_credentials(gw.harness, user, connection["id"])
        assert stored["access_token"] in fake.access
        assert stored["refresh_token"] in fake.grants
        assert stored["expires_at"] == (connected_at + ACCESS).isoformat()

        # Place and cancel through the gateway.
        order = await gw.place_limit(user, account_id)
        canceled = await h.client.delete(f"/v1/orders/{order['id']}", headers=h.auth(user))
        assert (canceled.status_code, canceled.json()["status"]) == (200, "canceled")
        assert gw.schwab.account.orders[int(order["broker_order_id"])].status == "CANCELED"

        # Not due yet: the refresher sends nothing.
        report = await h.state.tokens.run_once()
        assert report.examined == 0
        assert _refreshes(gw) == []

        # Inside the refresh-ahead window: one refresh against the fake's token endpoint.
        clock.advance(AHEAD)
        report = await h.state.tokens.run_once()
        assert (report.examined, report.refreshed, report.broken, report.failed) == (1, 1, 0, 0)
        assert _refreshes(gw) == [("200", "")]
        refreshed = await stored_credentials(gw.harness, user, connection["id"])
        assert refreshed["access_token"] != stored["access_token"]
        assert refreshed["access_token"] in fake.access
        assert refreshed["refresh_token"] == stored["refresh_token"]  # Schwab does not rotate
        row = await connection_row(gw.harness, connection["id"])
        assert row.expires_at == clock.now() + ACCESS
        assert row.refresh_expires_at == connected_at + timedelta(days=7)  # not extended
        assert (row.status, row.last_refresh_outcome) == ("active", "ok")

        # The first access token has expired at the fake by now; reads use the new one.
        clock.advance(timedelta(minutes=6))
        assert fake.access[stored["access_token"]].expires <= fake.now()
        read = await _balances(gw, user, account_id)
        assert read.status_code == 200, read.text
        assert Decimal(read.json()["cash"]) == Decimal(100000)

        # An order on an expired access token refreshes on demand first.
        clock.advance(EXPIRED)
        second = await h.place(user, account_id)
        assert second.status_code == 201, second.text
        assert _refreshes(gw) == [("200", ""), ("200", "")]
        assert [e.type for e in await connection_events(gw.harness, connection["id"])] == [
            "connection.active"
        ]


async def test_the_seven_day_limit_is_announced_then_breaks_the_connection(db_url: str) -> None:
    clock = _clock()
    async with gateway(db_url, clock=clock) as gw:
        h, user = gw.harness, new_user()
        connection = await gw.connect(user)
        [account_id] = connection["accounts"]
        limit = (await connection_row(gw.harness, connection["id"])).refresh_expires_at
        assert limit == clock.now() + timedelta(days=7)

        clock.advance(timedelta(days=5, hours=23))  # 25 h left: not yet
        await h.state.tokens.run_once()
        row = await connection_row(gw.harness, connection["id"])
        assert (row.status, row.last_refresh_outcome) == ("active", "ok")  # refreshed meanwhile

        clock.advance(timedelta(hours=2))  # 23 h left
        await h.state.tokens.run_once()
        row = await connection_row(gw.harness, connection["id"])
        assert row.status == "expiring"
        assert row.refresh_expires_at == limit
        for _ in range(3):
            clock.advance(timedelta(hours=1))
            await h.state.tokens.run_once()
        events = await connection_events(gw.harness, connection["id"])
        assert [e.type for e in events] == ["connection.active", "connection.expiring"]
        assert events[-1].payload["refresh_expires_at"] == _z(limit)
        shown = await h.client.get(f"/v1/connections/{connection['id']}", headers=h.auth(user))
        assert shown.json()["status"] == "expiring"
        # Still usable while it lasts: the grant works at the fake until day 7.
        assert (await _balances(gw, user, account_id)).status_code == 200
        assert all(status == "200" for status, _ in _refreshes(gw))

        sent = len(_refreshes(gw))
        clock.set(limit + timedelta(seconds=1))
        report = await h.state.tokens.run_once()
        assert report.broken == 1
        row = await connection_row(gw.harness, connection["id"])
        assert (row.status, row.last_refresh_outcome) == ("broken", "refresh_token_expired")
        assert len(_refreshes(gw)) == sent  # no request for a token past its limit
        events = await connection_events(gw.harness, connection["id"])
        assert [e.type for e in events] == [
            "connection.active",
            "connection.expiring",
            "connection.broken",
        ]
        assert events[-1].payload["reason"] == "refresh_token_expired"
        read = await _balances(gw, user, account_id)
        assert (read.status_code, read.json()["code"]) == (409, "connection_broken")
        listed = (await h.client.get("/v1/events", headers=h.auth(user))).json()["items"]
        assert [e["type"] for e in listed if e["type"].startswith("connection.")][-2:] == [
            "connection.expiring",
            "connection.broken",
        ]


async def test_a_revoked_grant_breaks_the_connection_once(db_url: str) -> None:
    clock = _clock()
    async with gateway(db_url, clock=clock) as gw:
        h, user = gw.harness, new_user()
        connection = await gw.connect(user)
        gw.schwab.fake.revoke(gw.schwab.login)  # the customer removed our app at Schwab
        clock.advance(AHEAD)
        report = await h.state.tokens.run_once()
        assert (report.examined, report.broken, report.failed) == (1, 1, 0)
        assert _refreshes(gw) == [("400", "unsupported_token_type")]
        row = await connection_row(gw.harness, connection["id"])
        assert (row.status, row.last_refresh_outcome) == ("broken", "invalid_grant")
        events = await connection_events(gw.harness, connection["id"])
        assert [e.type for e in events] == ["connection.active", "connection.broken"]
        assert events[-1].payload["reason"] == "invalid_grant"

        for _ in range(3):  # never retried
            clock.advance(timedelta(hours=1))
            await h.state.tokens.run_once()
        assert len(_refreshes(gw)) == 1
        assert len(await connection_events(gw.harness, connection["id"])) == 2


async def test_schwabs_expired_grant_answer_breaks_the_connection(db_url: str) -> None:
    """Schwab's clock (the fake's) reaches day 7 before ours: its ``invalid_client`` /
    "refresh token invalid" answer is a dead grant, not a failure to retry."""
    clock = _clock()
    async with gateway(db_url, clock=clock) as gw:
        h, user = gw.harness, new_user()
        connection = await gw.connect(user)
        gw.schwab.fake.advance(timedelta(days=7))
        clock.advance(AHEAD)
        report = await h.state.tokens.run_once()
        assert report.broken == 1
        assert _refreshes(gw) == [("400", "invalid_client")]
        row = await connection_row(gw.harness, connection["id"])
        assert (row.status, row.last_refresh_outcome) == ("broken", "invalid_grant")
        [*_, broken] = await connection_events(gw.harness, connection["id"])
        assert (broken.type, broken.payload["reason"]) == ("connection.broken", "invalid_grant")
        clock.advance(AHEAD)
        await h.state.tokens.run_once()
        assert len(_refreshes(gw)) == 1


async def test_a_wrong_app_secret_is_retried_not_broken(db_url: str) -> None:
    """``invalid_client`` "Unauthorized" is our app's problem (an operator fixes the secret):
    the connection stays usable and the next pass succeeds."""
    clock = _clock()
    async with gateway(db_url, clock=clock) as gw:
        h, user = gw.harness, new_user()
        connection = await gw.connect(user)
        fake = gw.schwab.fake
        registered = fake.apps[CLIENT_ID]
        fake.apps[CLIENT_ID] = ("a-rotated-app-secret", registered[1])
        clock.advance(AHEAD)
        report = await h.state.tokens.run_once()
        assert (report.refreshed, report.broken, report.failed) == (0, 0, 1)
        row = await connection_row(gw.harness, connection["id"])
        assert (row.status, row.last_refresh_outcome) == ("active", "failed: invalid_client")

        fake.apps[CLIENT_ID] = registered
        report = await h.state.tokens.run_once()
        assert report.refreshed == 1
        assert (await connection_row(gw.harness, connection["id"])).last_refresh_outcome == "ok"
        assert [e.type for e in await connection_events(gw.harness, connection["id"])] == [
            "connection.active"
        ]


async def test_a_routed_order_refreshes_an_expired_access_token_first(db_url: str) -> None:
    """The router builds each candidate's adapter itself: an expired OAuth access token is
    refreshed against the broker before the order is sent, never sent stale."""
    clock = _clock()
    async with gateway(db_url, clock=clock) as gw:
        h, user = gw.harness, new_user()
        connection = await gw.connect(user)
        [account_id] = connection["accounts"]
        clock.advance(EXPIRED)
        routed = await h.client.post(
            "/v1/orders",
            json={
                "account_id": "auto",
                "symbol": "AAPL",
                "side": "buy",
                "quantity": "1",
                "order_type": "limit",
                "limit_price": "1.00",
                "time_in_force": "day",
            },
            headers=h.auth(user, **{"Idempotency-Key": "routed-after-expiry"}),
        )
        assert routed.status_code == 201, routed.text
        assert routed.json()["order"]["account_id"] == account_id
        assert _refreshes(gw) == [("200", "")]
        row = await connection_row(gw.harness, connection["id"])
        assert row.expires_at == clock.now() + ACCESS
