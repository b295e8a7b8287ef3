"""mail ledger: partial index of messages committed but not yet filed in the mailbox

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_mail_ledger_unfiled",
        "mail_ledger",
        ["mailbox", "uidvalidity"],
        unique=False,
        schema="avian_workers",
        postgresql_where=sa.text("marked_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_mail_ledger_unfiled", table_name="mail_ledger", schema="avian_workers")
