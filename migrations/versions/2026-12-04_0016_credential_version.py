"""credential version: a counter on the connection bumped by every credential change

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04 22:00:00.000000

``connections.credential_version`` counts the changes of which credential a connection
opens or whether it may place orders. The in-memory credential cache
(``app.security.credential_cache``) keys its entries by it, so a changed credential is never
served from memory, even when the notification that drops it on every instance is lost.

Triggers on ``broker_tokens`` count every such write, whoever makes it (the vault, a script,
an operator in psql): a new token, and an update of its ciphertext (replacement, OAuth
refresh), ``no_order_write``, ``revoked_at`` or tier. A re-wrap under a new key-encryption
key updates only the wrap columns and counts nothing (the plaintext is unchanged), so it
takes no lock on ``connections``. On Postgres the trigger also announces the connection id
on ``brokerage_credentials`` (``NOTIFY`` is sent at commit, never for a rollback); each
instance's LISTEN connection drops it from its cache. SQLite (one process) drops in process
at the commit (``app/security/credential_cache.py``). A connection turning ``broken`` or
``revoked`` is counted and announced by the ORM flush hook there.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# The channel is app/security/credential_cache.py's CREDENTIALS_CHANNEL;
# tests/services/test_credential_cache.py fails if they drift.
_COUNTED = "token_ciphertext, no_order_write, revoked_at, broker_tier"
_BUMP = (
    "UPDATE connections SET credential_version = credential_version + 1"
    " WHERE id = NEW.connection_id;"
)


def upgrade() -> None:
    with op.batch_alter_table("connections") as batch_op:
        batch_op.add_column(
            sa.Column("credential_version", sa.Integer(), nullable=False, server_default="0")
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""
            CREATE FUNCTION broker_tokens_credential_changed() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                {_BUMP}
                PERFORM pg_notify('brokerage_credentials', NEW.connection_id);
                RETURN NULL;
            END
            $$
            """
        )
        op.execute(
            f"""
            CREATE TRIGGER broker_tokens_credential_changed
            AFTER INSERT OR UPDATE OF {_COUNTED} ON broker_tokens
            FOR EACH ROW EXECUTE FUNCTION broker_tokens_credential_changed()
            """
        )
        return
    op.execute(
        f"""
        CREATE TRIGGER broker_tokens_credential_inserted AFTER INSERT ON broker_tokens
        BEGIN {_BUMP} END
        """
    )
    op.execute(
        f"""
        CREATE TRIGGER broker_tokens_credential_updated
        AFTER UPDATE OF {_COUNTED} ON broker_tokens
        BEGIN {_BUMP} END
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER broker_tokens_credential_changed ON broker_tokens")
        op.execute("DROP FUNCTION broker_tokens_credential_changed()")
    else:
        op.execute("DROP TRIGGER broker_tokens_credential_inserted")
        op.execute("DROP TRIGGER broker_tokens_credential_updated")
    with op.batch_alter_table("connections") as batch_op:
        batch_op.drop_column("credential_version")
