"""audit exercise: the audit chain records exercise instructions

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 19:30:00.000000

``POST /v1/accounts/{account_id}/positions/{symbol}/exercise`` is a live action on a
user-supplied credential like an order: it appends entries with the action ``exercise``.
The CHECK on ``audit_entries.action`` is widened (Postgres alters it; SQLite rebuilds the
table in batch mode, keeping its rows and hashes). Going down fails while an ``exercise``
entry exists, rather than delete a link of a chain.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = "ck_audit_entries_action"


def _replace(actions: tuple[str, ...]) -> None:
    listed = ", ".join(f"'{a}'" for a in actions)
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.drop_constraint(op.f(_NAME), type_="check")
        batch_op.create_check_constraint(op.f(_NAME), f"action IN ({listed})")


def upgrade() -> None:
    _replace(("place", "modify", "cancel", "exercise"))


def downgrade() -> None:
    _replace(("place", "modify", "cancel"))
