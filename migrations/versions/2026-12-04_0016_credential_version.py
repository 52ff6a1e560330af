"""credential version: a counter on the connection bumped by every credential change

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04 22:00:00.000000

``connections.credential_version`` is bumped in the transaction of every write that changes
which credential a connection opens or whether it may place orders (a new or replaced
token, an OAuth refresh, ``no_order_write``, revocation, the status becoming ``broken`` or
``revoked``). The in-memory credential cache (``app.security.credential_cache``) keys its
entries by it, so a changed credential is never served from memory even when the
notification that drops it on every instance is lost.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("connections") as batch_op:
        batch_op.add_column(
            sa.Column("credential_version", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("connections") as batch_op:
        batch_op.drop_column("credential_version")
