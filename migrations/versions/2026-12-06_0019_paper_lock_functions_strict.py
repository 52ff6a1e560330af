"""paper lock functions STRICT: a NULL account id calls nothing

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06 06:20:00.000000

Every placement's first statement (``AccountRepository.get_locking_paper``) joins
``paper_account_locked`` and ``paper_position_now`` laterally, with a NULL account id unless
the connection is on the paper broker. ``STRICT`` makes Postgres answer a call with a NULL
argument with no rows without running the function
(https://www.postgresql.org/docs/15/sql-createfunction.html, "RETURNS NULL ON NULL INPUT or
STRICT"), so a live order's read pays nothing for the paper lock. The results are the
same: a NULL id or owner matched no row before either.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTIONS = ("paper_account_locked(text, text)", "paper_position_now(text, text)")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for function in FUNCTIONS:
        op.execute(f"ALTER FUNCTION {function} STRICT")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for function in FUNCTIONS:
        op.execute(f"ALTER FUNCTION {function} CALLED ON NULL INPUT")
