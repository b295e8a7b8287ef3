"""edr device identities: when each Defender machine or Intune device was last seen

Revision ID: 0008
Revises: 0007

A device can have several records of one source (Defender keeps the old machine of a
re-onboarded PC, Intune an old enrolment); the row shows the one seen last, so the store needs
each record's own lastSeen / lastSyncDateTime to compare a later page's record with. Existing
identities start unknown (NULL, which never beats a known time); the next poll fills them in.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "edr_device_identities",
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        schema="avian_workers",
    )


def downgrade() -> None:
    op.drop_column("edr_device_identities", "last_seen_at", schema="avian_workers")
