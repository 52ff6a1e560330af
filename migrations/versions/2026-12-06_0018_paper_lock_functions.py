"""paper account lock and position read in one round trip (Postgres functions)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 01:05:00.000000

An equity placement locks its paper account (``FOR UPDATE``) and then reads the position in
the order's symbol. The position must be read after the lock is held, in a snapshot taken
after it: in one plain statement, a placement that waited for the lock would see the
position as it was before the lock holder committed (Postgres re-checks only the locked
row after the wait). Two Postgres functions let one statement do both in that order:
``paper_account_locked`` takes the lock, and ``paper_position_now``, called per locked row
through ``LEFT JOIN LATERAL``, is ``VOLATILE``, so its query runs in a fresh snapshot (READ
COMMITTED), taken after the lock was granted (app/paper/store.py,
``PaperStore.core_account_and_position``). Both return their table's row type, so they
follow its columns. SQLite has no functions and needs none: its one writer
(``BEGIN IMMEDIATE``) serialises placements, which read with two statements.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION paper_account_locked(account_id text, account_owner text)
        RETURNS SETOF paper_accounts
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            RETURN QUERY
                SELECT * FROM paper_accounts
                WHERE id = account_id AND owner = account_owner
                FOR UPDATE;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION paper_position_now(account_id text, position_symbol text)
        RETURNS SETOF paper_positions
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            RETURN QUERY
                SELECT * FROM paper_positions
                WHERE paper_account_id = account_id AND symbol = position_symbol;
        END
        $$
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION paper_position_now(text, text)")
    op.execute("DROP FUNCTION paper_account_locked(text, text)")
