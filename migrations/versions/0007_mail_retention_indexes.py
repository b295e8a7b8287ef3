"""mail ledger and review: indexes for retention (by filing time, by age, cascade by ledger id)

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_mail_ledger_marked_at",
        "mail_ledger",
        ["marked_at"],
        unique=False,
        schema="avian_workers",
    )
    op.create_index(
        "ix_mail_review_created_at",
        "mail_review",
        ["created_at"],
        unique=False,
        schema="avian_workers",
    )
    op.create_index(
        "ix_mail_review_ledger_id",
        "mail_review",
        ["ledger_id"],
        unique=False,
        schema="avian_workers",
    )


def downgrade() -> None:
    op.drop_index("ix_mail_review_ledger_id", table_name="mail_review", schema="avian_workers")
    op.drop_index("ix_mail_review_created_at", table_name="mail_review", schema="avian_workers")
    op.drop_index("ix_mail_ledger_marked_at", table_name="mail_ledger", schema="avian_workers")
