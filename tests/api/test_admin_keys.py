"""``GET /v1/admin/keys``: admins see the rotation's progress; nobody else does."""

from __future__ import annotations

from tests.conftest import new_user
from tests.harness import Harness


async def test_key_status_is_for_admins_only(harness: Harness) -> None:
    anonymous = await harness.client.get("/v1/admin/keys")
    assert anonymous.status_code == 401
    user = await harness.client.get("/v1/admin/keys", headers=harness.auth(new_user()))
    assert user.status_code == 403
    assert user.json()["code"] == "forbidden"

    token = harness.token(new_user("ops"), admin=True)
    got = await harness.client.get("/v1/admin/keys", headers={"Authorization": f"Bearer {token}"})
    assert got.status_code == 200
    body = got.json()
    assert body["primary_version"] == 1
    assert body["min_decryption_version"] == 1
    assert body["rewrap_running_here"] is False
    assert isinstance(body["pending_rewrap"], int)
    assert all(set(row) == {"version", "tokens"} for row in body["tokens_by_version"])
