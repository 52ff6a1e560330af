"""audit chain: live BYOB order actions, HMAC-chained, and the one-row chain head

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 03:13:01.586758

The head row (id 1, seq 0, the genesis hash) is created here and never lazily: an
application that finds it missing refuses to append rather than start a new, unanchored
chain.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import app.db.types

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS_HASH = "0" * 64


def upgrade() -> None:
    head = op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.Column("updated_at", app.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_audit_chain_head_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_chain_head")),
    )
    op.create_table(
        "audit_entries",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("occurred_at", app.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column("order_id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("connection_id", sa.String(length=40), nullable=False),
        sa.Column("broker_slug", sa.String(length=40), nullable=False),
        sa.Column("request_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=80), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.CheckConstraint(
            "action IN ('place', 'modify', 'cancel')", name=op.f("ck_audit_entries_action")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_entries")),
    )
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_entries_order_id"), ["order_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_audit_entries_user_id_seq"), ["user_id", "seq"], unique=False
        )
    op.bulk_insert(
        head,
        [{"id": 1, "last_seq": 0, "last_hash": GENESIS_HASH, "updated_at": datetime.now(UTC)}],
    )


def downgrade() -> None:
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_entries_user_id_seq"))
        batch_op.drop_index(batch_op.f("ix_audit_entries_order_id"))
    op.drop_table("audit_entries")
    op.drop_table("audit_chain_head")
