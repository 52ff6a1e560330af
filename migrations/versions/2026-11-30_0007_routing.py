"""routing: per-user routing rules, order routes and their attempts (POST /v1/orders)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 03:47:12.813041

Each attempt of a route at a broker has its own order row (its own client order id), so
reconciliation stays per broker; ``route_attempts`` groups those rows under one route and
also records attempts refused before any order row was written (``order_id`` NULL).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db.types

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "order_routes",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("selection", sa.String(length=10), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("asset_class", sa.String(length=12), nullable=False),
        sa.Column("request_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("decision", sa.JSON(), nullable=False),
        sa.Column("created_at", app.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "asset_class IN ('equity', 'option', 'crypto', 'mutual_fund')",
            name=op.f("ck_order_routes_asset_class"),
        ),
        sa.CheckConstraint("mode IN ('live', 'paper')", name=op.f("ck_order_routes_mode")),
        sa.CheckConstraint(
            "selection IN ('auto', 'explicit')", name=op.f("ck_order_routes_selection")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_routes")),
    )
    with op.batch_alter_table("order_routes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_order_routes_user_id_created_at"),
            ["user_id", "created_at"],
            unique=False,
        )

    op.create_table(
        "routing_rules",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("asset_class", sa.String(length=12), nullable=False),
        sa.Column("account_ids", sa.JSON(), nullable=False),
        sa.Column("created_at", app.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "asset_class IN ('equity', 'option', 'crypto', 'mutual_fund')",
            name=op.f("ck_routing_rules_asset_class"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_routing_rules")),
        sa.UniqueConstraint(
            "user_id", "asset_class", name=op.f("uq_routing_rules_user_id_asset_class")
        ),
    )
    op.create_table(
        "route_attempts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("route_id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("broker_slug", sa.String(length=40), nullable=False),
        sa.Column("order_id", sa.String(length=40), nullable=True),
        sa.Column("outcome", sa.String(length=10), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=True),
        sa.Column("detail", sa.String(length=500), nullable=True),
        sa.Column("created_at", app.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "outcome IN ('pending', 'accepted', 'rejected', 'not_sent', 'unknown', 'skipped')",
            name=op.f("ck_route_attempts_outcome"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_route_attempts_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_route_attempts_order_id_orders")
        ),
        sa.ForeignKeyConstraint(
            ["route_id"], ["order_routes.id"], name=op.f("fk_route_attempts_route_id_order_routes")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_route_attempts")),
        sa.UniqueConstraint("order_id", name=op.f("uq_route_attempts_order_id")),
        sa.UniqueConstraint("route_id", "seq", name=op.f("uq_route_attempts_route_id_seq")),
    )
    with op.batch_alter_table("route_attempts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_route_attempts_user_id_created_at"),
            ["user_id", "created_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("route_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_route_attempts_user_id_created_at"))

    op.drop_table("route_attempts")
    op.drop_table("routing_rules")
    with op.batch_alter_table("order_routes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_order_routes_user_id_created_at"))

    op.drop_table("order_routes")
