"""paper order forms: cash or margin accounts, short sales, dollar-amount orders

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 20:00:00.000000

Paper accounts get a type (``cash``, the default and what every existing account was, or
``margin``) and ``short_requirement``, the Reg T initial requirement (150% of the entry
value) held in buying power against short stock. Orders gain ``notional`` (a dollar-amount
market order).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db.types

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("paper_accounts") as batch_op:
        batch_op.add_column(
            sa.Column("account_type", sa.String(length=6), nullable=False, server_default="cash")
        )
        batch_op.add_column(
            sa.Column("short_requirement", app.db.types.Money(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("paper_orders") as batch_op:
        batch_op.add_column(sa.Column("notional", app.db.types.Money(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("paper_orders") as batch_op:
        batch_op.drop_column("notional")
    with op.batch_alter_table("paper_accounts") as batch_op:
        batch_op.drop_column("short_requirement")
        batch_op.drop_column("account_type")
