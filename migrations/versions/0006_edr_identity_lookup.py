"""edr device identities: compared forms and indexes, so a page is resolved in SQL

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "edr_device_identities"
_SCHEMA = "avian_workers"


def upgrade() -> None:
    op.add_column(_TABLE, sa.Column("source_key", sa.String(length=255), nullable=True), schema=_SCHEMA)
    op.add_column(_TABLE, sa.Column("aad_key", sa.String(length=255), nullable=True), schema=_SCHEMA)
    op.add_column(_TABLE, sa.Column("host_label", sa.String(length=255), nullable=True), schema=_SCHEMA)
    # Stored ids are hex and GUIDs and stored host names already lower case (edr.normalize), so
    # SQL's lower/btrim gives what edr.merge.folded_id / host_label would; the next poll of each
    # device rewrites them from Python anyway.
    op.execute(
        "UPDATE avian_workers.edr_device_identities SET "
        "source_key = lower(btrim(source_id)), "
        "aad_key = lower(btrim(aad_device_id)), "
        "host_label = NULLIF(split_part(rtrim(lower(btrim(hostname)), '.'), '.', 1), '')"
    )
    op.alter_column(_TABLE, "source_key", nullable=False, schema=_SCHEMA)
    op.create_index(
        "ix_edr_device_identities_source_key", _TABLE, ["tenant_id", "source", "source_key"], schema=_SCHEMA
    )
    op.create_index("ix_edr_device_identities_aad_key", _TABLE, ["tenant_id", "aad_key"], schema=_SCHEMA)
    op.create_index("ix_edr_device_identities_host_label", _TABLE, ["tenant_id", "host_label"], schema=_SCHEMA)
    op.create_index(
        "ix_edr_device_identities_device", _TABLE, ["tenant_id", "microsoft_device_id"], schema=_SCHEMA
    )


def downgrade() -> None:
    for name in ("device", "host_label", "aad_key", "source_key"):
        op.drop_index(f"ix_edr_device_identities_{name}", table_name=_TABLE, schema=_SCHEMA)
    for column in ("host_label", "aad_key", "source_key"):
        op.drop_column(_TABLE, column, schema=_SCHEMA)
