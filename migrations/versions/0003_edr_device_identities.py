"""edr device identities: stable keys for merged Defender and Intune devices

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "edr_device_identities",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("source_id", sa.String(length=255), nullable=False),
        sa.Column("microsoft_device_id", sa.String(length=255), nullable=False),
        sa.Column("aad_device_id", sa.String(length=255), nullable=True),
        sa.Column("hostname", sa.String(length=255), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("source IN ('defender', 'intune')", name=op.f("ck_edr_device_identities_source")),
        sa.PrimaryKeyConstraint("tenant_id", "source", "source_id", name=op.f("pk_edr_device_identities")),
        schema="avian_workers",
    )


def downgrade() -> None:
    op.drop_table("edr_device_identities", schema="avian_workers")
