"""platform tables, created only where missing

On an empty database this creates the AVIAN platform's tables exactly as CONTRACT.md describes.
On an existing platform database every one of them already exists and is left untouched: the
workers never alter the platform's schema, so each table (and its index) is created only when absent.

Revision ID: 0001
Revises:
Create Date: 2026-11-28 15:33:54.604922
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _missing(table: str) -> bool:
    return not sa.inspect(op.get_bind()).has_table(table)


def _index_missing(table: str, index: str) -> bool:
    return index not in {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes(table)}


def upgrade() -> None:
    if _missing('edr_posture_scores'):
        op.create_table('edr_posture_scores',
        sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
        sa.Column('tenant_id', sa.UUID(), nullable=False),
        sa.Column('score', sa.Integer(), nullable=False),
        sa.Column('device_count', sa.Integer(), nullable=True),
        sa.Column('high_risk_device_count', sa.Integer(), nullable=True),
        sa.Column('active_alert_count', sa.Integer(), nullable=True),
        sa.Column('critical_vulnerability_count', sa.Integer(), nullable=True),
        sa.Column('non_compliant_device_count', sa.Integer(), nullable=True),
        sa.Column('calculated_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=True),
        sa.CheckConstraint('score >= 0 AND score <= 100', name=op.f('ck_edr_posture_scores_score')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_edr_posture_scores'))
        )
    if _index_missing('edr_posture_scores', 'ix_edr_posture_scores_tenant_calculated'):
        op.create_index('ix_edr_posture_scores_tenant_calculated', 'edr_posture_scores', ['tenant_id', 'calculated_at'], unique=False)
    if _missing('edr_vulnerabilities'):
        op.create_table('edr_vulnerabilities',
        sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
        sa.Column('tenant_id', sa.UUID(), nullable=False),
        sa.Column('cve_id', sa.String(length=50), nullable=False),
        sa.Column('severity', sa.String(length=50), nullable=False),
        sa.Column('cvss_score', sa.Numeric(precision=3, scale=1), nullable=True),
        sa.Column('exploitability', sa.String(length=50), nullable=True),
        sa.Column('description', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_edr_vulnerabilities')),
        sa.UniqueConstraint('tenant_id', 'cve_id', name=op.f('uq_edr_vulnerabilities_tenant_id_cve_id'))
        )
    if _missing('tenants'):
        op.create_table('tenants',
        sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('domain', sa.String(length=255), nullable=False),
        sa.Column('logo_url', sa.Text(), nullable=True),
        sa.Column('theme_color', sa.String(length=7), nullable=True),
        sa.Column('settings', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column('is_active', sa.Boolean(), server_default=sa.text('true'), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_tenants')),
        sa.UniqueConstraint('domain', name=op.f('uq_tenants_domain'))
        )
    if _missing('users'):
        op.create_table('users',
        sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
        sa.Column('email', sa.String(length=255), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_users'))
        )
    if _missing('edr_devices'):
        op.create_table('edr_devices',
        sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
        sa.Column('tenant_id', sa.UUID(), nullable=False),
        sa.Column('microsoft_device_id', sa.String(length=255), nullable=False),
        sa.Column('device_name', sa.String(length=255), nullable=False),
        sa.Column('operating_system', sa.String(length=100), nullable=True),
        sa.Column('os_version', sa.String(length=100), nullable=True),
        sa.Column('primary_user', sa.String(length=255), nullable=True),
        sa.Column('defender_health_status', sa.String(length=50), nullable=True),
        sa.Column('risk_score', sa.Integer(), nullable=True),
        sa.Column('exposure_level', sa.String(length=50), nullable=True),
        sa.Column('intune_compliance_state', sa.String(length=50), nullable=True),
        sa.Column('intune_enrollment_status', sa.String(length=50), nullable=True),
        sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=True),
        sa.CheckConstraint('risk_score >= 0 AND risk_score <= 100', name=op.f('ck_edr_devices_risk_score')),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_edr_devices_tenant_id_tenants')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_edr_devices')),
        sa.UniqueConstraint('tenant_id', 'microsoft_device_id', name=op.f('uq_edr_devices_tenant_id_microsoft_device_id'))
        )
    if _missing('firewall_devices'):
        op.create_table('firewall_devices',
        sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
        sa.Column('tenant_id', sa.UUID(), nullable=False),
        sa.Column('model', sa.String(length=100), nullable=True),
        sa.Column('firmware_version', sa.String(length=50), nullable=True),
        sa.Column('serial_number', sa.String(length=100), nullable=True),
        sa.Column('management_ip', sa.String(length=45), nullable=False),
        sa.Column('api_username', sa.String(length=255), nullable=True),
        sa.Column('api_password_encrypted', sa.Text(), nullable=True),
        sa.Column('uptime_seconds', sa.BigInteger(), server_default=sa.text('0'), nullable=True),
        sa.Column('last_seen_at', sa.DateTime(), nullable=True),
        sa.Column('status', sa.String(length=20), server_default=sa.text("'active'"), nullable=True),
        sa.Column('created_at', sa.DateTime(), server_default=sa.text('now()'), nullable=True),
        sa.Column('updated_at', sa.DateTime(), server_default=sa.text('now()'), nullable=True),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_firewall_devices_tenant_id_tenants'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_firewall_devices')),
        sa.UniqueConstraint('serial_number', name=op.f('uq_firewall_devices_serial_number'))
        )
    if _missing('edr_alerts'):
        op.create_table('edr_alerts',
        sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
        sa.Column('tenant_id', sa.UUID(), nullable=False),
        sa.Column('device_id', sa.UUID(), nullable=True),
        sa.Column('microsoft_alert_id', sa.String(length=255), nullable=False),
        sa.Column('severity', sa.String(length=50), nullable=False),
        sa.Column('threat_type', sa.String(length=100), nullable=True),
        sa.Column('threat_name', sa.String(length=255), nullable=True),
        sa.Column('status', sa.String(length=50), nullable=True),
        sa.Column('description', sa.Text(), nullable=True),
        sa.Column('detected_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=True),
        sa.ForeignKeyConstraint(['device_id'], ['edr_devices.id'], name=op.f('fk_edr_alerts_device_id_edr_devices')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_edr_alerts')),
        sa.UniqueConstraint('tenant_id', 'microsoft_alert_id', name=op.f('uq_edr_alerts_tenant_id_microsoft_alert_id'))
        )
    if _missing('edr_compliance'):
        op.create_table('edr_compliance',
        sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
        sa.Column('tenant_id', sa.UUID(), nullable=False),
        sa.Column('device_id', sa.UUID(), nullable=False),
        sa.Column('compliance_state', sa.String(length=50), nullable=False),
        sa.Column('failed_rules', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column('security_baseline_status', sa.String(length=50), nullable=True),
        sa.Column('required_apps_status', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column('checked_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=True),
        sa.ForeignKeyConstraint(['device_id'], ['edr_devices.id'], name=op.f('fk_edr_compliance_device_id_edr_devices')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_edr_compliance')),
        sa.UniqueConstraint('tenant_id', 'device_id', name=op.f('uq_edr_compliance_tenant_id_device_id'))
        )
    if _missing('edr_device_vulnerabilities'):
        op.create_table('edr_device_vulnerabilities',
        sa.Column('device_id', sa.UUID(), nullable=False),
        sa.Column('vulnerability_id', sa.UUID(), nullable=False),
        sa.Column('detected_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['device_id'], ['edr_devices.id'], name=op.f('fk_edr_device_vulnerabilities_device_id_edr_devices')),
        sa.ForeignKeyConstraint(['vulnerability_id'], ['edr_vulnerabilities.id'], name=op.f('fk_edr_device_vulnerabilities_vulnerability_id_edr_vulnerabilities')),
        sa.PrimaryKeyConstraint('device_id', 'vulnerability_id', name=op.f('pk_edr_device_vulnerabilities'))
        )
    if _missing('firewall_alerts'):
        op.create_table('firewall_alerts',
        sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
        sa.Column('tenant_id', sa.UUID(), nullable=False),
        sa.Column('device_id', sa.UUID(), nullable=True),
        sa.Column('alert_type', sa.String(length=100), nullable=False),
        sa.Column('severity', sa.String(length=20), nullable=False),
        sa.Column('message', sa.Text(), nullable=False),
        sa.Column('source', sa.String(length=20), nullable=False),
        sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=True),
        sa.Column('acknowledged', sa.Boolean(), server_default=sa.text('false'), nullable=True),
        sa.Column('acknowledged_by', sa.UUID(), nullable=True),
        sa.Column('acknowledged_at', sa.DateTime(), nullable=True),
        sa.Column('created_at', sa.DateTime(), server_default=sa.text('now()'), nullable=True),
        sa.CheckConstraint("severity IN ('critical', 'high', 'medium', 'low', 'info')", name=op.f('ck_firewall_alerts_severity')),
        sa.CheckConstraint("source IN ('api', 'email')", name=op.f('ck_firewall_alerts_source')),
        sa.CheckConstraint('acknowledged = true OR (acknowledged_by IS NULL AND acknowledged_at IS NULL)', name=op.f('ck_firewall_alerts_acknowledged')),
        sa.ForeignKeyConstraint(['acknowledged_by'], ['users.id'], name=op.f('fk_firewall_alerts_acknowledged_by_users')),
        sa.ForeignKeyConstraint(['device_id'], ['firewall_devices.id'], name=op.f('fk_firewall_alerts_device_id_firewall_devices')),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_firewall_alerts_tenant_id_tenants')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_firewall_alerts'))
        )
    if _missing('firewall_metrics_rollup'):
        op.create_table('firewall_metrics_rollup',
        sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
        sa.Column('device_id', sa.UUID(), nullable=False),
        sa.Column('date', sa.Date(), nullable=False),
        sa.Column('threats_blocked', sa.Integer(), server_default=sa.text('0'), nullable=True),
        sa.Column('malware_blocked', sa.Integer(), server_default=sa.text('0'), nullable=True),
        sa.Column('ips_blocked', sa.Integer(), server_default=sa.text('0'), nullable=True),
        sa.Column('blocked_connections', sa.Integer(), server_default=sa.text('0'), nullable=True),
        sa.Column('web_filter_hits', sa.Integer(), server_default=sa.text('0'), nullable=True),
        sa.Column('bandwidth_total_mb', sa.BigInteger(), server_default=sa.text('0'), nullable=True),
        sa.Column('active_sessions_count', sa.Integer(), server_default=sa.text('0'), nullable=True),
        sa.Column('created_at', sa.DateTime(), server_default=sa.text('now()'), nullable=True),
        sa.CheckConstraint('active_sessions_count >= 0', name=op.f('ck_firewall_metrics_rollup_active_sessions_count')),
        sa.CheckConstraint('bandwidth_total_mb >= 0', name=op.f('ck_firewall_metrics_rollup_bandwidth_total_mb')),
        sa.CheckConstraint('blocked_connections >= 0', name=op.f('ck_firewall_metrics_rollup_blocked_connections')),
        sa.CheckConstraint('ips_blocked >= 0', name=op.f('ck_firewall_metrics_rollup_ips_blocked')),
        sa.CheckConstraint('malware_blocked >= 0', name=op.f('ck_firewall_metrics_rollup_malware_blocked')),
        sa.CheckConstraint('threats_blocked >= 0', name=op.f('ck_firewall_metrics_rollup_threats_blocked')),
        sa.CheckConstraint('web_filter_hits >= 0', name=op.f('ck_firewall_metrics_rollup_web_filter_hits')),
        sa.ForeignKeyConstraint(['device_id'], ['firewall_devices.id'], name=op.f('fk_firewall_metrics_rollup_device_id_firewall_devices'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_firewall_metrics_rollup')),
        sa.UniqueConstraint('device_id', 'date', name=op.f('uq_firewall_metrics_rollup_device_id_date'))
        )
    if _missing('firewall_security_posture'):
        op.create_table('firewall_security_posture',
        sa.Column('id', sa.UUID(), server_default=sa.text('gen_random_uuid()'), nullable=False),
        sa.Column('device_id', sa.UUID(), nullable=False),
        sa.Column('ips_enabled', sa.Boolean(), nullable=True),
        sa.Column('ips_license_status', sa.String(length=50), nullable=True),
        sa.Column('ips_daily_blocks', sa.Integer(), nullable=True),
        sa.Column('gav_enabled', sa.Boolean(), nullable=True),
        sa.Column('gav_license_status', sa.String(length=50), nullable=True),
        sa.Column('gav_daily_blocks', sa.Integer(), nullable=True),
        sa.Column('dpi_ssl_enabled', sa.Boolean(), nullable=True),
        sa.Column('dpi_ssl_certificate_status', sa.String(length=50), nullable=True),
        sa.Column('dpi_ssl_daily_blocks', sa.Integer(), nullable=True),
        sa.Column('atp_enabled', sa.Boolean(), nullable=True),
        sa.Column('atp_license_status', sa.String(length=50), nullable=True),
        sa.Column('atp_daily_verdicts', sa.Integer(), nullable=True),
        sa.Column('botnet_filter_enabled', sa.Boolean(), nullable=True),
        sa.Column('botnet_daily_blocks', sa.Integer(), nullable=True),
        sa.Column('app_control_enabled', sa.Boolean(), nullable=True),
        sa.Column('app_control_license_status', sa.String(length=50), nullable=True),
        sa.Column('app_control_daily_blocks', sa.Integer(), nullable=True),
        sa.Column('content_filter_enabled', sa.Boolean(), nullable=True),
        sa.Column('content_filter_license_status', sa.String(length=50), nullable=True),
        sa.Column('content_filter_daily_blocks', sa.Integer(), nullable=True),
        sa.Column('timestamp', sa.DateTime(), server_default=sa.text('now()'), nullable=True),
        sa.ForeignKeyConstraint(['device_id'], ['firewall_devices.id'], name=op.f('fk_firewall_security_posture_device_id_firewall_devices'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_firewall_security_posture'))
        )
    if _index_missing('firewall_security_posture', 'ix_firewall_security_posture_device_time'):
        op.create_index('ix_firewall_security_posture_device_time', 'firewall_security_posture', ['device_id', 'timestamp'], unique=False)


def downgrade() -> None:
    # The platform owns these tables once they exist; dropping them is never the workers' call.
    pass
