"""What the demo shows at the end: the runs, then per tenant, per email and per device-day.

The rows are read back from PostgreSQL (`collect_*`), so they show what the platform would
show, on a second run as on the first; `render_summary` turns them into rich tables without any
I/O of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Final
from uuid import UUID

from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from sqlalchemy import Engine, Integer, cast, func, select
from sqlalchemy.dialects.postgresql import distinct_on

from avian_workers.db.models import (
    EdrAlert,
    EdrCompliance,
    EdrDevice,
    EdrPostureScore,
    EdrVulnerability,
    FirewallAlert,
    FirewallMetricsRollup,
    MailLedgerEntry,
    MailReviewItem,
)
from avian_workers.demo.seed import DayKind, DemoEmail, DemoFirewall, DemoTenant, poller_day
from avian_workers.mail.triage import identify

UNKNOWN: Final = "—"


@dataclass(frozen=True)
class ServiceRow:
    """One service the workers used during the demo."""

    service: str
    provided_by: str
    address: str


@dataclass(frozen=True)
class RunRow:
    """One flow run."""

    worker: str
    flow_run: str
    state: str
    seconds: float
    result: str


@dataclass(frozen=True)
class TenantRow:
    """One tenant: its latest poll and what the EDR tables now hold for it."""

    tenant: str
    firewalls: str
    outcome: str
    devices: int
    alerts: int
    vulnerabilities: int
    non_compliant: int
    posture_score: int | None
    note: str


@dataclass(frozen=True)
class EmailRow:
    """One sample email and what became of it."""

    file_name: str
    subject: str
    outcome: str
    result: str
    firewall: str


@dataclass(frozen=True)
class DeviceDayRow:
    """One firewall's rollup of one day, or why it has none."""

    day: date
    firewall: str
    metrics: Mapping[str, int | None] | None
    note: str


@dataclass(frozen=True)
class DemoSummary:
    services: Sequence[ServiceRow]
    runs: Sequence[RunRow]
    tenants: Sequence[TenantRow]
    emails: Sequence[EmailRow]
    device_days: Sequence[DeviceDayRow]
    next_steps: Sequence[str]


# --- Reading back what the workers wrote -------------------------------------------------------


def collect_tenants(
    engine: Engine,
    tenants: Sequence[DemoTenant],
    firewalls: Sequence[DemoFirewall],
    outcomes: Mapping[UUID, tuple[str, str]],
) -> list[TenantRow]:
    """One row per tenant; `outcomes` maps tenant id to (outcome, note) of this run's poll."""
    ids = [t.id for t in tenants]
    with engine.connect() as conn:
        devices = _count_by_tenant(conn, EdrDevice.tenant_id, ids)
        alerts = _count_by_tenant(conn, EdrAlert.tenant_id, ids)
        vulnerabilities = _count_by_tenant(conn, EdrVulnerability.tenant_id, ids)
        non_compliant = _count_by_tenant(
            conn, EdrCompliance.tenant_id, ids, EdrCompliance.compliance_state != "compliant"
        )
        latest = (
            select(EdrPostureScore.tenant_id, EdrPostureScore.score)
            .where(EdrPostureScore.tenant_id.in_(ids))
            .ext(distinct_on(EdrPostureScore.tenant_id))
            .order_by(EdrPostureScore.tenant_id, EdrPostureScore.calculated_at.desc())
        )
        scores = {row.tenant_id: row.score for row in conn.execute(latest)}
    return [
        TenantRow(
            tenant=t.name,
            firewalls=", ".join(f.hostname for f in firewalls if f.tenant == t) or UNKNOWN,
            outcome=outcomes.get(t.id, ("not polled", ""))[0],
            devices=devices.get(t.id, 0),
            alerts=alerts.get(t.id, 0),
            vulnerabilities=vulnerabilities.get(t.id, 0),
            non_compliant=non_compliant.get(t.id, 0),
            posture_score=scores.get(t.id),
            note=outcomes.get(t.id, ("", ""))[1],
        )
        for t in tenants
    ]


def _count_by_tenant(conn: Any, column: Any, ids: Sequence[UUID], *where: Any) -> dict[UUID, int]:
    query = select(column, func.count()).where(column.in_(ids), *where).group_by(column)
    return {row[0]: row[1] for row in conn.execute(query)}


def collect_emails(
    engine: Engine, emails: Sequence[DemoEmail], firewalls: Sequence[DemoFirewall]
) -> list[EmailRow]:
    """One row per sample email, from the mail ledger, the alerts it made and its review record."""
    identities = [identify(email.raw, uidvalidity=0, uid=0) for email in emails]
    keys = [identity.message_id for identity in identities if identity.message_id]
    names = {f.id: f.hostname for f in firewalls}
    ledger = MailLedgerEntry.__table__.c
    with engine.connect() as conn:
        entries = {
            row.message_key: row
            for row in conn.execute(
                select(ledger.message_key, ledger.id, ledger.outcome, ledger.detail)
                .where(ledger.message_key.in_(keys))
                .order_by(ledger.id)
            )
        }
        ledger_ids = [row.id for row in entries.values()]
        alerts: dict[int, list[Any]] = {}
        ledger_of_alert = cast(FirewallAlert.metadata_["ledger_id"].astext, Integer)
        for row in conn.execute(
            select(
                ledger_of_alert.label("ledger_id"),
                FirewallAlert.alert_type,
                FirewallAlert.severity,
                FirewallAlert.device_id,
            )
            .where(FirewallAlert.source == "email", ledger_of_alert.in_(ledger_ids))
            .order_by(FirewallAlert.created_at, FirewallAlert.alert_type)
        ):
            alerts.setdefault(row.ledger_id, []).append(row)
        reviews = {
            row.ledger_id: row
            for row in conn.execute(
                select(
                    MailReviewItem.ledger_id, MailReviewItem.reason, MailReviewItem.detail
                ).where(MailReviewItem.ledger_id.in_(ledger_ids))
            )
        }
    rows = []
    for email, identity in zip(emails, identities, strict=True):
        entry = entries.get(identity.message_id or "")
        if entry is None:
            rows.append(EmailRow(email.file_name, identity.subject or "", "not processed", "", ""))
            continue
        made = alerts.get(entry.id, [])
        review = reviews.get(entry.id)
        results = [f"{a.alert_type} ({a.severity})" for a in made]
        if entry.outcome == "suppressed":
            added = (entry.detail or {}).get("occurrences_added", 0)
            results.append(f"repeat of an open alert (+{added} occurrence)")
        if review is not None:
            results.append(f"review: {review.reason}")
        devices = sorted({names.get(a.device_id, str(a.device_id)) for a in made})
        rows.append(
            EmailRow(
                email.file_name,
                identity.subject or "",
                entry.outcome,
                "\n".join(results),
                "\n".join(devices) or UNKNOWN,
            )
        )
    return rows


METRIC_COLUMNS: Final = (
    "threats_blocked",
    "malware_blocked",
    "ips_blocked",
    "blocked_connections",
    "web_filter_hits",
    "bandwidth_total_mb",
    "active_sessions_count",
)

DAY_NOTES: Final[Mapping[DayKind, str]] = {
    DayKind.NORMAL: "",
    DayKind.REBOOT: "reboot at 13:00: pre-reset counts kept",
    DayKind.NO_SNAPSHOT: "no day-end snapshot: blocked/MB/sessions unknown",
    DayKind.OFFLINE: "poller saw nothing: no row (not zeros)",
}


def collect_device_days(
    engine: Engine, firewalls: Sequence[DemoFirewall], days: Sequence[date]
) -> list[DeviceDayRow]:
    """One row per firewall and day, oldest day first, from `firewall_metrics_rollup`."""
    rollup = FirewallMetricsRollup
    with engine.connect() as conn:
        stored = {
            (row.device_id, row.date): row
            for row in conn.execute(
                select(rollup).where(
                    rollup.device_id.in_([f.id for f in firewalls]), rollup.date.in_(list(days))
                )
            )
        }
    rows = []
    for day in days:
        for firewall in firewalls:
            row = stored.get((firewall.id, day))
            metrics = None if row is None else {name: getattr(row, name) for name in METRIC_COLUMNS}
            rows.append(
                DeviceDayRow(
                    day=day,
                    firewall=firewall.hostname,
                    metrics=metrics,
                    note=DAY_NOTES[poller_day(firewall, day).kind],
                )
            )
    return rows


# --- Rendering --------------------------------------------------------------------------------------


_OUTCOME_STYLES: Final = {
    "succeeded": "green",
    "Completed": "green",
    "alert": "green",
    "warning": "yellow",
    "suppressed": "cyan",
    "review": "yellow",
    "failed": "red",
    "Failed": "red",
    "Crashed": "red",
    "not processed": "red",
    "not polled": "red",
}


@dataclass(frozen=True)
class _Column:
    header: str
    numeric: bool = False
    max_width: int | None = None  # longer values end in an ellipsis
    wrap: bool = True


def _styled(value: str) -> Text:
    return Text(value, style=_OUTCOME_STYLES.get(value, ""))


def _number(value: int | None) -> str:
    return UNKNOWN if value is None else f"{value:,}"


def _table(title: str, *columns: _Column | str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAVY)
    for column in columns:
        spec = column if isinstance(column, _Column) else _Column(column)
        table.add_column(
            spec.header,
            justify="right" if spec.numeric else "left",
            max_width=spec.max_width,
            no_wrap=not spec.wrap or spec.max_width is not None,
            overflow="ellipsis" if spec.max_width is not None else "fold",
        )
    return table


def services_table(rows: Sequence[ServiceRow]) -> Table:
    table = _table("Services", "service", "provided by", "address")
    for row in rows:
        table.add_row(row.service, row.provided_by, row.address)
    return table


def runs_table(rows: Sequence[RunRow]) -> Table:
    table = _table("Flow runs", "worker", "flow run", "state", _Column("seconds", True), "result")
    for row in rows:
        table.add_row(
            row.worker, row.flow_run, _styled(row.state), f"{row.seconds:.1f}", row.result
        )
    return table


def tenants_table(rows: Sequence[TenantRow]) -> Table:
    table = _table(
        "edr-polling: per tenant",
        _Column("tenant", wrap=False),
        _Column("firewall", wrap=False),
        "last poll",
        _Column("devices", True),
        _Column("alerts", True),
        _Column("CVEs", True),
        _Column("non-compliant", True),
        _Column("posture", True),
        "note",
    )
    for row in rows:
        table.add_row(
            row.tenant,
            row.firewalls,
            _styled(row.outcome),
            _number(row.devices),
            _number(row.alerts),
            _number(row.vulnerabilities),
            _number(row.non_compliant),
            _number(row.posture_score),
            row.note,
        )
    return table


def emails_table(rows: Sequence[EmailRow]) -> Table:
    table = _table(
        "email-alerts: per email",
        _Column("email", max_width=30),
        _Column("subject", max_width=38),
        "outcome",
        _Column("result", wrap=False),
        "firewall",
    )
    for row in rows:
        table.add_row(row.file_name, row.subject, _styled(row.outcome), row.result, row.firewall)
    return table


def device_days_table(rows: Sequence[DeviceDayRow]) -> Table:
    headers = ("threats", "malware", "IPS", "blocked", "web", "MB", "sessions")
    table = _table(
        "metrics-aggregation: per device-day (blocked: connections; web: content-filter hits)",
        "date",
        _Column("firewall", wrap=False),
        *(_Column(header, True) for header in headers),
        "note",
    )
    for row in rows:
        values = (
            [_number(row.metrics[name]) for name in METRIC_COLUMNS]
            if row.metrics is not None
            else ["no row", *[""] * (len(METRIC_COLUMNS) - 1)]
        )
        table.add_row(row.day.isoformat(), row.firewall, *values, row.note)
    return table


def email_outcome_counts(rows: Sequence[EmailRow]) -> str:
    """ "alert 20 · suppressed 1 · review 6" (in that order, zeros left out)."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.outcome] = counts.get(row.outcome, 0) + 1
    order = ["alert", "suppressed", "review", "not processed"]
    return " · ".join(f"{name} {counts[name]}" for name in order if counts.get(name))


def render_summary(summary: DemoSummary) -> RenderableType:
    """Every table of the summary, then how to see the runs."""
    next_steps = Panel(
        "\n".join(summary.next_steps), title="See the runs in Prefect", title_align="left"
    )
    return Group(
        services_table(summary.services),
        runs_table(summary.runs),
        tenants_table(summary.tenants),
        emails_table(summary.emails),
        Text(f"Emails by outcome: {email_outcome_counts(summary.emails)}\n"),
        device_days_table(summary.device_days),
        next_steps,
    )


def print_summary(console: Console, summary: DemoSummary) -> None:
    console.print(render_summary(summary))
