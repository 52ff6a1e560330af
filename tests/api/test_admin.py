"""Admin routes: audit chain verification and the connection health summary."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import update

from app.db.models import AuditEntry
from tests.conftest import new_user, own_database
from tests.harness import Harness
from tests.services.support import assert_problem, live_gateway


def admin_headers(h: Harness) -> dict[str, str]:
    return {"Authorization": f"Bearer {h.token(new_user('ops'), admin=True)}"}


async def test_audit_verify_names_the_first_bad_entry(db_url: str, tmp_path: Path) -> None:
    async with own_database(db_url, tmp_path) as url, live_gateway(url) as gw:
        h, user = gw.harness, new_user()
        _, account = await gw.connect_byob(user)
        for _ in range(2):
            assert (await h.place(user, account)).status_code == 201

        intact = await h.client.get("/v1/admin/audit/verify", headers=admin_headers(h))
        assert intact.status_code == 200
        body = intact.json()
        assert (body["ok"], body["entries_checked"], body["head_seq"]) == (True, 4, 4)
        assert (body["first_bad_seq"], body["problem"]) == (None, None)

        async with h.state.ctx.sessionmaker() as session:
            await session.execute(
                update(AuditEntry).where(AuditEntry.seq == 2).values(outcome="rejected")
            )
            await session.commit()
        broken = (await h.client.get("/v1/admin/audit/verify", headers=admin_headers(h))).json()
        assert (broken["ok"], broken["first_bad_seq"], broken["problem"]) == (
            False,
            2,
            "entry_altered",
        )
        assert broken["entries_checked"] == 1
        assert broken["chain"] == f"user:{user}"
        assert [(f["chain"], f["first_bad_seq"], f["problem"]) for f in broken["failures"]] == [
            (f"user:{user}", 2, "entry_altered")
        ]

        assert_problem(
            await h.client.get("/v1/admin/audit/verify", headers=h.auth(user)), 403, "forbidden"
        )
        assert (await h.client.get("/v1/admin/audit/verify")).status_code == 401


async def test_connection_health_counts_without_user_data(harness: Harness) -> None:
    user = new_user("private")
    connection, _account = await harness.paper_account(user)
    response = await harness.client.get(
        "/v1/admin/connections/health", headers=admin_headers(harness)
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"items", "as_of"}
    assert all(set(row) == {"broker", "status", "count"} for row in body["items"])
    assert user not in response.text
    assert connection not in response.text
    assert sum(r["count"] for r in body["items"] if r["broker"] == "paper") >= 1
