"""Dataset syncs against the Microsoft simulator and PostgreSQL, without Prefect."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import Engine, func, select

from avian_workers.db.models import EdrAlert, EdrCompliance, EdrDeviceVulnerability
from avian_workers.edr.store import ALERTS, TenantStore
from avian_workers.edr.sync import (
    DatasetReport,
    TenantReport,
    alert_window_start,
    flag_shared_azure_tenants,
    microsoft_config,
    posture_unscored_reason,
    sync_alerts,
    sync_compliance_rules,
    sync_defender_devices,
    sync_intune_devices,
    sync_vulnerabilities,
    tenant_outcome,
)
from avian_workers.microsoft import (
    GraphClient,
    HttpPolicy,
    MicrosoftEndpoints,
    TenantClients,
    TenantHttp,
    open_tenant,
)
from avian_workers.settings import Settings
from avian_workers.simulator import SimulatedTenant
from tests.avian_workers.edr.payloads import graph_alert
from tests.avian_workers.edr.tenants import add_tenant_row
from tests.plugins.microsoft_simulator import MicrosoftSimulatorHandle

QUICK = HttpPolicy(backoff_base=0.01, backoff_max=0.05, retry_budget_seconds=30)
BACKFILL = timedelta(days=7)
OVERLAP = timedelta(minutes=10)


@pytest.fixture
def simulated(microsoft_simulator: MicrosoftSimulatorHandle) -> SimulatedTenant:
    return microsoft_simulator.add_tenant(devices=30, alerts=12, cves=10, graph_page_size=5)


@pytest.fixture
def clients(
    microsoft_simulator: MicrosoftSimulatorHandle, simulated: SimulatedTenant
) -> Iterator[TenantClients]:
    with open_tenant(
        microsoft_simulator.credentials(simulated),
        microsoft_simulator.endpoints(),
        QUICK,
        ca_bundle=str(microsoft_simulator.ca_bundle),
    ) as opened:
        yield opened


@pytest.fixture
def store(db: Engine) -> TenantStore:
    return TenantStore(db, add_tenant_row(db))


def alert_count(engine: Engine, tenant_id: uuid.UUID) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(EdrAlert).where(EdrAlert.tenant_id == tenant_id)
            ).scalar_one()
        )


def now() -> datetime:
    return datetime.now(UTC)


def test_settings_map_onto_the_microsoft_client_config() -> None:
    settings = Settings(
        ms_graph_base_url="https://graph.example",
        ms_defender_base_url="https://defender.example",
        ms_authority_host="https://login.example",
        http_max_attempts=3,
        tenant_retry_budget_seconds=42,
        defender_calls_per_minute=50,
    )
    endpoints, policy = microsoft_config(settings)
    assert (endpoints.graph_base_url, endpoints.defender_base_url, endpoints.authority_host) == (
        "https://graph.example",
        "https://defender.example",
        "https://login.example",
    )
    assert (policy.max_attempts, policy.retry_budget_seconds) == (3, 42)
    assert policy.defender_calls_per_minute == 50


def test_the_first_sweep_backfills_the_window_and_later_ones_start_before_the_watermark() -> None:
    moment = datetime(2024, 12, 9, 10, tzinfo=UTC)
    assert alert_window_start(None, now=moment, backfill=BACKFILL, overlap=OVERLAP) == (
        moment - BACKFILL
    )
    assert alert_window_start(moment, now=moment, backfill=BACKFILL, overlap=OVERLAP) == (
        moment - OVERLAP
    )


def test_alerts_older_than_the_backfill_window_are_not_read_on_the_first_run(
    clients: TenantClients, store: TenantStore, simulated: SimulatedTenant, db: Engine
) -> None:
    simulated.add_alert(now() - timedelta(days=8))

    report = sync_alerts(clients.graph, store, now=now(), backfill=BACKFILL, overlap=OVERLAP)

    assert report.rows == alert_count(db, store.tenant_id) == len(simulated.alerts()) - 1


def test_a_rejected_alert_holds_the_watermark_back_so_it_is_read_again(
    clients: TenantClients, store: TenantStore, simulated: SimulatedTenant, db: Engine
) -> None:
    alerts = simulated.alerts()
    broken = alerts[3]
    simulated.update_alert(broken["id"], broken["lastUpdateDateTime"], severity="catastrophic")

    report = sync_alerts(clients.graph, store, now=now(), backfill=BACKFILL, overlap=OVERLAP)

    assert (report.status, report.rejected, report.rows) == ("ok", 1, len(alerts) - 1)
    assert report.is_warning
    state = store.sync_state(ALERTS)
    assert state is not None
    assert state.watermark is not None
    assert state.watermark.isoformat().startswith(broken["lastUpdateDateTime"][:19])

    simulated.update_alert(broken["id"], broken["lastUpdateDateTime"], severity="high")
    sync_alerts(clients.graph, store, now=now(), backfill=BACKFILL, overlap=OVERLAP)
    assert alert_count(db, store.tenant_id) == len(alerts)


class OneToken:
    def token(self, scope: str, force_refresh: bool = False) -> str:
        return "token"


@contextmanager
def graph_answering(*alerts: dict[str, object]) -> Iterator[GraphClient]:
    """A Graph client whose every request gets one whole page of `alerts`."""
    answer = httpx.Response(200, json={"value": list(alerts)})
    with TenantHttp(
        OneToken(),
        MicrosoftEndpoints(graph_base_url="https://graph.test"),
        QUICK,
        transport=httpx.MockTransport(lambda request: answer),
    ) as http:
        yield GraphClient(http)


def test_an_alert_dated_in_the_future_never_carries_the_watermark_past_now(
    store: TenantStore,
) -> None:
    moment = datetime(2024, 12, 9, 10, tzinfo=UTC)
    with graph_answering(graph_alert(lastUpdateDateTime="2099-01-01T00:00:00Z")) as graph:
        report = sync_alerts(graph, store, now=moment, backfill=BACKFILL, overlap=OVERLAP)

    state = store.sync_state(ALERTS)
    assert report.rows == 1
    assert state is not None
    assert state.watermark == moment


def test_an_alert_whose_update_time_overflows_is_rejected_and_the_rest_stored(
    store: TenantStore,
) -> None:
    moment = datetime(2024, 12, 9, 10, tzinfo=UTC)
    unreadable = graph_alert(id="overflowing", lastUpdateDateTime="9999-12-31T23:59:59-01:00")
    with graph_answering(graph_alert(), unreadable) as graph:
        report = sync_alerts(graph, store, now=moment, backfill=BACKFILL, overlap=OVERLAP)

    assert (report.rows, report.rejected) == (1, 1)


def test_unreadable_compliance_policies_leave_failed_rules_unknown(
    microsoft_simulator: MicrosoftSimulatorHandle,
    clients: TenantClients,
    store: TenantStore,
    simulated: SimulatedTenant,
    db: Engine,
) -> None:
    microsoft_simulator.simulator.set_faults(
        simulated.spec.tenant_id, forbidden=frozenset({"compliancePolicies"})
    )
    sync_defender_devices(clients.defender, store, page_size=7)

    rules = sync_compliance_rules(clients.graph)
    devices, compliance = sync_intune_devices(
        clients.graph, store, rules.by_device, checked_at=now()
    )

    assert (rules.report.status, rules.by_device) == ("forbidden", None)
    assert devices.status == "ok"
    assert compliance.status == "partial"
    with db.connect() as conn:
        unknown = conn.execute(
            select(func.count())
            .select_from(EdrCompliance)
            .where(EdrCompliance.failed_rules.is_(None))
        ).scalar_one()
    assert unknown == compliance.rows == len(simulated.managed_devices())


def test_failing_policy_statuses_become_the_devices_failed_rules(
    clients: TenantClients, store: TenantStore, simulated: SimulatedTenant, db: Engine
) -> None:
    sync_defender_devices(clients.defender, store, page_size=7)
    rules = sync_compliance_rules(clients.graph)
    sync_intune_devices(clients.graph, store, rules.by_device, checked_at=now())

    expected = {
        d["deviceName"]
        for d in simulated.managed_devices()
        if d["complianceState"] in {"noncompliant", "inGracePeriod", "error"}
    }
    with db.connect() as conn:
        failing = conn.execute(
            select(EdrCompliance.compliance_state, EdrCompliance.failed_rules).where(
                func.jsonb_array_length(EdrCompliance.failed_rules) > 0
            )
        ).all()
    assert len(failing) == len(expected)
    for state, failed_rules in failing:
        assert state in {"noncompliant", "inGracePeriod", "error"}
        assert {rule["status"] for rule in failed_rules} <= {"nonCompliant", "error"}


def test_patched_vulnerabilities_lose_their_device_links_on_the_next_sweep(
    microsoft_simulator: MicrosoftSimulatorHandle,
    clients: TenantClients,
    store: TenantStore,
    db: Engine,
) -> None:
    sync_defender_devices(clients.defender, store, page_size=7)
    first = sync_vulnerabilities(clients.defender, store, now=now(), page_size=7)
    assert first.rows > 0

    # The same machines later report no vulnerable software at all.
    other = microsoft_simulator.add_tenant(devices=30, cves=10, cves_per_device=0)
    with open_tenant(
        microsoft_simulator.credentials(other),
        microsoft_simulator.endpoints(),
        QUICK,
        ca_bundle=str(microsoft_simulator.ca_bundle),
    ) as patched:
        report = sync_vulnerabilities(patched.defender, store, now=now(), page_size=7)

    assert report.detail == f"{first.rows} links no longer listed were removed"
    with db.connect() as conn:
        assert (
            conn.execute(select(func.count()).select_from(EdrDeviceVulnerability)).scalar_one() == 0
        )


def test_a_tenant_fails_on_any_failed_dataset_and_warns_on_forbidden_or_rejected_ones() -> None:
    ok = DatasetReport("alerts", "ok", rows=3)
    assert tenant_outcome([ok], None) == "succeeded"
    assert tenant_outcome([ok, DatasetReport("secure score", "forbidden")], None) == "warning"
    assert tenant_outcome([DatasetReport("alerts", "ok", rows=3, rejected=1)], None) == "warning"
    assert tenant_outcome([ok, DatasetReport("vulnerabilities", "failed")], None) == "failed"
    assert tenant_outcome([], "AADSTS7000215") == "failed"


def test_posture_is_scored_only_when_every_input_was_read_now_or_within_its_cadence() -> None:
    read = [
        DatasetReport("defender devices", "ok", rows=5),
        DatasetReport("intune devices", "ok", rows=4),
        DatasetReport("compliance", "ok", rows=4),
        DatasetReport("alerts", "partial", rows=2),
        DatasetReport("vulnerabilities", "cached"),
        DatasetReport("secure score", "forbidden"),  # not an input of the score
    ]
    assert posture_unscored_reason(read) is None
    unread = [
        DatasetReport("defender devices", "forbidden"),
        DatasetReport("intune devices", "failed"),
        DatasetReport("alerts", "ok"),
        DatasetReport("vulnerabilities", "ok"),
    ]
    assert posture_unscored_reason(unread) == (
        "inputs not read: defender devices forbidden, intune devices failed, compliance not run"
    )


def test_a_tenants_table_row_has_rows_per_dataset_outcome_duration_and_error() -> None:
    report = TenantReport(
        "id",
        "Contoso",
        "warning",
        (
            DatasetReport("alerts", "ok", rows=12),
            DatasetReport("secure score", "forbidden", detail="403 on /secureScores"),
            DatasetReport("vulnerabilities", "cached"),
        ),
        duration_seconds=3.14159,
    )
    row = report.table_row()
    assert row["tenant"] == "Contoso"
    assert row["outcome"] == "warning"
    assert row["alerts"] == 12
    assert row["secure score"] == "0 (forbidden)"
    assert row["vulnerabilities"] == "0 (cached)"
    assert row["defender devices"] == "not run"
    assert row["duration (s)"] == 3.1
    assert row["error"] == "secure score: 403 on /secureScores"


def polled(
    tenant_id: str, name: str, azure: str | None, outcome: str = "succeeded"
) -> TenantReport:
    return TenantReport(tenant_id, name, outcome, azure_tenant_id=azure)  # type: ignore[arg-type]


def test_tenants_whose_secrets_name_one_azure_tenant_are_flagged_and_warned() -> None:
    azure = "0b5a5c2e-0000-4000-8000-00000000c0de"
    reports = [
        polled("a", "Contoso", azure),
        polled("b", "Fabrikam", azure.upper(), outcome="failed"),
        polled("c", "Northwind", "another-azure-tenant"),
        polled("d", "Locked", None, outcome="locked"),
    ]

    contoso, fabrikam, northwind, locked = flag_shared_azure_tenants(reports)

    assert (contoso.outcome, contoso.shares_azure_tenant_with) == ("warning", ("Fabrikam",))
    assert (fabrikam.outcome, fabrikam.shares_azure_tenant_with) == ("failed", ("Contoso",))
    assert northwind == reports[2]
    assert locked == reports[3]
    assert contoso.table_row()["error"] == (
        f"Azure AD tenant {azure} is also polled for Fabrikam: each is shown the others' data"
    )


def test_two_tenants_of_the_same_name_still_flag_each_other() -> None:
    reports = [polled("a", "Contoso", "azure-1"), polled("b", "Contoso", "azure-1")]

    flagged = flag_shared_azure_tenants(reports)

    assert [r.shares_azure_tenant_with for r in flagged] == [("Contoso",), ("Contoso",)]
