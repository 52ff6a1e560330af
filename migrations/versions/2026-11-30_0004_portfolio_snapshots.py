"""portfolio snapshots: the last good read of each account for GET /v1/portfolio

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db.types

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "portfolio_snapshots",
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("cash", app.db.types.Money(), nullable=False),
        sa.Column("equity", app.db.types.Money(), nullable=False),
        sa.Column("buying_power", app.db.types.Money(), nullable=False),
        sa.Column("positions", sa.JSON(), nullable=False),
        sa.Column("taken_at", app.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_portfolio_snapshots_account_id_accounts"),
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_portfolio_snapshots")),
    )
    with op.batch_alter_table("portfolio_snapshots", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_portfolio_snapshots_user_id"), ["user_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("portfolio_snapshots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_portfolio_snapshots_user_id"))

    op.drop_table("portfolio_snapshots")
