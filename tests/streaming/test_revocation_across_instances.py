"""A connection revoked on one instance refuses the very next order on every instance.

Two instances of one deployment on one Postgres (A and B). Both have placed on the
connection (whatever either keeps in memory for it is warm); the user deletes it on A; the
next order is refused on B as on A. Anything cached per connection (its spec, its opened
credential) must not outlive the revocation on any instance.
"""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import new_user
from tests.streaming.support import Instance

pytestmark = pytest.mark.postgres_only


async def test_a_revoked_connection_refuses_the_next_order_on_both_instances(
    pg_a: Instance, pg_b: Instance
) -> None:
    user = new_user()
    created = await pg_a.http.post(
        "/v1/connections",
        json={"broker": "paper", "options": {"starting_cash": "100000"}},
        headers=pg_a.auth(user),
    )
    assert created.status_code == 201, created.text
    connection, account = created.json()["id"], created.json()["accounts"][0]
    await pg_a.place(user, account)
    await pg_b.place(user, account)

    deleted = await pg_a.http.delete(f"/v1/connections/{connection}", headers=pg_a.auth(user))
    assert deleted.status_code == 204, deleted.text

    for instance in (pg_b, pg_a):
        refused = await instance.http.post(
            f"/v1/accounts/{account}/orders",
            json={"symbol": "AAPL", "side": "buy", "quantity": "1", "order_type": "market"},
            headers=instance.auth(user, **{"Idempotency-Key": uuid.uuid4().hex}),
        )
        assert refused.status_code in (404, 409), refused.text
        assert refused.json()["code"] in ("not_found", "connection_broken"), refused.text
