"""edr secure scores: Microsoft Secure Score per tenant and day

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "edr_secure_scores",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("score_date", sa.Date(), nullable=False),
        sa.Column("current_score", sa.Numeric(precision=10, scale=2), nullable=False),
        sa.Column("max_score", sa.Numeric(precision=10, scale=2), nullable=True),
        sa.Column("active_user_count", sa.Integer(), nullable=True),
        sa.Column("licensed_user_count", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "score_date", name=op.f("pk_edr_secure_scores")),
        schema="avian_workers",
    )


def downgrade() -> None:
    op.drop_table("edr_secure_scores", schema="avian_workers")
