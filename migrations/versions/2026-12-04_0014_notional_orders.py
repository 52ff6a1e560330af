"""notional orders and broker environments per connection

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 19:40:00.000000

``orders.notional`` holds the amount the caller asked for (ISSUE 15 item 3); ``quantity``
is then what the broker reports as filled. ``connections.environment`` is ``live`` or the
broker's own paper/sandbox environment the connection was made in (item 5); the accounts
of such a connection are ``mode`` ``sandbox``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db.types

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("notional", app.db.types.Money(), nullable=True))
    with op.batch_alter_table("connections") as batch:
        batch.add_column(
            sa.Column("environment", sa.String(length=10), nullable=False, server_default="live")
        )
    with op.batch_alter_table("accounts") as batch:
        batch.drop_constraint(op.f("ck_accounts_mode"), type_="check")
        batch.create_check_constraint(
            op.f("ck_accounts_mode"), "mode IN ('paper', 'live', 'sandbox')"
        )


def downgrade() -> None:
    # Fails while sandbox accounts exist: they must not come back as live ones.
    with op.batch_alter_table("accounts") as batch:
        batch.drop_constraint(op.f("ck_accounts_mode"), type_="check")
        batch.create_check_constraint(op.f("ck_accounts_mode"), "mode IN ('paper', 'live')")
    with op.batch_alter_table("connections") as batch:
        batch.drop_column("environment")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("notional")
