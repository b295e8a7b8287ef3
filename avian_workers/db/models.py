"""SQLAlchemy models: the platform's tables as CONTRACT.md fixes them, and the workers' own state.

The platform owns everything in the default schema; the workers read and write it but never
change its shape. The workers' own tables live in the `avian_workers` schema so their names can
never clash with the platform's.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

WORKERS_SCHEMA = "avian_workers"

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

_NOW = text("now()")


def _uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )


def _tz() -> DateTime:
    return DateTime(timezone=True)


def _naive() -> DateTime:
    return DateTime(timezone=False)


class Base(DeclarativeBase):
    """Declarative base for every table the workers touch."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# --- Platform tables (owned by the AVIAN web application) -------------------------------------


class User(Base):
    """Platform users; the workers only need the key that `firewall_alerts` refers to."""

    __tablename__ = "users"
    id: Mapped[uuid.UUID] = _uuid_pk()
    email: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime | None] = mapped_column(_tz(), server_default=_NOW)


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[uuid.UUID] = _uuid_pk()
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    domain: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    logo_url: Mapped[str | None] = mapped_column(Text)
    theme_color: Mapped[str | None] = mapped_column(String(7))
    settings: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    created_at: Mapped[datetime | None] = mapped_column(_tz(), server_default=_NOW)
    updated_at: Mapped[datetime | None] = mapped_column(_tz(), server_default=_NOW)


class FirewallDevice(Base):
    __tablename__ = "firewall_devices"
    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    )
    model: Mapped[str | None] = mapped_column(String(100))
    firmware_version: Mapped[str | None] = mapped_column(String(50))
    serial_number: Mapped[str | None] = mapped_column(String(100), unique=True)
    management_ip: Mapped[str] = mapped_column(String(45), nullable=False)
    api_username: Mapped[str | None] = mapped_column(String(255))
    api_password_encrypted: Mapped[str | None] = mapped_column(Text)
    uptime_seconds: Mapped[int | None] = mapped_column(BigInteger, server_default=text("0"))
    last_seen_at: Mapped[datetime | None] = mapped_column(_naive())
    status: Mapped[str | None] = mapped_column(String(20), server_default=text("'active'"))
    created_at: Mapped[datetime | None] = mapped_column(_naive(), server_default=_NOW)
    updated_at: Mapped[datetime | None] = mapped_column(_naive(), server_default=_NOW)


class FirewallSecurityPosture(Base):
    __tablename__ = "firewall_security_posture"
    __table_args__ = (Index("ix_firewall_security_posture_device_time", "device_id", "timestamp"),)
    id: Mapped[uuid.UUID] = _uuid_pk()
    device_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("firewall_devices.id", ondelete="CASCADE"), nullable=False
    )
    ips_enabled: Mapped[bool | None] = mapped_column(Boolean)
    ips_license_status: Mapped[str | None] = mapped_column(String(50))
    ips_daily_blocks: Mapped[int | None] = mapped_column(Integer)
    gav_enabled: Mapped[bool | None] = mapped_column(Boolean)
    gav_license_status: Mapped[str | None] = mapped_column(String(50))
    gav_daily_blocks: Mapped[int | None] = mapped_column(Integer)
    dpi_ssl_enabled: Mapped[bool | None] = mapped_column(Boolean)
    dpi_ssl_certificate_status: Mapped[str | None] = mapped_column(String(50))
    dpi_ssl_daily_blocks: Mapped[int | None] = mapped_column(Integer)
    atp_enabled: Mapped[bool | None] = mapped_column(Boolean)
    atp_license_status: Mapped[str | None] = mapped_column(String(50))
    atp_daily_verdicts: Mapped[int | None] = mapped_column(Integer)
    botnet_filter_enabled: Mapped[bool | None] = mapped_column(Boolean)
    botnet_daily_blocks: Mapped[int | None] = mapped_column(Integer)
    app_control_enabled: Mapped[bool | None] = mapped_column(Boolean)
    app_control_license_status: Mapped[str | None] = mapped_column(String(50))
    app_control_daily_blocks: Mapped[int | None] = mapped_column(Integer)
    content_filter_enabled: Mapped[bool | None] = mapped_column(Boolean)
    content_filter_license_status: Mapped[str | None] = mapped_column(String(50))
    content_filter_daily_blocks: Mapped[int | None] = mapped_column(Integer)
    timestamp: Mapped[datetime | None] = mapped_column(_naive(), server_default=_NOW)


class EdrDevice(Base):
    __tablename__ = "edr_devices"
    __table_args__ = (
        UniqueConstraint("tenant_id", "microsoft_device_id"),
        CheckConstraint("risk_score >= 0 AND risk_score <= 100", name="risk_score"),
    )
    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tenants.id"), nullable=False
    )
    microsoft_device_id: Mapped[str] = mapped_column(String(255), nullable=False)
    device_name: Mapped[str] = mapped_column(String(255), nullable=False)
    operating_system: Mapped[str | None] = mapped_column(String(100))
    os_version: Mapped[str | None] = mapped_column(String(100))
    primary_user: Mapped[str | None] = mapped_column(String(255))
    defender_health_status: Mapped[str | None] = mapped_column(String(50))
    risk_score: Mapped[int | None] = mapped_column(Integer)
    exposure_level: Mapped[str | None] = mapped_column(String(50))
    intune_compliance_state: Mapped[str | None] = mapped_column(String(50))
    intune_enrollment_status: Mapped[str | None] = mapped_column(String(50))
    last_seen_at: Mapped[datetime | None] = mapped_column(_tz())
    created_at: Mapped[datetime | None] = mapped_column(_tz(), server_default=_NOW)
    updated_at: Mapped[datetime | None] = mapped_column(_tz(), server_default=_NOW)


class EdrAlert(Base):
    __tablename__ = "edr_alerts"
    __table_args__ = (UniqueConstraint("tenant_id", "microsoft_alert_id"),)
    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    device_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("edr_devices.id")
    )
    microsoft_alert_id: Mapped[str] = mapped_column(String(255), nullable=False)
    severity: Mapped[str] = mapped_column(String(50), nullable=False)
    threat_type: Mapped[str | None] = mapped_column(String(100))
    threat_name: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str | None] = mapped_column(String(50))
    description: Mapped[str | None] = mapped_column(Text)
    detected_at: Mapped[datetime | None] = mapped_column(_tz())
    created_at: Mapped[datetime | None] = mapped_column(_tz(), server_default=_NOW)
    updated_at: Mapped[datetime | None] = mapped_column(_tz(), server_default=_NOW)


class EdrVulnerability(Base):
    __tablename__ = "edr_vulnerabilities"
    __table_args__ = (UniqueConstraint("tenant_id", "cve_id"),)
    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    cve_id: Mapped[str] = mapped_column(String(50), nullable=False)
    severity: Mapped[str] = mapped_column(String(50), nullable=False)
    cvss_score: Mapped[Decimal | None] = mapped_column(Numeric(3, 1))
    exploitability: Mapped[str | None] = mapped_column(String(50))
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime | None] = mapped_column(_tz(), server_default=_NOW)
    updated_at: Mapped[datetime | None] = mapped_column(_tz(), server_default=_NOW)


class EdrDeviceVulnerability(Base):
    __tablename__ = "edr_device_vulnerabilities"
    __table_args__ = (PrimaryKeyConstraint("device_id", "vulnerability_id"),)
    device_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("edr_devices.id"), nullable=False
    )
    vulnerability_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("edr_vulnerabilities.id"), nullable=False
    )
    detected_at: Mapped[datetime | None] = mapped_column(_tz())


class EdrCompliance(Base):
    __tablename__ = "edr_compliance"
    __table_args__ = (UniqueConstraint("tenant_id", "device_id"),)
    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    device_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("edr_devices.id"), nullable=False
    )
    compliance_state: Mapped[str] = mapped_column(String(50), nullable=False)
    failed_rules: Mapped[Any | None] = mapped_column(JSONB)
    security_baseline_status: Mapped[str | None] = mapped_column(String(50))
    required_apps_status: Mapped[Any | None] = mapped_column(JSONB)
    checked_at: Mapped[datetime | None] = mapped_column(_tz())
    created_at: Mapped[datetime | None] = mapped_column(_tz(), server_default=_NOW)
    updated_at: Mapped[datetime | None] = mapped_column(_tz(), server_default=_NOW)


class EdrPostureScore(Base):
    __tablename__ = "edr_posture_scores"
    __table_args__ = (
        CheckConstraint("score >= 0 AND score <= 100", name="score"),
        Index("ix_edr_posture_scores_tenant_calculated", "tenant_id", "calculated_at"),
    )
    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    score: Mapped[int] = mapped_column(Integer, nullable=False)
    device_count: Mapped[int | None] = mapped_column(Integer)
    high_risk_device_count: Mapped[int | None] = mapped_column(Integer)
    active_alert_count: Mapped[int | None] = mapped_column(Integer)
    critical_vulnerability_count: Mapped[int | None] = mapped_column(Integer)
    non_compliant_device_count: Mapped[int | None] = mapped_column(Integer)
    calculated_at: Mapped[datetime | None] = mapped_column(_tz())
    created_at: Mapped[datetime | None] = mapped_column(_tz(), server_default=_NOW)


ROLLUP_METRICS = (
    "threats_blocked",
    "malware_blocked",
    "ips_blocked",
    "blocked_connections",
    "web_filter_hits",
    "bandwidth_total_mb",
    "active_sessions_count",
)


class FirewallMetricsRollup(Base):
    __tablename__ = "firewall_metrics_rollup"
    __table_args__ = (
        UniqueConstraint("device_id", "date"),
        *(CheckConstraint(f"{name} >= 0", name=name) for name in ROLLUP_METRICS),
    )
    id: Mapped[uuid.UUID] = _uuid_pk()
    device_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("firewall_devices.id", ondelete="CASCADE"), nullable=False
    )
    date: Mapped[date] = mapped_column(Date, nullable=False)
    threats_blocked: Mapped[int | None] = mapped_column(Integer, server_default=text("0"))
    malware_blocked: Mapped[int | None] = mapped_column(Integer, server_default=text("0"))
    ips_blocked: Mapped[int | None] = mapped_column(Integer, server_default=text("0"))
    blocked_connections: Mapped[int | None] = mapped_column(Integer, server_default=text("0"))
    web_filter_hits: Mapped[int | None] = mapped_column(Integer, server_default=text("0"))
    bandwidth_total_mb: Mapped[int | None] = mapped_column(BigInteger, server_default=text("0"))
    active_sessions_count: Mapped[int | None] = mapped_column(Integer, server_default=text("0"))
    created_at: Mapped[datetime | None] = mapped_column(_naive(), server_default=_NOW)


class FirewallAlert(Base):
    __tablename__ = "firewall_alerts"
    __table_args__ = (
        CheckConstraint(
            "severity IN ('critical', 'high', 'medium', 'low', 'info')", name="severity"
        ),
        CheckConstraint("source IN ('api', 'email')", name="source"),
        CheckConstraint(
            "acknowledged = true OR (acknowledged_by IS NULL AND acknowledged_at IS NULL)",
            name="acknowledged",
        ),
    )
    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tenants.id"), nullable=False
    )
    device_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("firewall_devices.id")
    )
    alert_type: Mapped[str] = mapped_column(String(100), nullable=False)
    severity: Mapped[str] = mapped_column(String(20), nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False)
    source: Mapped[str] = mapped_column(String(20), nullable=False)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column(
        "metadata", JSONB, server_default=text("'{}'::jsonb")
    )
    acknowledged: Mapped[bool | None] = mapped_column(Boolean, server_default=text("false"))
    acknowledged_by: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id")
    )
    acknowledged_at: Mapped[datetime | None] = mapped_column(_naive())
    created_at: Mapped[datetime | None] = mapped_column(_naive(), server_default=_NOW)


PLATFORM_TABLES: tuple[str, ...] = (
    "users",
    "tenants",
    "firewall_devices",
    "firewall_security_posture",
    "edr_devices",
    "edr_alerts",
    "edr_vulnerabilities",
    "edr_device_vulnerabilities",
    "edr_compliance",
    "edr_posture_scores",
    "firewall_metrics_rollup",
    "firewall_alerts",
)


# --- The workers' own state (schema avian_workers) --------------------------------------------


class EdrSyncState(Base):
    """Per tenant and dataset: the incremental watermark and when it last synced."""

    __tablename__ = "edr_sync_state"
    __table_args__ = (PrimaryKeyConstraint("tenant_id", "dataset"), {"schema": WORKERS_SCHEMA})
    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    dataset: Mapped[str] = mapped_column(String(50), nullable=False)
    watermark: Mapped[datetime | None] = mapped_column(_tz())
    last_success_at: Mapped[datetime | None] = mapped_column(_tz())
    last_attempt_at: Mapped[datetime | None] = mapped_column(_tz())
    last_error: Mapped[str | None] = mapped_column(Text)


class EdrDeviceIdentity(Base):
    """Which stored device a Defender machine or Intune device is, so merged keys stay stable."""

    __tablename__ = "edr_device_identities"
    __table_args__ = (
        PrimaryKeyConstraint("tenant_id", "source", "source_id"),
        CheckConstraint("source IN ('defender', 'intune')", name="source"),
        # A page is resolved by looking its ids and host names up here (edr.merge), never by
        # loading the tenant: one index per way a record can name a device, one for the device.
        Index("ix_edr_device_identities_source_key", "tenant_id", "source", "source_key"),
        Index("ix_edr_device_identities_aad_key", "tenant_id", "aad_key"),
        Index("ix_edr_device_identities_host_label", "tenant_id", "host_label"),
        Index("ix_edr_device_identities_device", "tenant_id", "microsoft_device_id"),
        {"schema": WORKERS_SCHEMA},
    )
    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    source: Mapped[str] = mapped_column(String(20), nullable=False)
    source_id: Mapped[str] = mapped_column(String(255), nullable=False)
    microsoft_device_id: Mapped[str] = mapped_column(String(255), nullable=False)
    aad_device_id: Mapped[str | None] = mapped_column(String(255))
    hostname: Mapped[str | None] = mapped_column(String(255))
    # The compared forms (edr.merge.folded_id / host_label), written with every identity.
    source_key: Mapped[str] = mapped_column(String(255), nullable=False)
    aad_key: Mapped[str | None] = mapped_column(String(255))
    host_label: Mapped[str | None] = mapped_column(String(255))
    # The record's own lastSeen / lastSyncDateTime: of several records of one source for one
    # device (a re-onboarded PC's old machine), the row shows the newest (edr.store).
    last_seen_at: Mapped[datetime | None] = mapped_column(_tz())
    updated_at: Mapped[datetime] = mapped_column(_tz(), nullable=False, server_default=_NOW)


class EdrSecureScore(Base):
    """Microsoft Secure Score per tenant and day, where the tenant's app may read it."""

    __tablename__ = "edr_secure_scores"
    __table_args__ = (PrimaryKeyConstraint("tenant_id", "score_date"), {"schema": WORKERS_SCHEMA})
    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    score_date: Mapped[date] = mapped_column(Date, nullable=False)
    current_score: Mapped[Decimal] = mapped_column(Numeric(10, 2), nullable=False)
    max_score: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
    active_user_count: Mapped[int | None] = mapped_column(Integer)
    licensed_user_count: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(_tz(), nullable=False)
    fetched_at: Mapped[datetime] = mapped_column(_tz(), nullable=False, server_default=_NOW)


MAIL_OUTCOMES = ("alert", "suppressed", "review")


class MailLedgerEntry(Base):
    """Every message the email worker handled, so none is ever turned into a second alert."""

    __tablename__ = "mail_ledger"
    __table_args__ = (
        UniqueConstraint("message_key", "raw_sha256"),
        # Messages committed but not yet filed in the mailbox: what a run must finish filing.
        Index(
            "ix_mail_ledger_unfiled",
            "mailbox",
            "uidvalidity",
            postgresql_where=text("marked_at IS NULL"),
        ),
        # Retention deletes filed rows by the time they were filed (mail.store.prune_ledger).
        Index("ix_mail_ledger_marked_at", "marked_at"),
        CheckConstraint(
            "outcome IN (" + ", ".join(f"'{o}'" for o in MAIL_OUTCOMES) + ")", name="outcome"
        ),
        {"schema": WORKERS_SCHEMA},
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    message_key: Mapped[str] = mapped_column(Text, nullable=False)
    raw_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    mailbox: Mapped[str] = mapped_column(String(512), nullable=False)
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    uid: Mapped[int | None] = mapped_column(BigInteger)
    outcome: Mapped[str] = mapped_column(String(20), nullable=False)
    alert_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    processed_at: Mapped[datetime] = mapped_column(_tz(), nullable=False, server_default=_NOW)
    marked_at: Mapped[datetime | None] = mapped_column(_tz())


class MailReviewItem(Base):
    """Mail kept for an operator: not an alert, unparseable, or no matching device."""

    __tablename__ = "mail_review"
    __table_args__ = (
        Index("ix_mail_review_open", "created_at", postgresql_where=text("resolved_at IS NULL")),
        # Retention: by age, and the cascade from a deleted ledger row finds its review row.
        Index("ix_mail_review_created_at", "created_at"),
        Index("ix_mail_review_ledger_id", "ledger_id"),
        {"schema": WORKERS_SCHEMA},
    )
    id: Mapped[uuid.UUID] = _uuid_pk()
    ledger_id: Mapped[int] = mapped_column(
        BigInteger,
        ForeignKey(f"{WORKERS_SCHEMA}.mail_ledger.id", ondelete="CASCADE"),
        nullable=False,
    )
    reason: Mapped[str] = mapped_column(String(50), nullable=False)
    detail: Mapped[str | None] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text)
    sender: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(Text)
    parsed: Mapped[Any | None] = mapped_column(JSONB)
    raw: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(_tz(), nullable=False, server_default=_NOW)
    resolved_at: Mapped[datetime | None] = mapped_column(_tz())


class FirewallHostAlias(Base):
    """Host names operators assign to firewalls, since `firewall_devices` has no such column."""

    __tablename__ = "firewall_host_aliases"
    __table_args__ = (
        PrimaryKeyConstraint("hostname", "device_id"),
        CheckConstraint("hostname = lower(hostname)", name="hostname_lowercase"),
        {"schema": WORKERS_SCHEMA},
    )
    hostname: Mapped[str] = mapped_column(String(255), nullable=False)
    device_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("firewall_devices.id", ondelete="CASCADE"), nullable=False
    )
    created_at: Mapped[datetime] = mapped_column(_tz(), nullable=False, server_default=_NOW)


class AlertStorm(Base):
    """Open storm-suppression windows: repeats of one alert fold into its first row."""

    __tablename__ = "alert_storms"
    __table_args__ = ({"schema": WORKERS_SCHEMA},)
    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    alert_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("firewall_alerts.id", ondelete="CASCADE"), nullable=False
    )
    first_seen_at: Mapped[datetime] = mapped_column(_tz(), nullable=False)
    last_seen_at: Mapped[datetime] = mapped_column(_tz(), nullable=False)
    occurrences: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))


class WorkerRun(Base):
    """One row per worker run: what it did, for operators and the 'no run lately' alarm."""

    __tablename__ = "worker_runs"
    __table_args__ = (
        Index("ix_worker_runs_type_started", "worker_type", "started_at"),
        {"schema": WORKERS_SCHEMA},
    )
    id: Mapped[uuid.UUID] = _uuid_pk()
    worker_type: Mapped[str] = mapped_column(String(50), nullable=False)
    flow_run_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    started_at: Mapped[datetime] = mapped_column(_tz(), nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(_tz())
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


WORKER_TABLES: tuple[str, ...] = (
    f"{WORKERS_SCHEMA}.edr_sync_state",
    f"{WORKERS_SCHEMA}.edr_device_identities",
    f"{WORKERS_SCHEMA}.edr_secure_scores",
    f"{WORKERS_SCHEMA}.mail_ledger",
    f"{WORKERS_SCHEMA}.mail_review",
    f"{WORKERS_SCHEMA}.firewall_host_aliases",
    f"{WORKERS_SCHEMA}.alert_storms",
    f"{WORKERS_SCHEMA}.worker_runs",
)
