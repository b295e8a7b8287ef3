"""workers state tables in the avian_workers schema

Revision ID: 0001
Revises: 0001
Create Date: 2026-11-28 15:33:54.604922
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('edr_sync_state',
    sa.Column('tenant_id', sa.UUID(), nullable=False),
    sa.Column('dataset', sa.String(length=50), nullable=False),
    sa.Column('watermark', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_success_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('tenant_id', 'dataset', name=op.f('pk_edr_sync_state')),
    schema='avian_workers'
    )
    op.create_table('mail_ledger',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('message_key', sa.Text(), nullable=False),
    sa.Column('raw_sha256', sa.String(length=64), nullable=False),
    sa.Column('mailbox', sa.String(length=512), nullable=False),
    sa.Column('uidvalidity', sa.BigInteger(), nullable=True),
    sa.Column('uid', sa.BigInteger(), nullable=True),
    sa.Column('outcome', sa.String(length=20), nullable=False),
    sa.Column('alert_count', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('detail', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('processed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('marked_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("outcome IN ('alert', 'suppressed', 'review')", name=op.f('ck_mail_ledger_outcome')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mail_ledger')),
    sa.UniqueConstraint('message_key', 'raw_sha256', name=op.f('uq_mail_ledger_message_key_raw_sha256')),
    schema='avian_workers'
    )
    op.create_table('worker_runs',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('worker_type', sa.String(length=50), nullable=False),
    sa.Column('flow_run_id', sa.UUID(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('summary', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_worker_runs')),
    schema='avian_workers'
    )
    op.create_index('ix_worker_runs_type_started', 'worker_runs', ['worker_type', 'started_at'], unique=False, schema='avian_workers')
    op.create_table('mail_review',
    sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('ledger_id', sa.BigInteger(), nullable=False),
    sa.Column('reason', sa.String(length=50), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('subject', sa.Text(), nullable=True),
    sa.Column('sender', sa.Text(), nullable=True),
    sa.Column('message_id', sa.Text(), nullable=True),
    sa.Column('parsed', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('raw', sa.LargeBinary(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['ledger_id'], ['avian_workers.mail_ledger.id'], name=op.f('fk_mail_review_ledger_id_mail_ledger'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mail_review')),
    schema='avian_workers'
    )
    op.create_index('ix_mail_review_open', 'mail_review', ['created_at'], unique=False, schema='avian_workers', postgresql_where=sa.text('resolved_at IS NULL'))
    op.create_table('firewall_host_aliases',
    sa.Column('hostname', sa.String(length=255), nullable=False),
    sa.Column('device_id', sa.UUID(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('hostname = lower(hostname)', name=op.f('ck_firewall_host_aliases_hostname_lowercase')),
    sa.ForeignKeyConstraint(['device_id'], ['firewall_devices.id'], name=op.f('fk_firewall_host_aliases_device_id_firewall_devices'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('hostname', 'device_id', name=op.f('pk_firewall_host_aliases')),
    schema='avian_workers'
    )
    op.create_table('alert_storms',
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('alert_id', sa.UUID(), nullable=False),
    sa.Column('first_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('occurrences', sa.Integer(), server_default=sa.text('1'), nullable=False),
    sa.ForeignKeyConstraint(['alert_id'], ['firewall_alerts.id'], name=op.f('fk_alert_storms_alert_id_firewall_alerts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('fingerprint', name=op.f('pk_alert_storms')),
    schema='avian_workers'
    )


def downgrade() -> None:
    op.drop_table('alert_storms', schema='avian_workers')
    op.drop_table('firewall_host_aliases', schema='avian_workers')
    op.drop_table('mail_review', schema='avian_workers')
    op.drop_table('worker_runs', schema='avian_workers')
    op.drop_table('mail_ledger', schema='avian_workers')
    op.drop_table('edr_sync_state', schema='avian_workers')
