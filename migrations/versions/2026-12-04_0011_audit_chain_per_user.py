"""audit chain per user: a ``chain`` column on entries and one head row per chain

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 18:30:00

One global chain head made every live order of every user wait on one row lock. From here
on each user's actions form their own chain (``user:<user id>``). The entries written
before are carried over unchanged, hashes and all, as the frozen ``global`` chain, which
verifies exactly as it did (its canonical content has no ``chain`` field); nothing is
appended to it again.

Both tables are rebuilt (copied out, recreated with the new primary keys, copied back)
because the primary keys change and SQLite cannot alter a primary key in place.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db.types

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _create_tables(*, per_chain: bool) -> None:
    key = [sa.Column("chain", sa.String(length=300), nullable=False)] if per_chain else []
    op.create_table(
        "audit_entries",
        *key,
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
        sa.PrimaryKeyConstraint(
            *(["chain", "seq"] if per_chain else ["seq"]), name=op.f("pk_audit_entries")
        ),
    )
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_entries_order_id"), ["order_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_audit_entries_user_id_seq"), ["user_id", "seq"], unique=False
        )
    if per_chain:
        op.create_table(
            "audit_chain_head",
            sa.Column("chain", sa.String(length=300), nullable=False),
            sa.Column("last_seq", sa.BigInteger(), nullable=False),
            sa.Column("last_hash", sa.String(length=64), nullable=False),
            sa.Column("updated_at", app.db.types.UTCDateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("chain", name=op.f("pk_audit_chain_head")),
        )
    else:
        op.create_table(
            "audit_chain_head",
            sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
            sa.Column("last_seq", sa.BigInteger(), nullable=False),
            sa.Column("last_hash", sa.String(length=64), nullable=False),
            sa.Column("updated_at", app.db.types.UTCDateTime(timezone=True), nullable=False),
            sa.CheckConstraint("id = 1", name=op.f("ck_audit_chain_head_single_row")),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_chain_head")),
        )


def _carry_out() -> None:
    op.execute("CREATE TABLE audit_entries_carry AS SELECT * FROM audit_entries")
    op.execute("CREATE TABLE audit_chain_head_carry AS SELECT * FROM audit_chain_head")
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_entries_user_id_seq"))
        batch_op.drop_index(batch_op.f("ix_audit_entries_order_id"))
    op.drop_table("audit_entries")
    op.drop_table("audit_chain_head")


def _drop_carry() -> None:
    op.drop_table("audit_entries_carry")
    op.drop_table("audit_chain_head_carry")


def upgrade() -> None:
    _carry_out()
    _create_tables(per_chain=True)
    op.execute(
        "INSERT INTO audit_entries (chain, seq, occurred_at, user_id, action, order_id, "
        "account_id, connection_id, broker_slug, request_fingerprint, outcome, prev_hash, "
        "entry_hash) "
        "SELECT 'global', seq, occurred_at, user_id, action, order_id, account_id, "
        "connection_id, broker_slug, request_fingerprint, outcome, prev_hash, entry_hash "
        "FROM audit_entries_carry"
    )
    op.execute(
        "INSERT INTO audit_chain_head (chain, last_seq, last_hash, updated_at) "
        "SELECT 'global', last_seq, last_hash, updated_at FROM audit_chain_head_carry"
    )
    _drop_carry()


def downgrade() -> None:
    per_user = op.get_bind().execute(
        sa.text("SELECT count(*) FROM audit_chain_head WHERE chain <> 'global'")
    )
    if per_user.scalar_one():
        raise RuntimeError(
            "per-user audit chains exist; they cannot be folded back into one global chain"
        )
    _carry_out()
    _create_tables(per_chain=False)
    op.execute(
        "INSERT INTO audit_entries (seq, occurred_at, user_id, action, order_id, account_id, "
        "connection_id, broker_slug, request_fingerprint, outcome, prev_hash, entry_hash) "
        "SELECT seq, occurred_at, user_id, action, order_id, account_id, connection_id, "
        "broker_slug, request_fingerprint, outcome, prev_hash, entry_hash "
        "FROM audit_entries_carry WHERE chain = 'global'"
    )
    op.execute(
        "INSERT INTO audit_chain_head (id, last_seq, last_hash, updated_at) "
        "SELECT 1, last_seq, last_hash, updated_at FROM audit_chain_head_carry"
    )
    _drop_carry()
