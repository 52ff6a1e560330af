"""credential rotation: connections.rotation_due_at, an index on broker_tokens.rotate_after

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db.types

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("rotation_due_at", app.db.types.UTCDateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("broker_tokens", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_broker_tokens_rotate_after"), ["rotate_after"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("broker_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_broker_tokens_rotate_after"))
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.drop_column("rotation_due_at")
