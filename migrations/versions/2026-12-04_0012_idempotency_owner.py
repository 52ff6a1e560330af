"""idempotency owner: which process holds an in-flight Idempotency-Key

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 18:30:00.000000

A claim records the id of the process that made it (``owner``). When that process is gone
(it crashed or was killed mid-request), the next instance that starts, or the reconciler of
a running one, settles the key at once instead of leaving the retrying client on 409
``request_in_progress`` for the two-minute give-up. Rows claimed before this revision have
no owner and keep the old timing.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
# Branched from 0008; main has 0011 since (0009/0010 are other branches'): point this at
# the newest revision when merging.
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.add_column(sa.Column("owner", sa.String(length=64), nullable=True))
    op.create_index("ix_idempotency_keys_state_owner", "idempotency_keys", ["state", "owner"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_state_owner", table_name="idempotency_keys")
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_column("owner")
