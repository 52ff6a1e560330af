"""outbox triggers: the ordering lock and the NOTIFY of order_events move into Postgres

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 07:20:00.000000

Until now every writer of ``order_events`` took ``pg_advisory_xact_lock`` before its insert
and called ``pg_notify`` after it, from ORM hooks: three round trips per append. A
statement-level ``BEFORE INSERT`` trigger takes the same lock before any row's id is drawn
(Postgres fires it before the executor forms the first row, so the sequence value comes
after the lock), and an ``AFTER INSERT`` trigger announces the highest inserted id through
the statement's transition table. One round trip per append, and no writer can forget
either step. SQLite has neither and needs neither (one writer; see app/streaming/outbox.py).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The lock key and the channel are app/streaming/outbox.py's OUTBOX_LOCK_KEY (as a decimal
# bigint) and OUTBOX_CHANNEL; tests/streaming/test_outbox_triggers.py fails if they drift.


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION order_events_outbox_lock() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_advisory_xact_lock(8030591472425067894);
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER order_events_outbox_lock
        BEFORE INSERT ON order_events
        FOR EACH STATEMENT EXECUTE FUNCTION order_events_outbox_lock()
        """
    )
    op.execute(
        """
        CREATE FUNCTION order_events_outbox_notify() RETURNS trigger
        LANGUAGE plpgsql AS $$
        DECLARE
            highest bigint;
        BEGIN
            SELECT max(id) INTO highest FROM inserted;
            IF highest IS NOT NULL THEN
                PERFORM pg_notify('brokerage_order_events', highest::text);
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER order_events_outbox_notify
        AFTER INSERT ON order_events
        REFERENCING NEW TABLE AS inserted
        FOR EACH STATEMENT EXECUTE FUNCTION order_events_outbox_notify()
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER order_events_outbox_notify ON order_events")
    op.execute("DROP FUNCTION order_events_outbox_notify()")
    op.execute("DROP TRIGGER order_events_outbox_lock ON order_events")
    op.execute("DROP FUNCTION order_events_outbox_lock()")
