"""notional orders: the dollar amount of an order placed by amount instead of quantity

Revision ID: 0014
Revises: 0012
Create Date: 2026-12-04 19:40:00.000000

``orders.notional`` holds the amount the caller asked for (ISSUE 15 item 3); ``quantity``
is then what the broker reports as filled.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db.types

revision: str = "0014"
# 0013 (audit_exercise) is on another branch, not yet on main: point this at "0013" when
# merging it.
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("notional", app.db.types.Money(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("notional")
