"""oauth states

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db.types

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "oauth_states",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("state_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("broker_slug", sa.String(length=40), nullable=False),
        sa.Column("browser_hash", sa.String(length=64), nullable=False),
        sa.Column("verifier_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("verifier_wrapped_key", sa.LargeBinary(), nullable=True),
        sa.Column("verifier_key_version", sa.Integer(), nullable=True),
        sa.Column("redirect_uri", sa.String(length=2000), nullable=False),
        sa.Column("return_to", sa.String(length=2000), nullable=False),
        sa.Column("created_at", app.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", app.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("consumed_at", app.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_states")),
        sa.UniqueConstraint("state_hash", name=op.f("uq_oauth_states_state_hash")),
    )
    with op.batch_alter_table("oauth_states", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_oauth_states_expires_at"), ["expires_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_oauth_states_user_id_expires_at"),
            ["user_id", "expires_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("oauth_states", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oauth_states_user_id_expires_at"))
        batch_op.drop_index(batch_op.f("ix_oauth_states_expires_at"))

    op.drop_table("oauth_states")
