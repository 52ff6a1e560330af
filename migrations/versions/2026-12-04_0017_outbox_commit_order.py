"""outbox ids drawn at commit: the ordering lock no longer spans the client's commit round trip

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 22:30:00.000000

Until now (0008) every insert into ``order_events`` took ``pg_advisory_xact_lock`` in a
statement-level ``BEFORE INSERT`` trigger and held it until commit, so the hold spanned the
insert, the answer's way back to the application, the application's turn to send COMMIT and
the commit itself: every order transaction of every user queued there for a client round
trip. Now a row gets a provisional, negative id from ``order_events_provisional_id_seq`` at
insert, and a ``DEFERRABLE INITIALLY DEFERRED`` constraint trigger, which Postgres runs
inside COMMIT before the commit record is written, takes the same lock, gives the row its
reader-visible id from ``order_events_id_seq`` and announces it. The lock is held only for
the server-side end of the commit; the guarantee (ids become visible in id order) is the
same, see app/streaming/outbox.py. SQLite has neither and needs neither.

down_revision is 0016 (the credential version), the head on main when this was rebased.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The lock key and the channel are app/streaming/outbox.py's OUTBOX_LOCK_KEY (as a decimal
# bigint) and OUTBOX_CHANNEL; tests/streaming/test_outbox_triggers.py fails if they drift.


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE SEQUENCE order_events_provisional_id_seq AS bigint
        INCREMENT BY -1 MINVALUE -9223372036854775807 MAXVALUE -1 START WITH -1
        OWNED BY order_events.id
        """
    )
    op.execute(
        "ALTER TABLE order_events ALTER COLUMN id "
        "SET DEFAULT nextval('order_events_provisional_id_seq')"
    )
    op.execute("DROP TRIGGER order_events_outbox_notify ON order_events")
    op.execute("DROP FUNCTION order_events_outbox_notify()")
    op.execute("DROP TRIGGER order_events_outbox_lock ON order_events")
    op.execute("DROP FUNCTION order_events_outbox_lock()")
    op.execute(
        """
        CREATE FUNCTION order_events_outbox_publish() RETURNS trigger
        LANGUAGE plpgsql AS $$
        DECLARE
            published bigint := NEW.id;
        BEGIN
            PERFORM pg_advisory_xact_lock(8030591472425067894);
            IF NEW.id < 0 THEN
                published := nextval('order_events_id_seq');
                UPDATE order_events SET id = published WHERE id = NEW.id;
            END IF;
            PERFORM pg_notify('brokerage_order_events', published::text);
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE CONSTRAINT TRIGGER order_events_outbox_publish
        AFTER INSERT ON order_events
        DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW EXECUTE FUNCTION order_events_outbox_publish()
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER order_events_outbox_publish ON order_events")
    op.execute("DROP FUNCTION order_events_outbox_publish()")
    op.execute(
        "ALTER TABLE order_events ALTER COLUMN id SET DEFAULT nextval('order_events_id_seq')"
    )
    op.execute("DROP SEQUENCE order_events_provisional_id_seq")
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
