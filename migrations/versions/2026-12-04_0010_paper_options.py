"""paper options: collateral, pledged shares, option expiry, legs and expiry events

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 18:30:00.000000

The paper broker trades options. Accounts hold cash against short option positions
(``collateral_cash``); stock positions pledge shares to covered calls (``pledged_quantity``);
option positions carry their expiry instant (``expires_at``, indexed: the ticker settles
what has expired). Orders gain ``position_effect``, ``price_effect``, ``legs`` and ``kind``
(the orders the paper broker makes at expiry); fills gain ``kind``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db.types

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("paper_accounts") as batch_op:
        batch_op.add_column(
            sa.Column("collateral_cash", app.db.types.Money(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("paper_positions") as batch_op:
        batch_op.add_column(
            sa.Column("pledged_quantity", app.db.types.Money(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("expires_at", app.db.types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(
            batch_op.f("ix_paper_positions_expires_at"), ["expires_at"], unique=False
        )
    with op.batch_alter_table("paper_orders") as batch_op:
        batch_op.add_column(sa.Column("position_effect", sa.String(length=5), nullable=True))
        batch_op.add_column(sa.Column("price_effect", sa.String(length=6), nullable=True))
        batch_op.add_column(sa.Column("legs", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("kind", sa.String(length=24), nullable=True))
    with op.batch_alter_table("paper_fills") as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=24), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("paper_fills") as batch_op:
        batch_op.drop_column("kind")
    with op.batch_alter_table("paper_orders") as batch_op:
        batch_op.drop_column("kind")
        batch_op.drop_column("legs")
        batch_op.drop_column("price_effect")
        batch_op.drop_column("position_effect")
    with op.batch_alter_table("paper_positions") as batch_op:
        batch_op.drop_index(batch_op.f("ix_paper_positions_expires_at"))
        batch_op.drop_column("expires_at")
        batch_op.drop_column("pledged_quantity")
    with op.batch_alter_table("paper_accounts") as batch_op:
        batch_op.drop_column("collateral_cash")
