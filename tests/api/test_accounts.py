"""GET /v1/accounts lists every account of the user, Linked (Tier C) ones included."""

from __future__ import annotations

from sqlalchemy import select

from app.db.models import BrokerToken
from tests.api.portfolio_support import LINKED, gateway
from tests.conftest import new_user


async def test_linked_accounts_are_listed_beside_live_and_paper_ones(db_url: str) -> None:
    async with gateway(db_url) as gw:
        h, user, fake = gw.harness, new_user(), gw.alpaca.fake
        _, paper = await h.paper_account(user)
        live = await gw.connect(user, fake.add_account())
        linked = await gw.connect(user, fake.add_account(), broker=LINKED)
        await gw.connect(new_user(), fake.add_account(), broker=LINKED)  # someone else's

        response = await h.client.get("/v1/accounts", headers=h.auth(user))

        assert response.status_code == 200
        items = {a["id"]: a for a in response.json()["items"]}
        assert list(items) == [paper, live, linked]  # oldest first, nobody else's
        assert {a: (i["tier"], i["label"], i["can_trade"]) for a, i in items.items()} == {
            paper: ("paper", "Paper", True),
            live: ("A", "Live", True),
            linked: ("C", "Linked", False),
        }
        assert (items[linked]["broker"], items[linked]["mode"]) == (LINKED, "live")
        single = await h.client.get(f"/v1/accounts/{linked}", headers=h.auth(user))
        assert single.json() == items[linked]

        connection = (
            await h.client.get(
                f"/v1/connections/{items[linked]['connection_id']}", headers=h.auth(user)
            )
        ).json()
        assert (connection["label"], connection["display"]) == (
            "Linked",
            "Linked: Alpaca (read-only)",
        )
        async with h.state.ctx.sessionmaker() as session:
            token = (
                await session.execute(
                    select(BrokerToken).where(BrokerToken.connection_id == connection["id"])
                )
            ).scalar_one()
        assert (token.broker_tier, token.no_order_write) == ("tier_c", True)

        # Readable, never tradable.
        balances = await h.client.get(f"/v1/accounts/{linked}/balances", headers=h.auth(user))
        assert balances.status_code == 200
        refused = await h.place(user, linked)
        assert refused.status_code == 403
        assert refused.json()["code"] == "read_only_account"
