"""option orders: orders.position_effect, orders.price_effect, orders.legs

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 18:30:00.000000

A single-leg option order (and an equity short sale or cover) records whether it opens or
closes; a multi-leg order records its net price direction and its legs, each with its own
fills, as one JSON list (the legs are read and written with their order, never queried on
their own). Existing rows are plain orders: all three stay NULL.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("position_effect", sa.String(length=5), nullable=True))
        batch_op.add_column(sa.Column("price_effect", sa.String(length=6), nullable=True))
        batch_op.add_column(sa.Column("legs", sa.JSON(), nullable=True))
        batch_op.create_check_constraint(
            op.f("ck_orders_position_effect"), "position_effect IN ('open', 'close')"
        )
        batch_op.create_check_constraint(
            op.f("ck_orders_price_effect"), "price_effect IN ('debit', 'credit', 'even')"
        )


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_orders_price_effect"), type_="check")
        batch_op.drop_constraint(op.f("ck_orders_position_effect"), type_="check")
        batch_op.drop_column("legs")
        batch_op.drop_column("price_effect")
        batch_op.drop_column("position_effect")
